"""Read and write image files by suffix: PIL pictures, ``.npy`` arrays and NIfTI volumes.

Never opens a file whose suffix it does not know: that is a LesionflowError naming the file and
the suffixes that are supported.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from lesionflow.io.arrays import array_geometry, read_array, read_array_mask, write_array
from lesionflow.io.geometry import Geometry, Loaded, pixel_geometry
from lesionflow.io.masks import DEFAULT_MASK_THRESHOLD
from lesionflow.io.nifti import (
    NIFTI_SUFFIXES,
    nifti_geometry,
    nifti_reading,
    read_nifti,
    read_nifti_mask,
    write_nifti,
    write_nifti_like,
)
from lesionflow.io.pictures import (
    PICTURE_SUFFIXES,
    picture_geometry,
    picture_reading,
    read_picture,
    read_picture_mask,
    write_png_mask,
    write_png_probability,
)
from lesionflow.pipeline.errors import LesionflowError

Chosen = TypeVar("Chosen")

IMAGE_READERS: dict[str, Callable[[str | os.PathLike], Loaded]] = {
    **dict.fromkeys(PICTURE_SUFFIXES, read_picture),
    ".npy": read_array,
    **dict.fromkeys(NIFTI_SUFFIXES, read_nifti),
}
MASK_READERS: dict[str, Callable[..., Loaded]] = {
    **dict.fromkeys(PICTURE_SUFFIXES, read_picture_mask),
    ".npy": read_array_mask,
    **dict.fromkeys(NIFTI_SUFFIXES, read_nifti_mask),
}
GEOMETRY_READERS: dict[str, Callable[[str | os.PathLike], Geometry]] = {
    **dict.fromkeys(PICTURE_SUFFIXES, picture_geometry),
    ".npy": array_geometry,
    **dict.fromkeys(NIFTI_SUFFIXES, nifti_geometry),
}
# How each kind of image is read, in words (see image_reading); arrays are the stages' own.
READINGS: dict[str, Callable[[str | os.PathLike], str]] = {
    **dict.fromkeys(PICTURE_SUFFIXES, picture_reading),
    ".npy": lambda path: "NumPy array: as stored",
    **dict.fromkeys(NIFTI_SUFFIXES, nifti_reading),
}
SUPPORTED_SUFFIXES = tuple(IMAGE_READERS)


def _write_npy(path: str | os.PathLike, array: np.ndarray, geometry: Geometry) -> None:
    del geometry  # a .npy file keeps no geometry; the stage's tables record it
    write_array(path, array)


def _write_png(path: str | os.PathLike, mask: np.ndarray, geometry: Geometry) -> None:
    del geometry  # a picture's geometry is its size
    write_png_mask(path, mask)


IMAGE_WRITERS: dict[str, Callable[[str | os.PathLike, np.ndarray, Geometry], None]] = {
    ".npy": _write_npy,
    **dict.fromkeys(NIFTI_SUFFIXES, write_nifti),
}
# Masks are written losslessly: PNG, never JPEG.
MASK_WRITERS: dict[str, Callable[[str | os.PathLike, np.ndarray, Geometry], None]] = {
    ".png": _write_png,
    ".npy": _write_npy,
    **dict.fromkeys(NIFTI_SUFFIXES, write_nifti),
}


def file_suffix(path: str | os.PathLike) -> str:
    """The lower-case suffix that decides the format: ``.nii.gz`` counts as one suffix."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _chosen(table: dict[str, Chosen], path: str | os.PathLike, what: str) -> Chosen:
    suffix = file_suffix(path)
    if suffix not in table:
        raise LesionflowError(
            f"{what} {path}: unsupported file suffix {suffix or '(none)'!r}; "
            f"supported: {', '.join(table)}"
        )
    return table[suffix]


def read_image(path: str | os.PathLike) -> Loaded:
    """The image at ``path`` as float32 ``(C, *spatial)`` and its geometry.

    Pictures are scaled to [0, 1] (see ``pictures.read_picture``); ``.npy`` arrays and NIfTI
    intensities are returned as stored.
    """
    return _chosen(IMAGE_READERS, path, "image")(path)


