"""The built-in regression dataset: FLAIR-like brain volumes with ALD-like lesions and a Loes-like score.

Everything follows from the seed; it must never read the clock, the environment or global RNG state.

Each subject's head is drawn as for the ``brain`` dataset (``brain_anatomy``), and its named
regions (``loes_regions.region_map``) are laid on it. The disease then spreads as in
X-linked adrenoleukodystrophy: a confluent, nearly symmetric lesion that starts in the splenium
of the corpus callosum and the periventricular parieto-occipital white matter and grows outwards
(in some subjects from the genu into the frontal white matter instead), reaching the internal
capsules, the temporal lobes, the deep grey nuclei, the cerebellum and the brainstem late. Each
voxel of the regions gets a time at which the lesion reaches it; a visit's lesion is every voxel
reached by its extent, so a later visit keeps the earlier lesion and may grow it.

The score written is ``loes_regions.loes_score`` of the lesion mask written over the region map
written (``regions/<id>.nii.gz``): a fixed rule of what the volume shows (docs/loes-score.md).
Each subject's target severity is drawn first, skewed as real Loes scores are (most patients
mild, high scores rare), and its lesion's extent is the smallest that scores at least that much.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from lesionflow.data.brain_anatomy import (
    VENTRICLE,
    Head,
    head_anatomy,
    subject_grid,
    tissue_levels,
    tissue_texture,
)
from lesionflow.data.cohort import check_parameters, lesion_free_flags
from lesionflow.data.loes_regions import REGIONS, loes_score, part_points, region_map
from lesionflow.data.synthetic_brain import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    Lesion,
    Subject,
    render_session,
    scan_layout,
    stored_volume,
)
from lesionflow.io.readers import write_image, write_mask
from lesionflow.pipeline import artifacts

# About a third of the subjects come back for a second visit.
SECOND_VISIT_SHARE = 1 / 3
# Where the disease starts, in head-normalised coordinates (x right, y anterior, z superior): the
# splenium in the common posterior pattern, the genu in the rarer frontal one.
POSTERIOR_ORIGIN = np.array([0.0, -0.35, 0.12])
FRONTAL_ORIGIN = np.array([0.0, 0.35, 0.12])
FRONTAL_SHARE = 0.15
ORIGIN_JITTER = 0.03
# Lesions spread further front to back than sideways or up and down in the same time.
SPREAD_RATES = np.array([0.9, 1.15, 0.9])
SPREAD_RATE_JITTER = 0.1
# One hemisphere leads by up to this share of the spread, so mild lesions are often unilateral.
MAX_ASYMMETRY = 0.08
# Periventricular white matter goes first, subcortical (far from the ventricles) last: time added
# per head radius of distance from the ventricles.
PERIVENTRICULAR_DELAY = 0.5
# Regions the disease reaches late (time added), as the corticospinal tracts, the deep grey and
# the cerebellum are involved in advanced disease only.
REGION_DELAYS = {
    "temporal_white_matter": 0.1,
    "internal_capsule": 0.1,
    "basal_ganglia_thalamus": 0.25,
    "cerebellar_white_matter": 0.3,
    "brainstem": 0.35,
}
# Irregular margins: smooth noise in the arrival time, about 1.5 mm across.
MARGIN_NOISE = 0.05
MARGIN_NOISE_MM = 1.5
# Target severities: most patients mild (0.5 plus an exponential tail), a share severe (10 plus a
# shorter tail), none beyond MAX_TARGET.
MILD_MEAN_EXCESS = 2.0
SEVERE_SHARE = 0.15
SEVERE_FROM = 10.0
SEVERE_MEAN_EXCESS = 5.0
MAX_TARGET = 30.0
MIN_TARGET = 0.5
# An earlier visit shows this share of the later visit's target, or the same lesion.
FIRST_VISIT_SHARE = (0.3, 1.0)
UNCHANGED_SHARE = 0.25
# Even the mildest lesion is a visible blob: at least this many voxels, or this share of the
# regions' voxels in larger heads (about 15 voxels at image size 40).
MIN_LESION_VOXELS = 10
MIN_LESION_SHARE = 0.005
# Lesion brightness over white matter, and how much of it the lesion's rim (weight) takes: the
# core, well inside the extent, is brightest.
LESION_CONTRAST = (1.8, 2.4)
RIM_WEIGHT = 0.85
CORE_DEPTH = 0.15


@dataclass(frozen=True)
class _Patient:
    """What the visits of one subject share: anatomy and contrast, regions, the disease's spread."""

    subject: Subject  # anatomy, tissue levels and texture; its own lesions are not used
    regions: np.ndarray  # uint8 region map (loes_regions.region_map)
    arrival: np.ndarray  # when the lesion reaches each voxel; infinite outside the regions
    contrast: float


