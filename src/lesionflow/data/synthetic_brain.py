"""The built-in 3D dataset: FLAIR-like brain MRI volumes with white-matter lesions, as NIfTI.

Everything follows from the seed; it must never read the clock, the environment or global RNG state.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nibabel import orientations
from scipy import ndimage
from scipy.spatial.transform import Rotation

from lesionflow.data.brain_anatomy import (
    BRAIN_TISSUE,
    VENTRICLE,
    WHITE,
    anatomy,
    subject_grid,
    tissue_levels,
    tissue_texture,
)
from lesionflow.data.cohort import check_parameters, images_per_subject, lesion_free_flags
from lesionflow.io.geometry import Geometry
from lesionflow.io.readers import write_image, write_mask
from lesionflow.pipeline import artifacts

# Below 24 voxels the skull, cortex and ventricles no longer fit; above 256 a volume would be
# larger than a real head at 1 mm and slow to draw.
MIN_IMAGE_SIZE = 24
MAX_IMAGE_SIZE = 256
# Lesion volumes are drawn log-uniformly so a few tiny (3-10 voxel) lesions exist, but most lesion
# voxels sit in lesions of tens to a few hundred voxels, as in multiple sclerosis or small vessel
# disease. The largest is also held to a fraction of the white matter at small image sizes.
MIN_LESION_VOXELS = 3
MAX_LESION_VOXELS = 300
MAX_LESION_WHITE_MATTER_FRACTION = 0.05
MAX_LESIONS_PER_SUBJECT = 10
MAX_SESSIONS_PER_SUBJECT = 2
# Head tilt in the scanner that the slice planning follows: the affine is oblique by this much.
MAX_OBLIQUITY_DEGREES = 5.0
MAX_TRANSLATION_MM = 20.0
CANONICAL_AXCODES = ("R", "A", "S")
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))


@dataclass(frozen=True)
class Lesion:
    """One lesion on the subject's canonical grid, stored in its bounding box."""

    box: tuple[slice, ...]
    mask: np.ndarray
    weight: np.ndarray  # how much of the lesion's brightness each voxel of the box takes, in [0, 1]
    contrast: float  # lesion brightness over white matter brightness


@dataclass(frozen=True)
class Subject:
    """What the sessions of one subject share: anatomy on a RAS grid, tissue contrast, lesions."""

    labels: np.ndarray  # uint8 tissue labels, axes R, A, S
    spacing: np.ndarray
    levels: np.ndarray  # FLAIR brightness of each tissue label
    texture: np.ndarray  # multiplicative tissue texture around 1
    lesions: tuple[Lesion, ...]


def _lesion_centres(
    labels: np.ndarray, spacing: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Voxel indices of ``count`` lesion centres in white matter, most of them periventricular."""
    white = labels == WHITE
    # The deep white matter, unless a tiny head has none; then any white matter, or brain.
    places = (ndimage.binary_erosion(white), white, np.isin(labels, BRAIN_TISSUE))
    candidates = np.argwhere(next(place for place in places if place.any()))
    to_ventricle = ndimage.distance_transform_edt(labels != VENTRICLE, sampling=spacing)
    near = to_ventricle[tuple(candidates.T)]
    weights = 1 + 4 * np.exp(-near / (0.05 * labels.shape[0] * spacing[0]))
    return candidates[rng.choice(len(candidates), size=count, p=weights / weights.sum())]


def _lobed_field(
    coords: tuple[np.ndarray, ...], centre_mm: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """A sum of 1-4 tilted, elongated Gaussian lobes around ``centre_mm``: an irregular blob's density."""
    field = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)))
    for lobe in range(int(rng.integers(1, 5))):
        middle = centre_mm if lobe == 0 else centre_mm + rng.normal(0, 0.6 * radius, 3)
        axes = np.linalg.qr(rng.normal(0, 1, (3, 3)))[0] * (radius * rng.uniform(0.45, 1.2, 3))
        inverse = np.linalg.inv(axes)
        delta = [c - m for c, m in zip(coords, middle, strict=True)]
        # Squared distance measured along the lobe's own (tilted, unequal) axes.
        distance = sum(sum(inverse[k, j] * delta[j] for j in range(3)) ** 2 for k in range(3))
        field = field + rng.uniform(0.5, 1.0) * np.exp(-0.5 * distance)
    return field


def _connected_top(field: np.ndarray, allowed: np.ndarray, seed: tuple[int, ...], voxels: int) -> np.ndarray:
    """The connected part of ``allowed`` around ``seed`` where ``field`` is highest, of ~``voxels`` voxels.

    Connected by faces, so that one lesion is one component under any connectivity an evaluation
    uses. The region only grows as the cut falls, so the lowest cut that reaches ``voxels`` is
    found by bisection.
    """

    def region(cut: float) -> np.ndarray:
        components, _ = ndimage.label(allowed & (field >= cut))
        return (components == components[seed]) & (components > 0)

    cuts = np.sort(field[allowed])[::-1]
    low, high = 0, len(cuts) - 1
    while low < high:
        middle = (low + high) // 2
        if region(cuts[middle]).sum() >= voxels:
            high = middle
        else:
            low = middle + 1
    return region(cuts[low])


