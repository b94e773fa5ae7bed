"""Where a preprocessed image sits in its original: field-of-view box, resize, and the way back.

Pure array functions on ``(C, *spatial)`` images and ``(*spatial)`` masks, one code path for 2D
and 3D. It must never read or write a file, and never turn a binary mask into anything but a
binary mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from lesionflow.data.axis_columns import axis_values
from lesionflow.pipeline.errors import LesionflowError

# A fundus disc is far brighter than this (about 0.3-0.9 at its darkest rim), while the black
# surround of a JPEG fundus photograph stays below about 0.05 (about 12 / 255).
FOV_THRESHOLD = 0.06
# Openings of this many iterations of the cross-shaped element cut the thin bridges that join
# specks and burnt-in text to the disc; the largest connected component then drops them.
FOV_OPENING_ITERATIONS = 2
# Interpolation used when a resize enlarges an image, by number of spatial dimensions.
UPSAMPLING_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
# Where whole-image metrics are computed; every summary that reports them says so. Here, beside
# restore_map that makes it true, so that inference need not import the metrics to say it.
ORIGINAL_RESOLUTION = (
    "original: whole-image probability maps are mapped back to the size of the reference masks"
)


def foreground_threshold(brightest: np.ndarray) -> float:
    """The value above which a pixel or voxel is field of view, given its brightest channel.

    Pictures, read in [0, 1], use :data:`FOV_THRESHOLD`. Other intensities (MRI or CT as stored)
    have no fixed scale, so the same fraction of the brightest channel's 99.5th percentile is
    used: a percentile rather than the maximum, which one hot voxel would move.
    """
    if brightest.min() >= 0 and brightest.max() <= 1:
        return FOV_THRESHOLD
    return FOV_THRESHOLD * float(np.percentile(brightest, 99.5))


def foreground(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Pixels whose brightest channel exceeds ``threshold`` (by default :func:`foreground_threshold`)."""
    # The brightest channel is computed once: for a 4288 x 2848 photograph it is a 49 MB pass.
    brightest = image.max(axis=0)
    return brightest > (foreground_threshold(brightest) if threshold is None else threshold)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a bool mask; an all-False mask when it has none."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def field_of_view(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The bright field of view of a ``(C, *spatial)`` image (a fundus disc, a head), bool ``(*spatial)``.

    Foreground is where the brightest channel exceeds ``threshold`` (see :func:`foreground`); a
    binary opening and the largest connected component remove noise specks and burnt-in labels.
    """
    opened = ndimage.binary_opening(foreground(image, threshold), iterations=FOV_OPENING_ITERATIONS)
    return largest_component(opened)


def field_of_view_box(image: np.ndarray, threshold: float | None = None) -> tuple[slice, ...]:
    """The bounding box of :func:`field_of_view`, one slice per spatial axis.

    Specks and labels outside the largest component cannot widen the box. Returns slices of the
    spatial axes only (index an image with ``image[(slice(None), *box)]``, a mask with
    ``mask[box]``); the whole image when no field of view is found.
    """
    spatial = image.shape[1:]
    box = ndimage.find_objects(field_of_view(image, threshold).astype(np.uint8))
    if not box or box[0] is None:
        return tuple(slice(0, size) for size in spatial)
    return tuple(box[0])


def resize_scale(shape: Sequence[int], max_size: int) -> float:
    """The scale that brings the longest spatial side of ``shape`` down to ``max_size``.

    Never above 1: small images are not enlarged. ``shape`` is the spatial shape.
    """
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
        raise LesionflowError(f"preprocess.max_size: expected a positive integer, got {max_size!r}")
    return min(1.0, max_size / max(shape))


def resized_shape(shape: Sequence[int], scale: float) -> tuple[int, ...]:
    """The spatial shape after resizing by ``scale``: each side rounded, at least 1 pixel."""
    return tuple(max(1, round(size * scale)) for size in shape)


def _interpolate(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``(C, *spatial)`` float32 resized to ``size``: area average if no side grows, else linear."""
    size = tuple(int(n) for n in size)
    shrinks = all(new <= old for new, old in zip(size, array.shape[1:], strict=True))
    mode = "area" if shrinks else UPSAMPLING_MODES[len(size)]
    options: dict[str, Any] = {} if mode == "area" else {"align_corners": False}
    torch, functional = _torch()
    # from_numpy shares the caller's memory: only the (smaller) result is allocated.
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    return functional.interpolate(tensor, size=size, mode=mode, **options)[0].numpy()


def _torch() -> tuple[Any, Any]:
    # Imported when a resize needs it, not with the module: the evaluate stage reads only
    # ORIGINAL_RESOLUTION here, and importing torch would add about 2 s to every such cheap job.
    import torch
    import torch.nn.functional as functional

    return torch, functional


