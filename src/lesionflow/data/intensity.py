"""Intensity normalisation of one image: per channel, over the whole image or its field of view.

Pure array functions; it must never let statistics cross from one image (or split) to another.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lesionflow.data.geometry import foreground

# none: values as read; image: each channel of each image to mean 0 and std 1; foreground: the
# same with the field of view's statistics, background 0; percentile: clipped to the field of
# view's 0.5th-99.5th percentiles first (MRI has a few very bright voxels).
NORMALISATIONS = ("none", "image", "foreground", "percentile")
CLIP_PERCENTILES = (0.5, 99.5)
def normalise_channels(
    image: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image - mean) / std`` per channel, with the ``mean`` and ``std`` used (float32 ``(C,)``).

    ``mean`` / ``std`` default to the image's own statistics; pass a training set's to normalise
    other images alike. A constant channel has std 0 and is divided by 1 instead, so it becomes 0
    rather than NaN.
    """
    axes = tuple(range(1, image.ndim))
    if mean is None:
        mean = image.mean(axis=axes, dtype=np.float64)
    if std is None:
        std = image.std(axis=axes, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    safe_std = np.where(std > 0, std, np.float32(1.0))
    expand = (slice(None),) + (None,) * len(axes)
    normalised = (image.astype(np.float32) - mean[expand]) / safe_std[expand]
    return normalised, mean, std


def normalise_foreground(image: np.ndarray, clip: bool) -> np.ndarray:
    """Each channel z-scored with the statistics of the field of view; the background set to 0.

    The field of view is every pixel brighter than the foreground threshold (see
    ``geometry.foreground``), with its enclosed holes filled so that dark structures inside the
    head (ventricles in FLAIR) count; unlike the crop, it is not opened, which would zero the
    head's rim. With ``clip`` each channel is first clipped to :data:`CLIP_PERCENTILES` of its
    field-of-view values. An image without a field of view is normalised over all its pixels.
    """
    inside = ndimage.binary_fill_holes(foreground(image))
    if not inside.any():
        inside = np.ones(image.shape[1:], dtype=bool)
    image = image.astype(np.float32)
    expand = (slice(None),) + (None,) * (image.ndim - 1)
    if clip:
        low, high = np.percentile(image[:, inside], CLIP_PERCENTILES, axis=1)
        image = np.clip(image, low[expand], high[expand])
    values = image[:, inside]
    normalised = normalise_channels(image, values.mean(axis=1), values.std(axis=1))[0]
    normalised[:, ~inside] = 0
    return normalised


def normalised(image: np.ndarray, method: str) -> np.ndarray:
    """``image`` normalised by ``preprocess.normalise`` (one of :data:`NORMALISATIONS`)."""
    if method == "image":
        return normalise_channels(image)[0]
    if method in ("foreground", "percentile"):
        return normalise_foreground(image, clip=method == "percentile")
    return image
