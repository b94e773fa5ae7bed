"""The named brain regions of the Loes-like score and the rule that scores a lesion mask over them.

Regions are geometric approximations on a head's RAS grid; it must never draw or change a lesion,
and the score is a function of the lesion mask and the region map alone (see docs/loes-score.md).

The score sums 20 region parts (10 regions, each split into a left and a right part at the head's
midline). Part ``p`` has a maximum ``m_p`` (1 to 5 points, 34 in all) and scores
``min(m_p, ceil(2 * m_p * f_p) / 2)`` points, where ``f_p`` is the fraction of its voxels that are
lesion; under 10 % counts as none. So a 1-point part scores 0 (none), 0.5 (up to half involved)
or 1 (more than half), and the large parieto-occipital (5 per side) and frontal (3) white matter
parts rise in half points with their extent; a region involved on one side only scores at most
half its points, as a unilateral Loes item does. A part missing from the map (a head too small to
hold it) always scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lesionflow.data.brain_anatomy import DEEP_GREY, STEM, WHITE, Head
from lesionflow.pipeline.errors import LesionflowError


@dataclass(frozen=True)
class Region:
    """A named region: its largest score per side, so a bilateral region scores up to twice that."""

    name: str
    points_per_side: float


# The Loes score's groups, 34 points as in the real score: most for the parieto-occipital and
# frontal white matter, where adrenoleukodystrophy lesions spread furthest.
REGIONS = (
    Region("parieto_occipital_white_matter", 5.0),
    Region("frontal_white_matter", 3.0),
    Region("temporal_white_matter", 2.0),
    Region("corpus_callosum_splenium", 1.0),
    Region("corpus_callosum_body", 1.0),
    Region("corpus_callosum_genu", 1.0),
    Region("internal_capsule", 1.0),
    Region("basal_ganglia_thalamus", 1.0),
    Region("brainstem", 1.0),
    Region("cerebellar_white_matter", 1.0),
)
SIDES = ("left", "right")
# Region map values: 0 outside every region, then part k = 1 + 2 * region index + side (0 left).
PART_NAMES = tuple(f"{region.name}_{side}" for region in REGIONS for side in SIDES)
PART_MAXIMA = np.array([region.points_per_side for region in REGIONS for _ in SIDES])
MAX_SCORE = float(PART_MAXIMA.sum())
# A part of fewer voxels than this is left out of the map (a head too small to hold it): one or
# two voxels would make a whole point hang on a single voxel.
MIN_PART_VOXELS = 4
# Parts less involved than this count as none: a lesion grazing a region's border does not score.
INVOLVED_FRACTION = 0.1

# Geometry in head-normalised coordinates (x right, y anterior, z superior; 1 at the scalp).
# The corpus callosum: the white matter over and between the lateral ventricles near the midline,
# split front to back into genu, body and splenium.
CALLOSUM_HALF_WIDTH = 0.2
CALLOSUM_HEIGHT = (-0.05, 0.45)
CALLOSUM_LENGTH = 0.55
CALLOSUM_THIRD = 0.2
# The posterior fossa: the back of the brain below the tentorium, where the cerebellum lies.
FOSSA_BACK_OF = -0.45
FOSSA_BELOW = 0.0
# The deep grey nuclei of each side: the drawn nuclei wherever they are, and the brain tissue (grey
# or white) in this ellipsoid, a little lower and more lateral than the anatomy draws them, since
# wide ventricles may swallow the drawn ones. The internal capsule is the white matter in a shell
# around that ellipsoid.
NUCLEI_CENTRE = np.array([0.26, 0.0, -0.1])
NUCLEI_RADII = np.array([0.14, 0.22, 0.16])
CAPSULE_RADII = np.array([0.24, 0.32, 0.24])
# The temporal lobe: low and lateral, in front of the posterior fossa.
TEMPORAL_BELOW = -0.02
TEMPORAL_LATERAL_OF = 0.3
# The frontal lobe starts a little in front of the head's centre (about the central sulcus).
FRONTAL_FROM = 0.05
# The brainstem: the stem between the brain and the foramen magnum (not the cord in the neck).
BRAINSTEM_ABOVE = -0.75

_REGION_INDEX = {region.name: index for index, region in enumerate(REGIONS)}


def _coordinates(head: Head, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    return tuple(np.broadcast_to(axis, shape) for axis in head.u)


def _either_side_ellipsoid(coords: tuple[np.ndarray, ...], radii: np.ndarray) -> np.ndarray:
    """Where ``coords`` fall in the ellipsoid around the deep nuclei of either side."""
    x, y, z = coords
    mirrored = (np.abs(x) - NUCLEI_CENTRE[0], y - NUCLEI_CENTRE[1], z - NUCLEI_CENTRE[2])
    return sum((c / r) ** 2 for c, r in zip(mirrored, radii, strict=True)) <= 1.0


def _region_masks(labels: np.ndarray, head: Head) -> dict[str, np.ndarray]:
    """Each region's voxels (both sides), in the order that settles overlaps: first come, first kept."""
    x, y, z = _coordinates(head, labels.shape)
    white = labels == WHITE
    fossa = (y < FOSSA_BACK_OF) & (z < FOSSA_BELOW)
    callosum = (
        white
        & (np.abs(x) <= CALLOSUM_HALF_WIDTH)
        & (z >= CALLOSUM_HEIGHT[0])
        & (z <= CALLOSUM_HEIGHT[1])
        & (np.abs(y) <= CALLOSUM_LENGTH)
    )
    nuclei = _either_side_ellipsoid((x, y, z), NUCLEI_RADII)
    capsule = _either_side_ellipsoid((x, y, z), CAPSULE_RADII)
    return {
        "cerebellar_white_matter": white & fossa,
        "basal_ganglia_thalamus": (labels == DEEP_GREY) | (white & nuclei),
        "corpus_callosum_splenium": callosum & (y < -CALLOSUM_THIRD),
        "corpus_callosum_genu": callosum & (y > CALLOSUM_THIRD),
        "corpus_callosum_body": callosum,
        "brainstem": (labels == STEM) & (z >= BRAINSTEM_ABOVE),
        "internal_capsule": white & capsule,
        "temporal_white_matter": white & (z < TEMPORAL_BELOW) & (np.abs(x) >= TEMPORAL_LATERAL_OF),
        "frontal_white_matter": white & (y >= FRONTAL_FROM),
        "parieto_occipital_white_matter": white,
    }