def read_mask(
    path: str | os.PathLike, channel: int | None = None, threshold: int = DEFAULT_MASK_THRESHOLD
) -> Loaded:
    """The mask at ``path`` as bool ``(*spatial)`` and its geometry.

    ``channel`` picks the lesion channel of a colour mask; values above ``threshold`` (on the
    8-bit scale) are lesion unless the mask is a 0/1 label mask (see ``masks.lesion_mask``).
    """
    return _chosen(MASK_READERS, path, "mask")(path, channel, threshold)


def image_reading(path: str | os.PathLike) -> str:
    """How :func:`read_image` reads the image at ``path``, in words, from its header alone.

    For the data report: ``8-bit RGBA: RGB / 255, alpha dropped``, ``16-bit grey: / 65535``,
    ``NIfTI int16: as stored``.
    """
    return _chosen(READINGS, path, "image")(path)


def read_geometry(path: str | os.PathLike) -> Geometry:
    """The geometry of the image at ``path`` from its header, without reading its pixels."""
    return _chosen(GEOMETRY_READERS, path, "image")(path)


def write_image(path: str | os.PathLike, array: np.ndarray, geometry: Geometry | None = None) -> None:
    """Write a ``(C, *spatial)`` image as ``.npy`` (in its own dtype) or NIfTI (``geometry``'s affine).

    ``geometry`` defaults to unit spacing and no affine; a ``.npy`` file keeps none.
    """
    writer = _chosen(IMAGE_WRITERS, path, "image")
    writer(path, array, geometry or pixel_geometry(array.shape[1:]))


def write_mask(path: str | os.PathLike, mask: np.ndarray, geometry: Geometry | None = None) -> None:
    """Write a bool ``(*spatial)`` mask as a 0/255 PNG, a ``.npy`` or NIfTI (uint8, ``geometry``'s affine)."""
    writer = _chosen(MASK_WRITERS, path, "mask")
    writer(path, mask, geometry or pixel_geometry(mask.shape))


def _write_npy_map(path: str | os.PathLike, array: np.ndarray, source: str | os.PathLike) -> None:
    del source  # an array's geometry is its shape
    write_array(path, np.asarray(array, dtype=np.float32))


# How a prediction is written beside its source, by the source's suffix: the suffix of the file
# written, and a writer for masks and one for probability maps. Volumes keep the source's affine,
# orientation and header; pictures and arrays are their size.
_LIKE_SOURCE: dict[str, tuple[str, Callable[..., None], Callable[..., None]]] = {
    **dict.fromkeys(
        PICTURE_SUFFIXES,
        (".png", lambda p, m, s: write_png_mask(p, m), lambda p, a, s: write_png_probability(p, a)),
    ),
    ".npy": (".npy", _write_npy_map, _write_npy_map),
    **dict.fromkeys(NIFTI_SUFFIXES, (".nii.gz", write_nifti_like, write_nifti_like)),
}


def export_suffix(source: str | os.PathLike) -> str:
    """The suffix of a prediction written like ``source``: ``.nii.gz`` for NIfTI, ``.png`` for pictures."""
    return _chosen(_LIKE_SOURCE, source, "image")[0]


def write_mask_like(path: str | os.PathLike, mask: np.ndarray, source: str | os.PathLike) -> None:
    """Write a bool mask, laid out as ``source`` reads, in ``source``'s own format and geometry."""
    _chosen(_LIKE_SOURCE, source, "image")[1](path, np.asarray(mask, dtype=bool), source)


def write_map_like(path: str | os.PathLike, prob: np.ndarray, source: str | os.PathLike) -> None:
    """Write a probability map, laid out as ``source`` reads, in ``source``'s format and geometry.

    NIfTI as float32; pictures as an 8-bit grey PNG; arrays as float32 ``.npy``.
    """
    _chosen(_LIKE_SOURCE, source, "image")[2](path, np.asarray(prob, dtype=np.float32), source)
