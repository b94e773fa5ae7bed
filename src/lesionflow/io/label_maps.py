"""Label maps: masks whose values name a lesion class (0 background, 1 exudate, 2 haemorrhage, ...).

Read as stored, never cut at a threshold: every value means a class. A lossy picture (JPEG) is
refused, since its compression invents values between the labels.
"""

from __future__ import annotations

import os

import numpy as np

from lesionflow.io.arrays import read_array_values
from lesionflow.io.geometry import Loaded, pixel_geometry
from lesionflow.io.nifti import NIFTI_SUFFIXES, read_nifti_values
from lesionflow.io.pictures import (
    PICTURE_SUFFIXES,
    SIXTEEN_BIT_MODES,
    lesion_values,
    mask_channels,
    open_picture,
)
from lesionflow.pipeline.errors import LesionflowError

LOSSY_SUFFIXES = (".jpg", ".jpeg")


def _suffix(path: str | os.PathLike) -> str:
    name = os.fspath(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def _picture_labels(path: str | os.PathLike, channel: int | None) -> np.ndarray:
    picture = open_picture(path, "mask")
    if picture.mode == "F":
        raise LesionflowError(f"label map {path} holds 32-bit floats: store its labels as integers")
    if picture.mode in ("P", "L", "1", *SIXTEEN_BIT_MODES):
        # A palette picture's indices are its labels; its colours are only how viewers show them.
        return np.asarray(picture, dtype=np.uint16 if picture.mode in SIXTEEN_BIT_MODES else np.uint8)
    return lesion_values(mask_channels(picture)[0], channel, path)


def _whole_numbers(values: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    if values.dtype == bool:
        return values.astype(np.uint8)
    if np.issubdtype(values.dtype, np.integer):
        if values.size and values.min() < 0:
            raise LesionflowError(f"label map {path} holds the negative value {int(values.min())}")
        return values
    finite = np.isfinite(values)
    if not finite.all() or (values != np.round(values)).any() or (values.size and values.min() < 0):
        bad = values[~finite | (values != np.round(values)) | (values < 0)]
        raise LesionflowError(
            f"label map {path} holds the value {float(bad.flat[0]):g}: labels are whole numbers from 0"
        )
    return values.astype(np.uint16 if values.max(initial=0) > 255 else np.uint8)


def read_label_map(path: str | os.PathLike, channel: int | None = None) -> Loaded:
    """The label map at ``path`` as integers ``(*spatial)``, as stored, and its geometry.

    NIfTI volumes come in RAS orientation as their masks do; ``channel`` picks the channel of a
    colour picture (or of a NIfTI with a channel axis) whose channels differ.
    """
    suffix = _suffix(path)
    if suffix in LOSSY_SUFFIXES:
        raise LesionflowError(
            f"label map {path} is a JPEG, whose compression changes label values: store it as PNG, "
            "TIFF, NIfTI or .npy"
        )
    if suffix in PICTURE_SUFFIXES:
        values = _picture_labels(path, channel)
        return Loaded(_whole_numbers(values, path), pixel_geometry(values.shape))
    if suffix == ".npy":
        values = read_array_values(path, "label map")
        return Loaded(_whole_numbers(values, path), pixel_geometry(values.shape))
    if suffix in NIFTI_SUFFIXES:
        loaded = read_nifti_values(path, channel, "label map")
        return Loaded(_whole_numbers(loaded.array, path), loaded.geometry)
    raise LesionflowError(
        f"cannot read label map {path}: unknown suffix {suffix!r} (use PNG, TIFF, NIfTI or .npy)"
    )
