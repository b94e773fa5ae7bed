"""The manifest check's NIfTI part: what is wrong with a 3D volume or its mask, one line per problem.

It must never change a file, never stop at a volume's first problem, and never hold more than one
volume's voxels at a time.

The header comes first and alone (nibabel reads it lazily): it gives the shape and the affine
that the mask is compared with. The voxels are then read once to find what the header cannot
show (a truncated or corrupt file, NaN, a constant image, mask values) and dropped before the
next file: the manifest check reads rows one by one, so a dataset of 512 x 512 x 300 CT scans
peaks at what nibabel needs to read one scan (twice its voxels' bytes for a ``.nii.gz``, a memory
map for a ``.nii``), not the dataset's. Extremes, not masks of the volume's size, find NaN. A
``.nii.gz`` is also decompressed once more, in 1 MiB chunks, to its end: only there does gzip
check its CRC, and nibabel, which stops after the voxels it needs, reads a corrupt file silently.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import apply_affine, voxel_sizes
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from lesionflow.io.geometry import Geometry
from lesionflow.io.masks import distinct_values

SPATIAL_DIMS = 3
# What nibabel and gzip raise for a foreign, truncated or corrupt file (a negative size in a
# corrupt header overflows nibabel's memory map).
_NIFTI_ERRORS = (OSError, ValueError, EOFError, OverflowError, zlib.error, ImageFileError, HeaderDataError)
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_NIFTI1_HEADER_BYTES = 348
# Masks are compared with their image voxel by voxel, so the affines must put every voxel of the
# grid at the same place. A thousandth of the image's smallest voxel is invisible to any
# resampling yet far above the rounding of the header's float32 fields and quaternion (about
# 1e-5 mm for offsets of a few hundred mm), so two files written by different tools for the same
# grid pass and a flipped, shifted or resampled mask does not.
AFFINE_TOLERANCE_VOXELS = 1e-3


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape)


def _reason(err: Exception) -> str:
    # nibabel's messages can span lines; a report line must not.
    return " ".join(str(err).split()) or type(err).__name__


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The 3D shape of a volume, or None when it is not one (a 4th axis of length 1 is dropped)."""
    spatial = tuple(int(size) for size in shape)
    if spatial[SPATIAL_DIMS:] == (1,):
        spatial = spatial[:SPATIAL_DIMS]
    return spatial if len(spatial) == SPATIAL_DIMS else None


def volume_header(file: Path) -> tuple[nib.Nifti1Image | None, Geometry | None, list[str]]:
    """The lazily opened volume, its 3D geometry from the header alone, and what is wrong.

    The volume is None when the file cannot be opened as NIfTI; the geometry is None when it
    cannot, or when the volume is not 3D (a 4D file whose last axis has length 1 counts as 3D).
    No voxel is read unless the header fails, and then only to say whether the file is cut short.
    """
    if _is_gzipped(file):
        with open(file, "rb") as handle:
            if handle.read(len(_GZIP_MAGIC)) != _GZIP_MAGIC:
                return None, None, ["is not gzip-compressed, as its .nii.gz name says; is it a NIfTI volume?"]
    try:
        volume = nib.load(file)
    except _NIFTI_ERRORS as err:
        return None, None, [_unopened(file, err)]
    if not isinstance(volume, nib.Nifti1Image):  # Nifti2Image is one too
        kind = type(volume).__name__
        return None, None, [f"cannot be opened as a NIfTI volume: nibabel reads it as {kind}"]
    if not volume.shape or min(volume.shape) < 1:
        empty = f"header gives shape {_shape_text(volume.shape) or '()'}, which holds no voxels"
        return None, None, [f"{empty}; is the header corrupt?"]
    shape = _spatial_shape(volume.shape)
    if shape is None:
        count = len(volume.shape)
        axes = f"shape {_shape_text(volume.shape)} has {count} {'axis' if count == 1 else 'axes'}"
        return volume, None, [f"{axes}; expected a 3D volume (a 4th axis of length 1 is accepted)"]
    zooms = volume.header.get_zooms()[:SPATIAL_DIMS]
    affine = np.asarray(volume.affine, dtype=np.float64)
    return volume, Geometry(shape, tuple(float(zoom) for zoom in zooms), affine), []


def _unopened(file: Path, err: Exception) -> str:
    """Why nibabel could not open ``file``: cut short, corrupt, or not NIfTI at all."""
    # nibabel reports a header it cannot decompress or that ends early as an unknown file type.
    size, why = _decoded_size(file)
    if size is None:
        return str(why)
    if size < _NIFTI1_HEADER_BYTES:
        short = f"it holds {size} bytes, fewer than a NIfTI header's {_NIFTI1_HEADER_BYTES}"
        return f"cannot be decoded ({short}); is it truncated?"
    if isinstance(err, ImageFileError):
        return "cannot be opened as a NIfTI volume: not a NIfTI-1 or NIfTI-2 file"
    return f"cannot be opened as a NIfTI volume ({_reason(err)})"


def _is_gzipped(file: Path) -> bool:
    return file.name.lower().endswith(".gz")


