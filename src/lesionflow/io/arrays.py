"""NumPy ``.npy`` arrays: the preprocess stage's images, read and written as they are.

Never rescales or casts beyond float32 on reading: the stage that wrote the array decided its
values (a normalised image may lie outside [0, 1]).
"""

from __future__ import annotations

import os

import numpy as np

from lesionflow.io.geometry import Geometry, Loaded, pixel_geometry
from lesionflow.io.masks import DEFAULT_MASK_THRESHOLD, lesion_mask
from lesionflow.pipeline.artifacts import atomic_path
from lesionflow.pipeline.errors import LesionflowError, one_line


def _load(path: str | os.PathLike, what: str, mmap_mode: str | None = None) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode=mmap_mode)
    except (OSError, ValueError) as err:
        raise LesionflowError(f"cannot read {what} {path}: {one_line(err)}") from None


def _checked_image(array: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    if array.ndim < 3:
        raise LesionflowError(f"image {path}: expected a finite (C, *spatial) array, got {array.shape}")
    return array


def array_geometry(path: str | os.PathLike) -> Geometry:
    """The geometry of a ``(C, *spatial)`` image array from its header, without reading its values."""
    return pixel_geometry(_checked_image(_load(path, "image", mmap_mode="r"), path).shape[1:])


def read_array(path: str | os.PathLike) -> Loaded:
    """A ``(C, *spatial)`` image array as float32, values as stored (normalised images may be < 0)."""
    array = _checked_image(_load(path, "image"), path)
    if not np.isfinite(array).all():
        raise LesionflowError(f"image {path}: expected a finite (C, *spatial) array, got {array.shape}")
    return Loaded(np.ascontiguousarray(array, dtype=np.float32), pixel_geometry(array.shape[1:]))


def read_array_mask(
    path: str | os.PathLike, channel: int | None = None, threshold: int = DEFAULT_MASK_THRESHOLD
) -> Loaded:
    """A ``(*spatial)`` mask array as bool: bool as stored, 0/1 labels, else values above ``threshold``.

    ``channel`` is accepted for a uniform reader signature and ignored, as for a greyscale picture.
    """
    mask = lesion_mask(read_array_values(path), threshold)
    return Loaded(mask, pixel_geometry(mask.shape))


def read_array_values(path: str | os.PathLike, what: str = "mask") -> np.ndarray:
    """A ``(*spatial)`` mask array's values as stored."""
    return _load(path, what)


def write_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy``, in its own dtype, atomically."""
    with atomic_path(path) as tmp:
        # np.save given a name without .npy would append the suffix; a handle keeps the name.
        with open(tmp, "wb") as handle:
            np.save(handle, array)