def resize_image_to(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A ``(C, *spatial)`` image resized to spatial ``shape``; its own shape returns it as is.

    Where no side grows, each output pixel averages the source pixels under it (area
    interpolation, free of aliasing); otherwise interpolation is (bi/tri)linear.
    """
    if tuple(shape) == image.shape[1:]:
        return image
    return _interpolate(image, shape)


def resize_mask_to(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A bool ``(*spatial)`` mask resized to ``shape``, still bool; its own shape returns it as is.

    The mask is area-averaged and cut at 0.5 (a majority vote of the source pixels under each
    output pixel) rather than sampled with nearest neighbour: nearest keeps or drops a small lesion
    by where one sample happens to fall, and shifts outlines by up to a source pixel, while the
    vote is deterministic and keeps the lesion area on average. Ties count as lesion, so a lesion
    covering half an output pixel is kept. Where a side grows it interpolates linearly and cuts
    at 0.5 too.
    """
    if tuple(shape) == mask.shape:
        return mask
    return _interpolate(mask[None].astype(np.float32), shape)[0] >= 0.5


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """A ``(C, *spatial)`` image resized by ``scale``, keeping its aspect (see :func:`resize_image_to`)."""
    return resize_image_to(image, resized_shape(image.shape[1:], scale))


def resize_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """A bool ``(*spatial)`` mask resized by ``scale``, still bool (see :func:`resize_mask_to`)."""
    return resize_mask_to(mask, resized_shape(mask.shape, scale))


def resampled_shape(
    shape: Sequence[int], factors: Sequence[float], max_size: int | None
) -> tuple[tuple[int, ...], float]:
    """The spatial shape after resampling each axis by ``factors`` and fitting ``max_size``, and its scale.

    ``factors`` are the source spacing over the target spacing (1 where there is no target).
    The scale is the geometric mean of the per-axis factors (so ``scale ** ndim`` is the ratio of
    voxel counts, which locked lesion areas follow); it is exactly the ``max_size`` fit when
    every factor is 1.
    """
    resampled = [size * factor for size, factor in zip(shape, factors, strict=True)]
    fit = 1.0 if max_size is None else resize_scale(resampled, max_size)
    new_shape = tuple(max(1, round(size * fit)) for size in resampled)
    mean_factor = float(np.prod(factors)) ** (1 / len(factors))
    return new_shape, (1.0 if mean_factor == 1 else mean_factor) * fit


def resize_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A ``(*spatial)`` float map resized to ``shape`` (bi/trilinear), as float32."""
    torch, functional = _torch()
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    mode = UPSAMPLING_MODES[len(shape)]
    return functional.interpolate(tensor, size=tuple(shape), mode=mode, align_corners=False)[0, 0].numpy()


def crop_box(row: Mapping[str, Any]) -> tuple[slice, ...]:
    """The field-of-view box of an ``images.csv`` row (``crop_start``, ``crop_stop``), one slice per axis."""
    start = axis_values(row["crop_start"], "crop_start")
    stop = axis_values(row["crop_stop"], "crop_stop")
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


def restore_map(prob: np.ndarray, row: Mapping[str, Any]) -> np.ndarray:
    """A preprocessed-resolution probability map placed back on its original image, float32.

    ``row`` is the image's row of the preprocess stage's ``images.csv`` (its per-axis cells as
    written, or parsed by ``axis_columns.read_axis_columns``). The map is resized (bi/trilinear)
    to the field-of-view box and pasted into an original-sized map that is 0 outside the box,
    so metrics are computed at the resolution of the reference mask.
    """
    box = crop_box(row)
    size = tuple(part.stop - part.start for part in box)
    inside = prob if tuple(prob.shape) == size else resize_to(prob, size)
    original = axis_values(row["original_shape"], "original_shape")
    full = np.zeros(tuple(int(n) for n in original), dtype=np.float32)
    full[box] = inside
    return full


def resample_factors(spacing: Sequence[float], target: Sequence[float] | None, source: str) -> list[float]:
    """Per axis, the source spacing over ``preprocess.target_spacing`` (all 1 without a target).

    Raises LesionflowError naming the key and ``source`` when the target has another number of
    axes than the image.
    """
    if target is None:
        return [1.0] * len(spacing)
    if len(target) != len(spacing):
        raise LesionflowError(
            f"preprocess.target_spacing: {list(target)} has {len(target)} values, but {source} has "
            f"{len(spacing)} spatial axes (spacing {list(spacing)})"
        )
    return [float(have) / float(want) for have, want in zip(spacing, target, strict=True)]
