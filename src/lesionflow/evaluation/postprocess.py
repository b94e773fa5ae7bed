"""Turn a probability map into a final mask and a lesion-presence call, for 2D and 3D alike.

Must never choose its own settings: thresholds and areas come from the locked tuning result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage

from lesionflow.pipeline.artifacts import read_json
from lesionflow.pipeline.errors import LesionflowError

PRESENCE_SOURCES = ("max_probability", "lesion_area")


def connectivity_structure(ndim: int, connectivity: int | str) -> np.ndarray:
    """Structuring element for ``scipy.ndimage.label``.

    ``connectivity`` is 1 (faces only: 4-neighbours in 2D, 6 in 3D) up to ``ndim``
    (every neighbour: 8 in 2D, 26 in 3D), or ``"full"`` for ``ndim``.
    """
    rank = ndim if connectivity == "full" else connectivity
    if not isinstance(rank, int | np.integer) or not 1 <= int(rank) <= ndim:
        raise LesionflowError(
            f"connectivity must be an integer from 1 to {ndim} or 'full' for {ndim}-D masks, "
            f"got {connectivity!r}"
        )
    return ndimage.generate_binary_structure(ndim, int(rank))


def component_sizes(mask: np.ndarray, connectivity: int | str) -> tuple[np.ndarray, np.ndarray]:
    """Label connected components; return (labels, sizes) with ``sizes[0]`` the background."""
    labels, _ = ndimage.label(mask, structure=connectivity_structure(mask.ndim, connectivity))
    return labels, np.bincount(labels.ravel())


def binarize(
    prob: np.ndarray,
    threshold: float,
    min_lesion_area: int,
    connectivity: int | str,
) -> np.ndarray:
    """Threshold ``prob`` (pixel is lesion where ``prob >= threshold``) and drop small components.

    Connected components with fewer than ``min_lesion_area`` pixels (voxels in 3D) are removed.
    """
    mask = np.asarray(prob) >= threshold
    if min_lesion_area <= 1 or not mask.any():
        return mask
    labels, sizes = component_sizes(mask, connectivity)
    keep = sizes >= min_lesion_area
    keep[0] = False
    return keep[labels]


def presence_score(prob: np.ndarray, source: str, threshold: float) -> float:
    """Score that the image holds any lesion.

    ``max_probability``: the highest pixel probability. ``lesion_area``: the number of pixels
    with ``prob >= threshold`` (``threshold`` is the pixel threshold; ignored otherwise).
    """
    if source == "max_probability":
        return float(np.max(prob))
    if source == "lesion_area":
        return float(np.count_nonzero(np.asarray(prob) >= threshold))
    raise LesionflowError(
        f"tune.presence_score must be one of {list(PRESENCE_SOURCES)}, got {source!r}"
    )


LOCKED_KEYS = (
    "threshold",
    "min_lesion_area",
    "presence_threshold",
    "presence_score",
    "connectivity",
)


def read_locked(path: str | os.PathLike) -> dict:
    """Read ``locked.json`` and check it holds every setting :func:`apply_locked` applies."""
    if not Path(path).is_file():
        raise LesionflowError(f"locked settings file {path} does not exist")
    locked = read_json(path)
    missing = [key for key in LOCKED_KEYS if locked.get(key) is None]
    if missing:
        raise LesionflowError(f"locked settings file {path} lacks the keys {missing}")
    if locked.get("chosen_on") != "validation":
        raise LesionflowError(
            f"locked settings file {path} says chosen_on={locked.get('chosen_on')!r}; "
            "only settings chosen on validation may be applied"
        )
    return locked


def apply_locked(prob: np.ndarray, locked: Mapping) -> tuple[np.ndarray, float, bool]:
    """Apply locked settings to one probability map: (mask, presence_score, presence_pred).

    The mask is emptied when ``presence_pred`` is False (presence gating): scattered
    low-confidence pixels in lesion-free images are the main source of false positives, and an
    image-level decision removes them without raising the pixel threshold for every image.
    """
    score = presence_score(prob, locked["presence_score"], locked["threshold"])
    present = bool(score >= locked["presence_threshold"])
    if not present:
        return np.zeros(np.shape(prob), dtype=bool), score, False
    mask = binarize(prob, locked["threshold"], locked["min_lesion_area"], locked["connectivity"])
    return mask, score, True


def locked_at_scale(locked: Mapping, scale: float, spatial_dims: int) -> dict:
    """``locked`` for maps resized by ``scale``: pixel areas multiplied by ``scale ** spatial_dims``.

    The minimum lesion area (and an area presence threshold) were chosen on original-size
    images; on a map downscaled by 0.3 the same lesion covers 0.09 of the pixels (0.027 of the
    voxels of a volume). Areas are rounded, and a positive minimum stays at least 1 pixel.
    """
    factor = float(scale) ** spatial_dims
    scaled = dict(locked)
    if locked["min_lesion_area"] > 0:
        scaled["min_lesion_area"] = max(1, round(locked["min_lesion_area"] * factor))
    if locked["presence_score"] == "lesion_area":
        scaled["presence_threshold"] = locked["presence_threshold"] * factor
    return scaled
