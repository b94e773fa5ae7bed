"""The anatomy of the built-in brain volumes: a head's tissue labels on a RAS grid, and their contrast.

Pure functions of the random generator it is given; it must never draw lesions (the generators
place them in the white matter this draws) nor write a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Axial acquisition: 1 mm in-plane, thicker slices, and as many slices as keep the field of view
# about as tall as it is wide (a protocol's slice thickness, rounded to 0.1 mm).
IN_PLANE_SPACING = 1.0
SLICE_THICKNESS = (1.5, 2.0)
# Tissue labels of the noise-free anatomy; _tissue_levels gives each its FLAIR brightness.
BACKGROUND, SCALP, SKULL, CSF, GREY, WHITE, DEEP_GREY, VENTRICLE, STEM, SOFT, EYE, MARKER = range(12)
BRAIN_TISSUE = (GREY, WHITE, DEEP_GREY)
# Where the fiducial capsule is taped, in head-normalised coordinates: on the right forehead,
# as vitamin E capsules mark the patient's right on real scans.
_MARKER_DIRECTION = np.array([0.62, 0.55, 0.56])


def _direction_field(
    unit: tuple[np.ndarray, ...], n_waves: int, frequency: float, rng: np.random.Generator
) -> np.ndarray:
    """A smooth random function of direction in [-1, 1]: a sum of plane waves on the unit sphere."""
    field = np.zeros(np.broadcast_shapes(*(u.shape for u in unit)))
    for _ in range(n_waves):
        wave = rng.normal(0, 1, 3)
        wave *= frequency / np.linalg.norm(wave)
        field += np.cos(sum(w * u for w, u in zip(wave, unit, strict=True)) + rng.uniform(0, 2 * np.pi))
    return field / n_waves


def _ellipsoid(coords: tuple[np.ndarray, ...], centre, radii) -> np.ndarray:
    """Where the grid ``coords`` fall inside the axis-aligned ellipsoid."""
    return sum(((c - m) / r) ** 2 for c, m, r in zip(coords, centre, radii, strict=True)) <= 1.0


def subject_grid(size: int, rng: np.random.Generator) -> tuple[tuple[int, ...], np.ndarray]:
    """The subject's RAS grid: ``size`` x ``size`` 1 mm voxels in-plane, fewer thicker slices."""
    thickness = round(float(rng.uniform(*SLICE_THICKNESS)), 1)
    spacing = np.array([IN_PLANE_SPACING, IN_PLANE_SPACING, thickness])
    return (size, size, max(2, round(size * IN_PLANE_SPACING / thickness))), spacing


@dataclass(frozen=True)
class Head:
    """Where one head sits on its grid, as open (broadcastable) coordinate arrays."""

    mm: tuple[np.ndarray, ...]  # voxel centres in millimetres
    u: tuple[np.ndarray, ...]  # head-normalised: (mm - centre) / radii
    rho: np.ndarray  # head-normalised radius, 1 on the scalp (a little bumpy)
    unit: tuple[np.ndarray, ...]  # direction from the head's centre
    centre: np.ndarray
    radii: np.ndarray
    extent: np.ndarray
    spacing: np.ndarray
    layer: float  # thickness of scalp, skull and outer CSF, in units of rho