def _decoded_size(file: Path) -> tuple[int | None, str | None]:
    """The bytes the file holds once decompressed, or why it cannot be decompressed to its end.

    A ``.nii.gz`` is read through in 1 MiB chunks, as gzip checks its CRC only at the end.
    """
    if not _is_gzipped(file):
        return file.stat().st_size, None
    total = 0
    try:
        with gzip.open(file, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
    except _NIFTI_ERRORS as err:
        return None, f"cannot be decoded ({_reason(err)}); is it truncated or corrupt?"
    return total, None


def volume_voxels(file: Path, volume: nib.Nifti1Image) -> tuple[np.ndarray | None, str | None]:
    """The voxels as stored (scaled by the header's slope, as ``io.nifti`` reads them), or why not.

    The file's length is checked against what the header promises before any voxel is read, so
    a truncated file is named as such rather than failing inside nibabel.
    """
    proxy = volume.dataobj
    expected = int(proxy.offset) + int(np.prod(proxy.shape)) * proxy.dtype.itemsize
    stored, why = _decoded_size(file)
    if stored is None:
        return None, why
    if stored < expected:
        promise = f"it holds {stored} bytes, its header promises {expected}"
        return None, f"cannot be decoded ({promise}); is it truncated?"
    try:
        return np.asanyarray(proxy), None
    except _NIFTI_ERRORS as err:
        return None, f"cannot be decoded ({_reason(err)}); is it truncated or corrupt?"


def _finite_problem(values: np.ndarray, low: np.generic, high: np.generic) -> str | None:
    """How many voxels are NaN or infinite, or None; ``low`` / ``high`` are the values' min and max."""
    # NaN propagates through min and max and infinity is an extreme, so finite extremes prove
    # every voxel finite without a mask of the volume's size.
    if np.isfinite(low) and np.isfinite(high):
        return None
    nan = int(np.count_nonzero(np.isnan(values)))
    infinite = int(np.count_nonzero(np.isinf(values)))
    return f"{nan + infinite} of {values.size} voxels are not finite ({nan} NaN, {infinite} infinite)"


def _image_value_problems(values: np.ndarray) -> list[str]:
    """NaN or infinite voxels, or an image whose voxels are all equal."""
    low, high = values.min(), values.max()
    finite = _finite_problem(values, low, high)
    if finite:
        return [finite]
    if low == high:
        return [f"every voxel has the same value {low.item()}: a constant image holds nothing to learn from"]
    return []


def _largest_displacement(mask: Geometry, image: Geometry) -> float:
    """How far (mm) the mask's affine puts a voxel of the image's grid from where the image's does."""
    # The distance is the norm of an affine function of the voxel index, which is convex, so it is
    # largest at a corner of the grid.
    corners = np.array(np.meshgrid(*([0, size - 1] for size in image.shape))).reshape(SPATIAL_DIMS, -1).T
    moved = apply_affine(mask.affine, corners) - apply_affine(image.affine, corners)
    return float(np.linalg.norm(moved, axis=1).max())


def alignment_problems(mask: Geometry, image: Geometry, what: str = "mask") -> list[str]:
    """Whether a volume's voxels lie on the image's: the same shape, and affines that agree.

    ``what`` names the volume in the message: the mask, or another image of the case.
    """
    problems = []
    if mask.shape != image.shape:
        mask_shape, image_shape = _shape_text(mask.shape), _shape_text(image.shape)
        problems.append(f"shape {mask_shape} differs from the image's {image_shape}")
    moved = _largest_displacement(mask, image)
    tolerance = AFFINE_TOLERANCE_VOXELS * float(voxel_sizes(image.affine).min())
    if moved > tolerance:
        mask_axes, image_axes = ("".join(nib.aff2axcodes(geometry.affine)) for geometry in (mask, image))
        flipped = "" if mask_axes == image_axes else f"; it is oriented {mask_axes}, the image {image_axes}"
        problems.append(
            f"affine differs from the image's: it puts a voxel up to {moved:.3g} mm from where the "
            f"image's does (tolerance {tolerance:.3g} mm){flipped}; the {what} must be on the image's grid"
        )
    return problems


def volume_image_problems(file: Path) -> tuple[Geometry | None, list[str]]:
    """The image's 3D geometry (None when unreadable or not 3D) and everything wrong with it."""
    volume, geometry, problems = volume_header(file)
    if volume is None:
        return None, problems
    values, why = volume_voxels(file, volume)
    if values is None:
        return geometry, [*problems, str(why)]
    return geometry, problems + _image_value_problems(values)


def volume_mask_problems(file: Path, image: Geometry | None) -> tuple[np.ndarray | None, list[str]]:
    """The mask's distinct values (None when they cannot be read) and what is wrong with the mask.

    ``image`` is the image's geometry, or None when it has none to compare with. Whether the
    distinct values make a binary mask is the caller's rule, shared with pictures.
    """
    volume, geometry, problems = volume_header(file)
    if volume is None:
        return None, problems
    if geometry is not None and image is not None:
        problems += alignment_problems(geometry, image)
    values, why = volume_voxels(file, volume)
    if values is None:
        return None, [*problems, str(why)]
    finite = _finite_problem(values, values.min(), values.max())
    if finite:
        return None, [*problems, finite]
    return distinct_values(values), problems