def _lesion(
    labels: np.ndarray, spacing: np.ndarray, centre: np.ndarray, voxels: int, rng: np.random.Generator
) -> Lesion:
    """An irregular white matter lesion of about ``voxels`` voxels grown from ``centre``."""
    radius = (3 * voxels * np.prod(spacing) / (4 * np.pi)) ** (1 / 3)
    reach = np.ceil(3 * radius / spacing + 2).astype(int)
    box = tuple(
        slice(max(0, c - r), min(n, c + r + 1)) for c, r, n in zip(centre, reach, labels.shape, strict=True)
    )
    coords = np.ix_(*(np.arange(b.start, b.stop) * s for b, s in zip(box, spacing, strict=True)))
    field = _lobed_field(coords, centre * spacing, radius, rng)
    seed = tuple(int(c - b.start) for c, b in zip(centre, box, strict=True))
    mask = _connected_top(field, labels[box] == WHITE, seed, voxels)
    if mask.sum() < MIN_LESION_VOXELS:
        # Only in heads too small for white matter around every centre.
        mask = _connected_top(field, np.isin(labels[box], BRAIN_TISSUE), seed, voxels)
    low, high = field[mask].min(), field[mask].max()
    # Brightest where the lobes are densest, still clearly bright at the edge.
    weight = np.where(mask, 0.55 + 0.45 * (field - low) / (high - low + 1e-12), 0.0)
    return Lesion(box, mask, weight, float(rng.uniform(1.6, 2.2)))


def _lesions(labels: np.ndarray, spacing: np.ndarray, rng: np.random.Generator) -> tuple[Lesion, ...]:
    """The subject's 1 to 10 lesions, in the order they appear over sessions."""
    count = int(rng.integers(1, MAX_LESIONS_PER_SUBJECT + 1))
    white_voxels = int((labels == WHITE).sum())
    largest = np.clip(
        MAX_LESION_WHITE_MATTER_FRACTION * white_voxels, 2 * MIN_LESION_VOXELS, MAX_LESION_VOXELS
    )
    volumes = np.exp(rng.uniform(np.log(MIN_LESION_VOXELS), np.log(largest), count))
    centres = _lesion_centres(labels, spacing, count, rng)
    return tuple(
        _lesion(labels, spacing, centre, round(volume), rng)
        for centre, volume in zip(centres, volumes, strict=True)
    )


def _subject(size: int, rng: np.random.Generator) -> Subject:
    """A new subject: grid, anatomy, tissue contrast, texture and lesions, in that draw order."""
    shape, spacing = subject_grid(size, rng)
    labels = anatomy(shape, spacing, rng)
    return Subject(
        labels=labels,
        spacing=spacing,
        levels=tissue_levels(rng),
        texture=tissue_texture(shape, spacing, rng),
        lesions=_lesions(labels, spacing, rng),
    )


def _lesions_shown(flags: list[bool], n_lesions: int, rng: np.random.Generator) -> list[int]:
    """How many of the subject's lesions each session shows: none if lesion-free, never fewer later."""
    n_positive = flags.count(False)
    counts = sorted(int(c) for c in rng.integers(1, n_lesions + 1, n_positive))
    if counts:
        counts[-1] = n_lesions
    return [0] * (len(flags) - n_positive) + counts


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative receive-coil field, within about +-20%."""
    grid = np.ix_(*(np.linspace(-1, 1, n) for n in shape))
    log_field = sum(rng.normal(0, 0.08) * g + rng.normal(0, 0.05) * g**2 for g in grid)
    return np.exp(np.clip(log_field, -0.2, 0.2))


def render_session(
    subject: Subject, lesions: Sequence[Lesion], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One session of ``subject`` showing ``lesions``, on its RAS grid: (int16 FLAIR-like image, bool mask).

    The subject's own ``lesions`` are ignored: a session shows the ones it is given.
    """
    image = subject.levels[subject.labels] * subject.texture
    mask = np.zeros(subject.labels.shape, dtype=bool)
    lesion_level = subject.levels[WHITE]
    for lesion in lesions:
        patch = image[lesion.box]
        image[lesion.box] = patch * (1 - lesion.weight) + lesion.contrast * lesion_level * lesion.weight
        mask[lesion.box] |= lesion.mask
    # Partial volume: each voxel averages about half a millimetre around its centre.
    image = ndimage.gaussian_filter(image, 0.6 / subject.spacing)
    image *= _bias_field(image.shape, rng) * rng.uniform(0.9, 1.1)
    # Magnitude images have Rician noise: the background is noisy and never negative.
    sigma = rng.uniform(0.02, 0.035) * lesion_level
    image = np.hypot(image + rng.normal(0, sigma, image.shape), rng.normal(0, sigma, image.shape))
    return np.clip(np.round(image), 0, np.iinfo(np.int16).max).astype(np.int16), mask


