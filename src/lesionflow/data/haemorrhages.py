"""A second lesion type for the built-in fundus photographs: dark red haemorrhage blots.

Haemorrhages are drawn from a random stream of their own (the dataset's seed and the image's
index), so that a dataset without them is byte for byte what it was before they existed. Vessels,
dark red too, are their look-alikes, as on real photographs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Label values of the multi-class masks the generator writes with haemorrhages.
EXUDATE_LABEL = 1
HAEMORRHAGE_LABEL = 2
# Of the lesion-positive photographs: exudates only, haemorrhages only, both.
CLASS_PATTERN = {"exudate": 0.4, "haemorrhage": 0.3, "both": 0.3}
MIN_AREA, MAX_AREA = 4, 250
MAX_BLOTS = 6
# Linear RGB of a blot: blood absorbs green and blue, so it is darker and redder than the retina.
HAEMORRHAGE_RGB = np.array([0.42, 0.06, 0.04])


@dataclass(frozen=True)
class Layer:
    """A lesion layer of one photograph: its colour, mask and soft opacity."""

    rgb: np.ndarray
    mask: np.ndarray
    opacity: np.ndarray


def image_stream(seed: int, index: int) -> np.random.Generator:
    """The random stream of one photograph's haemorrhages, apart from the dataset's own."""
    return np.random.default_rng([seed, index, HAEMORRHAGE_LABEL])


def lesion_types(rng: np.random.Generator) -> tuple[bool, bool]:
    """Whether a lesion-positive photograph shows (exudates, haemorrhages): never neither."""
    pattern = rng.choice(list(CLASS_PATTERN), p=list(CLASS_PATTERN.values()))
    return pattern != "haemorrhage", pattern != "exudate"


def blots(
    size: int, points: list[np.ndarray], draw_blot: Callable, rng: np.random.Generator, avoid: np.ndarray
) -> Layer:
    """1 to :data:`MAX_BLOTS` blots at ``points`` (candidate centres, used in order), none on a
    pixel of ``avoid`` (the exudates: a pixel has one class). ``draw_blot(yy, xx, centre, area,
    rng)`` gives one blot's (mask, opacity), as the exudates are drawn."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    mask = np.zeros((size, size), dtype=bool)
    opacity = np.zeros((size, size))
    count = int(rng.integers(1, MAX_BLOTS + 1))
    areas = np.exp(rng.uniform(np.log(MIN_AREA), np.log(MAX_AREA), count))
    for centre, area in zip(points, areas, strict=False):
        blot_mask, blot_opacity = draw_blot(yy, xx, centre, area, rng)
        mask |= blot_mask
        opacity = np.maximum(opacity, rng.uniform(0.45, 0.85) * blot_opacity)
    keep = ~avoid
    return Layer(HAEMORRHAGE_RGB, mask & keep, opacity * keep)


def label_map(exudates: np.ndarray, haemorrhages: np.ndarray) -> np.ndarray:
    """The uint8 label map of one photograph: 0 background, 1 exudate, 2 haemorrhage."""
    labels = np.zeros(exudates.shape, dtype=np.uint8)
    labels[exudates] = EXUDATE_LABEL
    labels[haemorrhages] = HAEMORRHAGE_LABEL
    return labels
