"""Atomic writers for every artifact lesionflow produces.

A half-written file must never pass for a finished artifact: everything is written to a
temporary name in the destination folder and renamed into place; a full disk leaves neither.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lesionflow.pipeline.errors import is_full_disk

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    If the block fails, the temporary file is removed; a write that found the disk full
    (errors.is_full_disk) is raised again as the same OSError naming ``path``, not the temporary
    file or no file at all, so that the stage's one-line report names the artifact.
    """
    final = Path(path)
    with _naming_full_disk(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            # mkstemp makes owner-only files; artifacts get the usual umask-derived mode instead.
            os.chmod(tmp, 0o666 & ~_UMASK)
            yield tmp
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _naming_full_disk(final: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        # An error naming another file (an inner writer's artifact) already says where it was.
        if not is_full_disk(err) or not (err.filename is None or _is_temporary_of(err.filename, final)):
            raise
        # Still an OSError (not a LesionflowError): callers that tolerate a failed write (a cache)
        # catch OSError, and must go on tolerating a full disk.
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(final)) from err


def _is_temporary_of(name: str | os.PathLike, final: Path) -> bool:
    # atomic_path's temporary names: .<final name>.<random>.tmp beside it.
    path = Path(name)
    return path.parent == final.parent and path.name.startswith(f".{final.name}.") and path.suffix == ".tmp"


def _json_safe(value: Any) -> Any:
    # JSON has no NaN; undefined metrics are written as null so every reader sees "missing".
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON; NaN and infinities become null."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON artifact written by :func:`write_json`."""
    return json.loads(Path(path).read_text())


def write_csv(frame, path: str | os.PathLike) -> None:
    """Write a pandas DataFrame as CSV without its index; NaN stays an empty cell."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Save named arrays as a compressed .npz (one entry per image id) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **dict(arrays))


@contextlib.contextmanager
def array_writer(path: str | os.PathLike) -> Iterator[Callable[[str, np.ndarray], None]]:
    """Yield ``add(name, array)`` that writes one array at a time into a compressed .npz.

    The same format as :func:`save_arrays`, but arrays are written as they are made, so a
    subset of large images never has to be held at once. The file appears only when the block
    ends without error.
    """
    # zlib level 1: float16 probability maps come out the same size as at the default level 6,
    # in 30-55% less time (the inference stage writes two such files).
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
    ):

        def add(name: str, array: np.ndarray) -> None:
            with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)

        yield add


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an .npz written by :func:`save_arrays`."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@contextlib.contextmanager
def open_arrays(path: str | os.PathLike) -> Iterator[Mapping[str, np.ndarray]]:
    """Yield the arrays of an .npz (:func:`save_arrays`, :func:`array_writer`) as a lazy mapping.

    The names come from the archive's directory; an array is read and decompressed only when it is
    looked up (again at each lookup, nothing is cached), so a caller that keeps one array at a time
    holds one image, whatever the number in the file. The file is closed when the block ends.
    """
    # numpy's NpzFile is already such a mapping; the context manager fixes when it closes.
    with np.load(path, allow_pickle=False) as data:
        yield data