def _head(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> Head:
    """A head of random size and position: longer front to back than side to side, neck below."""
    extent = np.array(shape) * spacing
    radii = np.array([0.32, 0.42, 0.33]) * extent[0] * rng.uniform(0.9, 1.04) * rng.uniform(0.96, 1.04, 3)
    centre = extent * np.array([0.5, 0.5, 0.48]) + rng.uniform(-0.02, 0.02, 3) * extent[0]
    mm = np.ix_(*(np.arange(n) * s for n, s in zip(shape, spacing, strict=True)))
    u = tuple((p - c) / r for p, c, r in zip(mm, centre, radii, strict=True))
    rho = np.sqrt(sum(axis**2 for axis in u)) + 1e-9
    unit = tuple(axis / rho for axis in u)
    # At least most of an in-plane voxel thick, so small images keep their scalp, skull and CSF.
    layer = max(0.06, 0.8 * spacing[0] / radii.min())
    bumpy = rho / (1 + 0.04 * _direction_field(unit, 4, 2.5, rng))
    return Head(mm, u, bumpy, unit, centre, radii, extent, spacing, layer)


def anatomy(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tissue labels of one head on the RAS grid: scalp, skull, brain, ventricles, eyes, neck, marker."""
    return head_anatomy(shape, spacing, rng)[0]


def head_anatomy(
    shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, Head]:
    """Tissue labels of one head (as :func:`anatomy` draws them) and where the head sits on the grid."""
    head = _head(shape, spacing, rng)
    u, rho, layer = head.u, head.rho, head.layer
    labels = np.zeros(shape, dtype=np.uint8)
    neck = (u[2] < -0.45) & ((u[0] / 0.62) ** 2 + ((u[1] + 0.1) / 0.68) ** 2 <= 1)
    labels[neck] = SOFT
    labels[rho <= 1] = SCALP
    labels[rho <= 1 - layer] = SKULL
    intracranial = rho <= 1 - 2 * layer
    labels[intracranial] = CSF
    # The brain rests on the skull base: high over the orbits, lower under the temporal lobes and
    # lowest under the cerebellum at the back.
    floor = -0.3 + rng.uniform(-0.03, 0.03) + 0.2 * u[1] - 0.25 * u[0] ** 2
    labels[intracranial & (u[2] < floor)] = SKULL
    labels[intracranial & (u[2] < floor - layer)] = SOFT
    brain = (rho <= 1 - 3 * layer) & (u[2] >= floor)
    _paint_brain(labels, brain, head, rng)
    _paint_stem(labels, u, floor, layer, rng)
    _paint_eyes(labels, head, rng)
    _paint_marker(labels, head)
    return labels, head


def _paint_brain(labels: np.ndarray, brain: np.ndarray, head: Head, rng: np.random.Generator) -> None:
    """Folded cortex and sulci around white matter, deep grey nuclei and the ventricles."""
    u, spacing = head.u, head.spacing
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    folds = _direction_field(head.unit, 10, 9.0 + labels.shape[0] / 16, rng)
    # A smooth brain needs a thick cortex for grey matter to be ~40% of it, as in a folded one.
    cortex = max(0.13 * head.radii.mean(), 1.5 * spacing[0]) * (1 + 0.4 * folds)
    labels[brain] = GREY
    labels[brain & (depth > cortex)] = WHITE
    labels[brain & (folds > 0.55) & (depth < 1.3 * cortex)] = CSF
    for side in (-1, 1):
        nucleus = (side * 0.2 + rng.normal(0, 0.01), rng.normal(0, 0.02), rng.normal(0, 0.02))
        labels[brain & _ellipsoid(u, nucleus, (0.12, 0.2, 0.14))] = DEEP_GREY
    # Ventricles widen with atrophy; at least about a voxel wide, so small volumes keep them.
    atrophy = rng.uniform(0.8, 1.6)
    voxel = 0.8 * spacing / head.radii
    half = np.maximum(np.array([0.1 * atrophy, 0.4 * min(atrophy, 1.2), 0.18 * atrophy]), voxel)
    for side in (-1, 1):
        # Banana-shaped: the horns bend down at both ends.
        bent = (u[0] - side * 1.3 * half[0], u[1], u[2] - 0.12 + 0.08 * (u[1] / half[1]) ** 2)
        labels[brain & _ellipsoid(bent, (0, 0, 0), half)] = VENTRICLE
    third = (max(0.02 * atrophy, voxel[0]), 0.14, 0.12)
    labels[brain & _ellipsoid(u, (0, -0.02, -0.04), third)] = VENTRICLE


def _paint_stem(
    labels: np.ndarray, u: tuple[np.ndarray, ...], floor: np.ndarray, layer: float, rng: np.random.Generator
) -> None:
    """The brainstem and spinal cord in their CSF, from the brain's base down the neck."""
    y0 = -0.18 + rng.normal(0, 0.02)
    radius = np.broadcast_to((u[0] / 0.13) ** 2 + ((u[1] - y0) / 0.13) ** 2, labels.shape)
    column = (u[2] < floor + 2 * layer) & (labels != BACKGROUND)
    labels[column & (radius <= (1 + 2.5 * layer) ** 2)] = CSF
    labels[column & (radius <= 1)] = STEM


def _paint_eyes(labels: np.ndarray, head: Head, rng: np.random.Generator) -> None:
    """Two eyeballs in orbital fat, in front of and below the brain."""
    eye_radius = 0.13 * head.radii.mean()
    height = -0.47 + rng.normal(0, 0.02)
    for side in (-1, 1):
        eye = head.centre + head.radii * np.array([side * 0.33, 0.78, height])
        fat = _ellipsoid(head.mm, eye, (1.5 * eye_radius,) * 3) & (labels != GREY) & (labels != WHITE)
        labels[fat] = SCALP
        labels[fat & _ellipsoid(head.mm, eye, (eye_radius,) * 3)] = EYE


def _paint_marker(labels: np.ndarray, head: Head) -> None:
    """A fiducial capsule on the right forehead, a voxel or so clear of the scalp."""
    capsule = np.array([1.0, 1.0, 2.0]) * max(1.5, 0.025 * head.extent[0])
    direction = _MARKER_DIRECTION / np.linalg.norm(_MARKER_DIRECTION)
    # The scalp bulges up to 4% beyond the ellipsoid; clear that, then a voxel, then the capsule.
    outward = 1.04 + (1.2 * head.spacing[0] + capsule[0]) / head.radii.min()
    position = head.centre + head.radii * direction * outward
    position = np.clip(position, capsule + head.spacing, head.extent - capsule - head.spacing)
    labels[_ellipsoid(head.mm, position, capsule)] = MARKER


def tissue_levels(rng: np.random.Generator) -> np.ndarray:
    """FLAIR brightness of each tissue label: fluid dark, grey above white matter, fat bright."""
    white = rng.uniform(320, 400)
    levels = np.zeros(MARKER + 1)
    levels[SCALP] = rng.uniform(450, 620)
    levels[SKULL] = rng.uniform(20, 50)
    levels[CSF] = rng.uniform(50, 90)
    levels[GREY] = white * rng.uniform(1.18, 1.32)
    levels[WHITE] = white
    levels[DEEP_GREY] = white * rng.uniform(1.05, 1.2)
    levels[VENTRICLE] = levels[CSF] * rng.uniform(0.8, 1.0)
    levels[STEM] = white * rng.uniform(1.0, 1.1)
    levels[SOFT] = rng.uniform(180, 260)
    levels[EYE] = rng.uniform(60, 110)
    levels[MARKER] = rng.uniform(1600, 1800)
    return levels


def tissue_texture(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative tissue texture: smooth noise of about 1.5 mm, 4% strong."""
    field = ndimage.gaussian_filter(rng.normal(0, 1, shape), 1.5 / spacing)
    return 1 + 0.04 * field / (field.std() + 1e-8)
