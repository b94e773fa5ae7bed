"""Errors a user can fix, and the one-line report that stage entry points print for them.

Never used for programming errors: those keep their traceback (so does any OSError but a full disk).
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# A write that failed for want of room: the device is full, the user's quota spent, or the file over
# the size the process may write (RLIMIT_FSIZE). The user frees space and reruns; no traceback helps.
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class LesionflowError(Exception):
    """Bad input (a file, a config key, a manifest row) described in one line."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line, or its type's name when it has none.

    For wrapping another library's error in a LesionflowError: nibabel's and PIL's messages can
    span lines, and a report line must not.
    """
    return " ".join(str(err).split()) or type(err).__name__


def is_full_disk(err: BaseException) -> bool:
    """Whether ``err`` is an OSError of a write that found no room (FULL_DISK_ERRNOS)."""
    return isinstance(err, OSError) and err.errno in FULL_DISK_ERRNOS


def full_disk_line(err: OSError) -> str:
    """``no space left on device while writing <file>``: a full-disk error in one line, naming the
    file being written when the error names one (lesionflow's atomic writers name the artifact)."""
    reason = os.strerror(err.errno).lower()
    return f"{reason} while writing {err.filename}" if err.filename else reason


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a stage's ``main`` so a LesionflowError becomes one line on stderr (one per problem when
    it lists several) and exit code 2; so does a write that found the disk full (is_full_disk)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except LesionflowError as err:
            # An error listing many problems (a manifest's rows, a prediction folder's files) has
            # `lines`: a count line, then one line per problem, all reported at once.
            lines = getattr(err, "lines", None) or [" ".join(str(err).split())]
            print(f"lesionflow: error: {lines[0]}", file=sys.stderr)
            for line in lines[1:]:
                print(f"  {line}", file=sys.stderr)
            raise SystemExit(2) from None
        except OSError as err:
            if not is_full_disk(err):
                raise
            print(f"lesionflow: error: {full_disk_line(err)}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapped
