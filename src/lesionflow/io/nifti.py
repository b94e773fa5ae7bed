"""NIfTI volumes (``.nii``, ``.nii.gz``) read and written through nibabel, with their affine.

Volumes are read in RAS orientation (nibabel's closest canonical), so every stage sees the same
axis order whatever the scanner wrote; :func:`write_nifti_like` puts an array back into its
source's own orientation, affine and header. Never drops or invents geometry: spacing comes from
the header's zooms and the affine is written back as it was read.
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
from lesionflow.pipeline.errors import LesionflowError, one_line

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# What nibabel raises for a missing, foreign, truncated or corrupt file.
_NIFTI_ERRORS = (OSError, ValueError, EOFError, zlib.error, ImageFileError)
# gzip level 1, as nibabel writes: level 9 takes 15 times as long for files about 2 % smaller.
GZIP_LEVEL = 1
# At most three spatial axes; a fourth holds channels (NIfTI's time or vector axis).
_MAX_SPATIAL_DIMS = 3


def _open(path: str | os.PathLike, what: str) -> nib.Nifti1Image:
    """The NIfTI image at ``path`` as stored (header read, voxels not yet)."""
    try:
        volume = nib.load(os.fspath(path))
    except _NIFTI_ERRORS as err:
        raise LesionflowError(f"cannot read {what} {path}: {one_line(err)}") from None
    if not isinstance(volume, nib.Nifti1Image) or not 2 <= len(volume.shape) <= _MAX_SPATIAL_DIMS + 1:
        raise LesionflowError(
            f"{what} {path}: expected a 2D or 3D NIfTI image (optionally with channels last), "
            f"got shape {volume.shape}"
        )
    return volume


def _orientation(volume: nib.Nifti1Image) -> np.ndarray:
    """nibabel's orientation from the stored voxel axes to RAS (identity for a 2D slice).

    Row i says where input axis i goes (``[target axis, +1 or -1 for a flip]``), as
    ``nib.as_closest_canonical`` would apply it: axes are permuted and flipped, never resampled.
    """
    if len(volume.shape) < _MAX_SPATIAL_DIMS:
        # A 2D NIfTI slice has no third voxel axis to reorient against: it is kept as stored.
        return np.array([[axis, 1.0] for axis in range(len(volume.shape))])
    return nib.orientations.io_orientation(volume.affine)


def _to_source_orientation(array: np.ndarray, source: nib.Nifti1Image) -> np.ndarray:
    """``array`` laid out as ``source``'s voxels, when it is laid out as the source reads (RAS)."""
    ornt = _orientation(source)
    # Output axis ornt[i, 0] came from input axis i; a flip undoes itself.
    inverse = np.zeros_like(ornt)
    for axis, (target, flip) in enumerate(ornt):
        inverse[int(target)] = (axis, flip)
    return nib.orientations.apply_orientation(array, inverse)


def _geometry(volume: nib.Nifti1Image) -> Geometry:
    """The geometry of ``volume`` read in RAS orientation, from its header alone."""
    ornt = _orientation(volume)
    stored = volume.shape[: len(ornt)]
    zooms = volume.header.get_zooms()[: len(ornt)]
    shape, spacing = [0] * len(ornt), [0.0] * len(ornt)
    for axis, (target, _) in enumerate(ornt):
        # Zooms are float32 in the header: str() gives their shortest spelling (1.8, not 1.7999...).
        shape[int(target)], spacing[int(target)] = int(stored[axis]), float(str(zooms[axis]))
    affine = np.asarray(volume.affine, dtype=np.float64)
    if len(ornt) == _MAX_SPATIAL_DIMS:
        affine = affine @ nib.orientations.inv_ornt_aff(ornt, stored)
    return Geometry(tuple(shape), tuple(spacing), affine)


def _values(volume: nib.Nifti1Image, path: str | os.PathLike, what: str) -> np.ndarray:
    """The voxels in RAS orientation: float32 for an image, as stored for a mask."""
    # Voxels are read here, not in nib.load: a truncated file fails now, naming the file.
    try:
        if what == "image":
            values = volume.get_fdata(dtype=np.float32)
        else:
            values = np.asanyarray(volume.dataobj)
    except _NIFTI_ERRORS as err:
        raise LesionflowError(f"cannot read {what} {path}: {one_line(err)}") from None
    return np.ascontiguousarray(nib.orientations.apply_orientation(values, _orientation(volume)))


def nifti_geometry(path: str | os.PathLike) -> Geometry:
    """The geometry of a NIfTI image from its header, without reading its voxels."""
    return _geometry(_open(path, "image"))


def nifti_reading(path: str | os.PathLike) -> str:
    """How :func:`read_nifti` reads the volume at ``path`` (its stored type and scaling), in words."""
    volume = _open(path, "image")
    # nibabel moves the header's scl_slope / scl_inter to the voxel proxy when it loads a file.
    slope, inter = float(getattr(volume.dataobj, "slope", 1)), float(getattr(volume.dataobj, "inter", 0))
    scaling = "as stored" if (slope, inter) == (1, 0) else f"x {slope:g} + {inter:g} (the header's scaling)"
    return f"NIfTI {volume.get_data_dtype()}: {scaling}"


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
    loaded = read_nifti_values(path, channel)
    return Loaded(lesion_mask(loaded.array, threshold), loaded.geometry)


def read_nifti_values(path: str | os.PathLike, channel: int | None = None, what: str = "mask") -> Loaded:
    """A NIfTI mask's voxels ``(*spatial)`` as stored, in RAS orientation, and its geometry.

    A mask with a channel axis needs ``channel``, unless it has a single channel.
    """
    volume = _open(path, what)
    values = _values(volume, path, what)
    if values.ndim > _MAX_SPATIAL_DIMS:
        if channel is None and values.shape[-1] != 1:
            raise LesionflowError(
                f"{what} {path} has {values.shape[-1]} channels; say which holds the lesion (mask_channel)"
            )
        values = values[..., channel or 0]
    return Loaded(values, _geometry(volume))


def _save(path: str | os.PathLike, image: nib.Nifti1Image) -> None:
    """Write ``image`` atomically; ``.nii.gz`` gzipped with no timestamp, so equal images give equal bytes."""
    payload = image.to_bytes()
    if str(path).lower().endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=GZIP_LEVEL, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


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
    _save(path, nib.Nifti1Image(np.ascontiguousarray(data), affine))


def write_nifti_like(path: str | os.PathLike, array: np.ndarray, source: str | os.PathLike) -> None:
    """Write a ``(*spatial)`` map, laid out as ``source`` reads (RAS), in ``source``'s own geometry.

    The voxels go back to the source's axis order and flips, and the file keeps the source's
    affine, shape, qform/sform codes, units and description, so it opens aligned with the source
    in ITK-SNAP or 3D Slicer. Bool masks are stored as uint8, maps as float32; the source's
    intensity scaling is not copied. ``.nii.gz`` is written without a timestamp, atomically.
    """
    reference = _open(source, "image")
    data = _to_source_orientation(np.asarray(array), reference)
    if data.shape != reference.shape[: data.ndim]:
        raise LesionflowError(
            f"{path}: map of shape {np.shape(array)} does not fit {source} of shape {reference.shape}"
        )
    data = data.astype(np.uint8) if data.dtype == bool else data.astype(np.float32)
    header = reference.header.copy()
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)
    header.set_data_shape(data.shape)
    image = nib.Nifti1Image(np.ascontiguousarray(data), reference.affine, header=header)
    image.set_qform(reference.get_qform(), code=int(reference.header["qform_code"]))
    image.set_sform(reference.get_sform(), code=int(reference.header["sform_code"]))
    _save(path, image)