def _random_axcodes(rng: np.random.Generator) -> tuple[str, ...]:
    """Any of the 48 axis orders and directions a scanner or converter may store a volume in."""
    return tuple(
        _AXIS_LETTERS[axis][int(positive)]
        for axis, positive in zip(rng.permutation(3), rng.integers(0, 2, 3), strict=True)
    )


def _canonical_affine(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Voxel-to-world of the RAS grid: slightly oblique, centred near the scanner's isocentre."""
    angles = rng.uniform(-MAX_OBLIQUITY_DEGREES, MAX_OBLIQUITY_DEGREES, 3)
    tilt = Rotation.from_euler("xyz", angles, degrees=True)
    linear = tilt.as_matrix() @ np.diag(spacing)
    affine = np.eye(4)
    affine[:3, :3] = linear
    centre = (np.array(shape) - 1) / 2
    affine[:3, 3] = rng.uniform(-MAX_TRANSLATION_MM, MAX_TRANSLATION_MM, 3) - linear @ centre
    return affine


def scan_layout(
    shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, tuple[str, ...]]:
    """How one scan of a RAS grid is stored: its slightly oblique affine, and a random axis order."""
    affine = _canonical_affine(shape, spacing, rng)
    return affine, _random_axcodes(rng)


def stored_volume(
    array: np.ndarray, affine: np.ndarray, axcodes: tuple[str, ...]
) -> tuple[np.ndarray, Geometry]:
    """A RAS-grid ``array`` laid out in ``axcodes`` order, with the geometry that keeps it in place."""
    transform = orientations.ornt_transform(
        orientations.axcodes2ornt(CANONICAL_AXCODES), orientations.axcodes2ornt(axcodes)
    )
    stored_affine = affine @ orientations.inv_ornt_aff(transform, array.shape)
    stored = orientations.apply_orientation(array, transform)
    spacing = tuple(float(s) for s in np.linalg.norm(stored_affine[:3, :3], axis=0))
    return stored, Geometry(stored.shape, spacing, stored_affine)


def generate_brain_dataset(
    out_dir: str | os.PathLike,
    n_images: int,
    image_size: int,
    lesion_free_fraction: float,
    seed: int,
) -> Path:
    """Write ``n_images`` synthetic FLAIR-like brain volumes, masks and ``manifest.csv``; return its path.

    Subjects have 1 or 2 sessions (ids ``0042_1``, ``0042_2``) sharing anatomy, contrast and
    lesions; a later session shows the earlier one's lesions and maybe more. Volumes are
    ``image_size`` x ``image_size`` 1 mm voxels in-plane with fewer 1.5-2 mm slices, int16 in
    scanner-like units (background ~10, white matter ~350, lesions ~1.6-2.2 times brighter). Each
    is stored in a random axis order and direction with a slightly oblique affine;
    ``nibabel.as_closest_canonical`` brings every head upright in RAS, a bright fiducial capsule
    on its right forehead. Exactly ``round(lesion_free_fraction * n_images)`` volumes have no
    lesion; the others have 1 to 10 irregular white matter lesions of 3 to a few hundred voxels.
    Masks are uint8 0/1 NIfTI; manifest paths are relative to ``out_dir``.
    """
    check_parameters(
        n_images, image_size, lesion_free_fraction, seed, (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), "brain volumes"
    )
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    sizes = images_per_subject(n_images, MAX_SESSIONS_PER_SUBJECT, rng)
    lesion_free = lesion_free_flags(sizes, int(round(lesion_free_fraction * n_images)), rng)
    width = max(4, len(str(len(sizes))))

    rows = []
    for subject_number, flags in enumerate(lesion_free):
        subject_id = f"{subject_number:0{width}d}"
        subject = _subject(image_size, rng)
        for session, n_lesions in enumerate(_lesions_shown(flags, len(subject.lesions), rng), start=1):
            image_id = f"{subject_id}_{session}"
            image, mask = render_session(subject, subject.lesions[:n_lesions], rng)
            affine, axcodes = scan_layout(image.shape, subject.spacing, rng)
            image, geometry = stored_volume(image, affine, axcodes)
            mask, _ = stored_volume(mask, affine, axcodes)
            write_image(out / "images" / f"{image_id}.nii.gz", image[None], geometry)
            write_mask(out / "masks" / f"{image_id}.nii.gz", mask, geometry)
            rows.append(
                {
                    "image_id": image_id,
                    "subject": subject_id,
                    "image": f"images/{image_id}.nii.gz",
                    "mask": f"masks/{image_id}.nii.gz",
                }
            )

    manifest = out / "manifest.csv"
    artifacts.write_csv(pd.DataFrame(rows), manifest)
    return manifest
