"""NIfTI volumes (``.nii``, ``.nii.gz``) read and written through nibabel, with their affine.

Never drops or invents geometry: spacing comes from the header's zooms and the affine is written
back as it was read.
"""

from __future__ import annotations

import gzip
import os
import zlib

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from lesionflow.io.geometry import Geometry, Loaded
from lesionflow.io.masks import DEFAULT_MASK_THRESHOLD, lesion_mask
from lesionflow.pipeline.artifacts import atomic_path
from lesionflow.pipeline.errors import LesionflowError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# What nibabel raises for a missing, foreign, truncated or corrupt file.
_NIFTI_ERRORS = (OSError, ValueError, EOFError, zlib.error, ImageFileError)
# At most three spatial axes; a fourth holds channels (NIfTI's time or vector axis).
_MAX_SPATIAL_DIMS = 3


def _open(path: str | os.PathLike, what: str) -> nib.Nifti1Image:
    try:
        volume = nib.load(os.fspath(path))
    except _NIFTI_ERRORS as err:
        raise LesionflowError(f"cannot read {what} {path}: {err}") from None
    if not isinstance(volume, nib.Nifti1Image) or not 2 <= len(volume.shape) <= _MAX_SPATIAL_DIMS + 1:
        raise LesionflowError(
            f"{what} {path}: expected a 2D or 3D NIfTI image (optionally with channels last), "
            f"got shape {volume.shape}"
        )
    return volume


def _geometry(volume: nib.Nifti1Image) -> Geometry:
    spatial = volume.shape[:_MAX_SPATIAL_DIMS]
    zooms = volume.header.get_zooms()[: len(spatial)]
    return Geometry(
        tuple(int(size) for size in spatial),
        tuple(float(zoom) for zoom in zooms),
        np.asarray(volume.affine, dtype=np.float64),
    )


def _values(volume: nib.Nifti1Image, path: str | os.PathLike, what: str) -> np.ndarray:
    # Voxels are read here, not in nib.load: a truncated file fails now, naming the file.
    try:
        if what == "image":
            return volume.get_fdata(dtype=np.float32)
        return np.asanyarray(volume.dataobj)
    except _NIFTI_ERRORS as err:
        raise LesionflowError(f"cannot read {what} {path}: {err}") from None


def nifti_geometry(path: str | os.PathLike) -> Geometry:
    """The geometry of a NIfTI image from its header, without reading its voxels."""
    return _geometry(_open(path, "image"))


def read_nifti(path: str | os.PathLike) -> Loaded:
    """A NIfTI image as float32 ``(C, *spatial)``: intensities as stored (scaled by the header's slope).

    A 4D image's last axis becomes the channels; CT or MR intensities are not mapped to [0, 1].
    """
    volume = _open(path, "image")
    values = _values(volume, path, "image")
    if values.ndim > _MAX_SPATIAL_DIMS:
        array = np.ascontiguousarray(np.moveaxis(values, -1, 0))
    else:
        array = values[None]
    if not np.isfinite(array).all():
        raise LesionflowError(f"image {path}: expected finite values, found NaN or infinity")
    return Loaded(array, _geometry(volume))


def read_nifti_mask(
    path: str | os.PathLike, channel: int | None = None, threshold: int = DEFAULT_MASK_THRESHOLD
) -> Loaded:
    """A NIfTI mask as bool ``(*spatial)``: 1 in a 0/1 label mask, else voxels above ``threshold``.

    A mask with a channel axis needs ``channel``; a single-channel mask ignores it, as a
    greyscale picture does.
    """
    volume = _open(path, "mask")
    values = _values(volume, path, "mask")
    if values.ndim > _MAX_SPATIAL_DIMS:
        if channel is None and values.shape[-1] != 1:
            raise LesionflowError(
                f"mask {path} has {values.shape[-1]} channels; say which holds the lesion (mask_channel)"
            )
        values = values[..., channel or 0]
    return Loaded(lesion_mask(values, threshold), _geometry(volume))


def write_nifti(path: str | os.PathLike, array: np.ndarray, geometry: Geometry) -> None:
    """Write a ``(*spatial)`` or ``(C, *spatial)`` array as NIfTI with ``geometry``'s affine, atomically.

    A bool mask is stored as uint8; channels go last, as NIfTI keeps them. Without an affine
    (a picture's geometry) the affine is the diagonal of the spacing. ``.nii.gz`` is gzipped
    with no timestamp, so the same array gives the same bytes.
    """
    if array.shape == geometry.shape:
        data = array
    elif array.shape[1:] == geometry.shape:
        data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    else:
        raise LesionflowError(
            f"{path}: array of shape {array.shape} does not fit geometry of shape {geometry.shape}"
        )
    if data.dtype == bool:
        data = data.astype(np.uint8)
    affine = geometry.affine
    if affine is None:
        affine = np.diag([*geometry.spacing, *(1.0,) * (_MAX_SPATIAL_DIMS - len(geometry.spacing)), 1.0])
    # nibabel sets the header's zooms from the affine, as it does for any image it saves.
    payload = nib.Nifti1Image(np.ascontiguousarray(data), affine).to_bytes()
    if str(path).lower().endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
