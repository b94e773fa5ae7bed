"""Errors a user can fix, and the one-line report that stage entry points print for them.

Never used for programming errors: those keep their traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class LesionflowError(Exception):
    """Bad input (a file, a config key, a manifest row) described in one line."""


def one_line(err: BaseException) -> str:
    """An exception's message on one line, or its type's name when it has none.

    For wrapping another library's error in a LesionflowError: nibabel's and PIL's messages can
    span lines, and a report line must not.
    """
    return " ".join(str(err).split()) or type(err).__name__


def exit_on_user_error(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a stage's ``main`` so a LesionflowError becomes one line on stderr (one per problem when
    it lists several) and exit code 2."""

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

    return wrapped