def region_map(labels: np.ndarray, head: Head) -> np.ndarray:
    """The uint8 region map of a head's tissue ``labels``: 0 outside the regions, else the part number.

    Part ``k`` (1 to 20) is ``PART_NAMES[k - 1]``; left is x < 0 on the RAS grid.
    """
    side = (_coordinates(head, labels.shape)[0] >= 0).astype(np.uint8)
    parts = np.zeros(labels.shape, dtype=np.uint8)
    for name, voxels in _region_masks(labels, head).items():
        free = voxels & (parts == 0)
        parts[free] = (1 + 2 * _REGION_INDEX[name] + side)[free]
    too_small = np.flatnonzero(np.bincount(parts.ravel(), minlength=len(PART_NAMES) + 1) < MIN_PART_VOXELS)
    parts[np.isin(parts, too_small[too_small > 0])] = 0
    return parts


def part_points(lesion: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Points of each of the 20 parts (``PART_NAMES`` order) for a bool ``lesion`` mask over ``regions``.

    Integer arithmetic throughout, so a fraction exactly on a step scores the same on any machine.
    """
    if lesion.shape != regions.shape:
        raise LesionflowError(
            f"lesion mask of shape {lesion.shape} does not match the region map of shape {regions.shape}"
        )
    n_parts = len(PART_NAMES) + 1
    flat = regions.ravel().astype(np.intp)
    if flat.size and (flat.min() < 0 or flat.max() >= n_parts):
        raise LesionflowError(
            f"region map: expected part numbers 0 to {n_parts - 1}, found {flat.min()} to {flat.max()}"
        )
    sizes = np.bincount(flat, minlength=n_parts)[1:]
    involved = np.bincount(flat[lesion.ravel().astype(bool)], minlength=n_parts)[1:]
    steps = (2 * PART_MAXIMA).astype(np.int64)
    # ceil(2 m f) as an integer: -(-a // b) is ceil(a / b).
    half_points = np.minimum(steps, -(-steps * involved // np.maximum(sizes, 1)))
    scored = (sizes > 0) & (involved * round(1 / INVOLVED_FRACTION) >= sizes)
    return np.where(scored, half_points / 2, 0.0)


def loes_score(lesion: np.ndarray, regions: np.ndarray) -> float:
    """The Loes-like score (0 to 34, in half points) of a bool ``lesion`` mask over a region map."""
    return float(part_points(lesion, regions).sum())