def _visits_per_subject(n_images: int, rng: np.random.Generator) -> list[int]:
    """Visits per subject (1, or 2 for about a third of them) adding up to exactly ``n_images``."""
    visits: list[int] = []
    while sum(visits) < n_images:
        visits.append(2 if rng.random() < SECOND_VISIT_SHARE else 1)
    visits[-1] -= sum(visits) - n_images
    return visits


def _smooth_noise(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(0, 1, shape), MARGIN_NOISE_MM / spacing)
    return field / (field.std() + 1e-12)


def _arrival(labels: np.ndarray, head: Head, regions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """When the disease reaches each voxel of the regions (infinite elsewhere), from one origin."""
    origin = POSTERIOR_ORIGIN if rng.random() >= FRONTAL_SHARE else FRONTAL_ORIGIN
    origin = origin + rng.normal(0, ORIGIN_JITTER, 3) * np.array([0.3, 1.0, 1.0])
    rates = SPREAD_RATES * rng.uniform(1 - SPREAD_RATE_JITTER, 1 + SPREAD_RATE_JITTER, 3)
    distance = np.sqrt(sum(((u - o) / r) ** 2 for u, o, r in zip(head.u, origin, rates, strict=True)))
    lead = 1 + rng.uniform(-MAX_ASYMMETRY, MAX_ASYMMETRY) * np.sign(head.u[0])
    from_ventricles = ndimage.distance_transform_edt(labels != VENTRICLE, sampling=head.spacing)
    delays = np.zeros(len(REGIONS) + 1)
    for index, region in enumerate(REGIONS):
        delays[index + 1] = REGION_DELAYS.get(region.name, 0.0)
    region_index = np.where(regions > 0, (regions.astype(int) + 1) // 2, 0)
    arrival = (
        distance * lead
        + PERIVENTRICULAR_DELAY * from_ventricles / head.radii.mean()
        + delays[region_index]
        + MARGIN_NOISE * _smooth_noise(labels.shape, head.spacing, rng)
    )
    return np.where(regions > 0, arrival, np.inf)


def _patient(size: int, rng: np.random.Generator) -> _Patient:
    """A new subject: grid, anatomy, contrast, texture, regions and spread, in that draw order."""
    shape, spacing = subject_grid(size, rng)
    labels, head = head_anatomy(shape, spacing, rng)
    subject = Subject(labels, spacing, tissue_levels(rng), tissue_texture(shape, spacing, rng), ())
    regions = region_map(labels, head)
    arrival = _arrival(labels, head, regions, rng)
    return _Patient(subject, regions, arrival, float(rng.uniform(*LESION_CONTRAST)))


def _severity(rng: np.random.Generator) -> float:
    """A subject's target score at its last visit: mild mostly, severe in SEVERE_SHARE of subjects."""
    if rng.random() < SEVERE_SHARE:
        return min(MAX_TARGET, SEVERE_FROM + rng.exponential(SEVERE_MEAN_EXCESS))
    return min(MAX_TARGET, MIN_TARGET + rng.exponential(MILD_MEAN_EXCESS))


def _visit_targets(flags: list[bool], rng: np.random.Generator) -> list[float]:
    """Target score of each visit: 0 when lesion-free, never lower at a later visit."""
    last = _severity(rng)
    earlier = last if rng.random() < UNCHANGED_SHARE else last * rng.uniform(*FIRST_VISIT_SHARE)
    targets = [max(MIN_TARGET, earlier)] * (len(flags) - 1) + [last]
    return [0.0 if free else target for free, target in zip(flags, targets, strict=True)]


def _extent(patient: _Patient, target: float) -> float:
    """The smallest extent whose lesion scores at least ``target`` and is big enough to see.

    The whole of the regions if no extent scores ``target``; none (-inf) for a target of 0.
    """
    if target <= 0:
        return -np.inf
    times = np.sort(patient.arrival[np.isfinite(patient.arrival)])
    smallest = max(MIN_LESION_VOXELS, round(MIN_LESION_SHARE * len(times)))
    visible = times[min(smallest, len(times)) - 1]
    times = np.unique(times)
    low, high = 0, len(times) - 1
    while low < high:
        middle = (low + high) // 2
        if part_points(patient.arrival <= times[middle], patient.regions).sum() >= target:
            high = middle
        else:
            low = middle + 1
    return float(max(times[low], visible))


def _lesion(patient: _Patient, extent: float) -> Lesion:
    """The lesion reached by ``extent``, brightest in its core, as one box over the whole grid."""
    mask = patient.arrival <= extent
    depth = np.clip((extent - patient.arrival) / CORE_DEPTH, 0.0, 1.0)
    weight = np.where(mask, RIM_WEIGHT + (1 - RIM_WEIGHT) * depth, 0.0)
    box = tuple(slice(0, n) for n in mask.shape)
    return Lesion(box, mask, weight, patient.contrast)


def generate_loes_dataset(
    out_dir: str | os.PathLike,
    n_images: int,
    image_size: int,
    lesion_free_fraction: float,
    seed: int,
) -> Path:
    """Write ``n_images`` brain volumes with ALD-like lesions, masks, region maps and ``manifest.csv``.

    Returns the manifest's path. Volumes, masks and their storage (random axis order, slightly
    oblique affine, thick slices) are as ``generate_brain_dataset`` writes them;
    ``regions/<id>.nii.gz`` holds each volume's region map (uint8 part numbers, see
    ``loes_regions.PART_NAMES``) in the same geometry. The manifest has columns ``image_id,
    subject, image, mask, visit, loes_score`` (paths relative to ``out_dir``, visit "1" or "2").
    Exactly ``round(lesion_free_fraction * n_images)`` volumes are lesion-free and score 0; the
    others score 0.5 to 34 (see docs/loes-score.md), and a second visit never scores lower.
    """
    check_parameters(
        n_images, image_size, lesion_free_fraction, seed, (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), "brain volumes"
    )
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    visits = _visits_per_subject(n_images, rng)
    lesion_free = lesion_free_flags(visits, int(round(lesion_free_fraction * n_images)), rng)
    width = max(4, len(str(len(visits))))

    rows = []
    for subject_number, flags in enumerate(lesion_free):
        subject_id = f"{subject_number:0{width}d}"
        patient = _patient(image_size, rng)
        for visit, target in enumerate(_visit_targets(flags, rng), start=1):
            image_id = f"{subject_id}_{visit}"
            lesion = _lesion(patient, _extent(patient, target))
            image, mask = render_session(patient.subject, [lesion], rng)
            affine, axcodes = scan_layout(image.shape, patient.subject.spacing, rng)
            stored_image, geometry = stored_volume(image, affine, axcodes)
            write_image(out / "images" / f"{image_id}.nii.gz", stored_image[None], geometry)
            stored_mask, _ = stored_volume(mask, affine, axcodes)
            write_mask(out / "masks" / f"{image_id}.nii.gz", stored_mask, geometry)
            stored_regions, _ = stored_volume(patient.regions, affine, axcodes)
            write_image(out / "regions" / f"{image_id}.nii.gz", stored_regions[None], geometry)
            rows.append(
                {
                    "image_id": image_id,
                    "subject": subject_id,
                    "image": f"images/{image_id}.nii.gz",
                    "mask": f"masks/{image_id}.nii.gz",
                    "visit": str(visit),
                    "loes_score": loes_score(mask, patient.regions),
                }
            )

    manifest = out / "manifest.csv"
    artifacts.write_csv(pd.DataFrame(rows), manifest)
    return manifest
