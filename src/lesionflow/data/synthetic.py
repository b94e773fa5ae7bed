"""The built-in demo dataset: fundus-like RGB images with exudate-like lesions, look-alikes, masks.

Everything follows from the seed; it must never read the clock, the environment or global RNG state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from lesionflow.data import haemorrhages as blood
from lesionflow.data.cohort import check_parameters, images_per_subject, lesion_free_flags
from lesionflow.pipeline import artifacts

# Lesion areas are drawn log-uniformly so tiny (3-10 px) lesions exist but most pixels sit in
# lesions of tens to hundreds of pixels, like hard exudates on a real fundus photograph.
MIN_LESION_AREA = 3
MAX_LESION_AREA = 400
MAX_LESIONS_PER_IMAGE = 8
# Below this the disc, vessels and lesions no longer fit.
MIN_IMAGE_SIZE = 32
# Subjects have 1 to this many photographs (both eyes, or visits).
IMAGES_PER_SUBJECT = 3
# Bright look-alikes that are not exudates, so that a model must learn colour and shape rather
# than "bright means lesion": drusen belong to an eye (every photograph of it shows them), a
# light reflex to one photograph. Both appear on lesion-free images too.
DRUSEN_EYE_FRACTION = 0.5
REFLEX_IMAGE_FRACTION = 0.35
# Some lesion-positive images also hold a few isolated, faint specks of 3-8 pixels: the lesions
# a pooled Dice barely notices and a per-lesion F1 does.
SPECK_IMAGE_FRACTION = 0.3

# Linear RGB of the retina, the exudates and the optic disc before illumination is applied.
_EXUDATE_RGB = np.array([0.98, 0.88, 0.42])
_DISC_RGB = np.array([0.95, 0.72, 0.55])
# Drusen are paler and whiter than exudates, a light reflex whiter still.
_DRUSEN_RGB = np.array([0.94, 0.88, 0.70])
_REFLEX_RGB = np.array([1.0, 0.97, 0.92])


@dataclass(frozen=True)
class _Background:
    """What the images of one subject share: the eye's colour, illumination, disc and vessels."""

    base_rgb: np.ndarray
    centre: np.ndarray
    radius: float
    vignette: float
    gradient: np.ndarray
    disc_centre: np.ndarray
    disc_radius: float
    fovea_centre: np.ndarray
    vessel_darkening: np.ndarray  # (H, W) in [0, 1), before the per-image shift
    drusen: np.ndarray  # (N, 4): centre y, centre x, radius, strength; N may be 0


def _smooth_curve(start: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Points along a cubic Bezier curve that leaves ``start`` and wanders across the image."""
    direction = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.5, 1.1) * size
    control = [start]
    for _ in range(3):
        direction += rng.normal(0, 0.6)
        control.append(control[-1] + length / 3 * np.array([np.cos(direction), np.sin(direction)]))
    control_points = np.stack(control)
    t = np.linspace(0, 1, 4 * size)[:, None]
    weights = np.hstack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3])
    return weights @ control_points


def _vessel_darkening(size: int, disc_centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A map in [0, 1) of how much vessels darken each pixel; vessels fan out from the disc."""
    darkening = np.zeros((size, size))
    for _ in range(int(rng.integers(4, 8))):
        points = np.round(_smooth_curve(disc_centre, size, rng)).astype(int)
        inside = np.all((points >= 0) & (points < size), axis=1)
        centreline = np.ones((size, size), dtype=bool)
        centreline[points[inside, 0], points[inside, 1]] = False
        if centreline.all():
            continue
        # Distance to the centreline gives a smooth vessel profile without per-point drawing.
        distance = ndimage.distance_transform_edt(centreline)
        half_width = rng.uniform(0.6, 1.6) * size / 128
        depth = rng.uniform(0.25, 0.45)
        darkening = np.maximum(darkening, depth * np.exp(-((distance / half_width) ** 2)))
    return darkening


def _drusen(
    size: int, centre: np.ndarray, radius: float, fovea: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Round, soft deposits clustered around the macula of half the eyes: (N, 4) rows."""
    if rng.random() >= DRUSEN_EYE_FRACTION:
        return np.zeros((0, 4))
    count = int(rng.integers(3, 16))
    rows = []
    for _ in range(count):
        point = fovea + rng.normal(0, 0.25 * radius, 2)
        if np.linalg.norm(point - centre) > 0.85 * radius:
            continue
        rows.append([*point, rng.uniform(0.6, 2.2) * size / 128, rng.uniform(0.3, 0.6)])
    return np.array(rows).reshape(-1, 4)


def _subject_background(size: int, rng: np.random.Generator) -> _Background:
    centre = size / 2 + rng.normal(0, 0.015 * size, 2)
    radius = size * rng.uniform(0.44, 0.48)
    side = rng.choice([-1.0, 1.0])
    disc_centre = centre + np.array([rng.normal(0, 0.05), side * rng.uniform(0.22, 0.3)]) * size
    fovea_centre = centre + np.array([rng.normal(0, 0.03), -side * rng.uniform(0.05, 0.12)]) * size
    drusen = _drusen(size, centre, radius, fovea_centre, rng)
    return _Background(
        base_rgb=np.array(
            [rng.uniform(0.68, 0.82), rng.uniform(0.28, 0.40), rng.uniform(0.08, 0.16)]
        ),
        centre=centre,
        radius=radius,
        vignette=rng.uniform(0.25, 0.45),
        gradient=rng.normal(0, 0.12, 2),
        disc_centre=disc_centre,
        disc_radius=size * rng.uniform(0.07, 0.09),
        fovea_centre=fovea_centre,
        vessel_darkening=_vessel_darkening(size, disc_centre, rng),
        drusen=drusen,
    )


def _lesion(
    yy: np.ndarray, xx: np.ndarray, centre: np.ndarray, area: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One irregular elliptical blob of about ``area`` pixels: (mask, soft opacity)."""
    elongation = rng.uniform(1.0, 2.0)
    semi_minor = np.sqrt(area / (np.pi * elongation))
    semi_major = semi_minor * elongation
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dy * np.cos(angle) + dx * np.sin(angle)
    v = -dy * np.sin(angle) + dx * np.cos(angle)
    theta = np.arctan2(v, u)
    wobble = 1 + 0.15 * np.sin(int(rng.integers(2, 5)) * theta + rng.uniform(0, 2 * np.pi))
    r = np.sqrt((u / semi_major) ** 2 + (v / semi_minor) ** 2) / wobble
    # A small or thin blob may touch fewer than three pixel centres, or break into pieces on the
    # pixel grid: widen its outline until it is one face-connected lesion of at least 3 pixels.
    limit = 1.0
    while (mask := r <= limit).sum() < MIN_LESION_AREA or ndimage.label(mask)[1] > 1:
        limit += 0.05
    r = r / limit
    # Opaque core and a fading edge that reaches past the mask outline, as on real photographs;
    # how far it fades differs from lesion to lesion, so the outline is sharp on some, blurred
    # on others.
    softness = rng.uniform(0.3, 1.0)
    opacity = np.clip((1.0 - r) / softness + 0.5, 0.0, 1.0)
    return mask, opacity


def _lesions(
    size: int, background: _Background, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Union mask and opacity of 1 to 8 clustered, exudate-like lesions inside the field of view,
    and in some images 1 to 3 faint isolated specks."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    mask = np.zeros((size, size), dtype=bool)
    opacity = np.zeros((size, size))
    count = int(rng.integers(1, MAX_LESIONS_PER_IMAGE + 1))
    clusters = [_point_in_fov(background, rng) for _ in range(int(rng.integers(1, 3)))]
    areas = np.exp(rng.uniform(np.log(MIN_LESION_AREA), np.log(MAX_LESION_AREA), count))
    placed = [(_point_in_fov(background, rng, near=clusters[int(rng.integers(len(clusters)))]), a)
              for a in areas]
    if rng.random() < SPECK_IMAGE_FRACTION:
        specks = rng.uniform(MIN_LESION_AREA, 8, int(rng.integers(1, 4)))
        placed += [(_point_in_fov(background, rng), a) for a in specks]
    for centre, area in placed:
        lesion_mask, lesion_opacity = _lesion(yy, xx, centre, area, rng)
        mask |= lesion_mask
        contrast = rng.uniform(0.25, 0.75)
        opacity = np.maximum(opacity, contrast * lesion_opacity)
    fov = _field_of_view(size, background)
    return mask & fov, opacity * fov


def _point_in_fov(
    background: _Background, rng: np.random.Generator, near: np.ndarray | None = None
) -> np.ndarray:
    """A point well inside the field of view and off the optic disc (rejection sampling)."""
    for _ in range(1000):
        if near is None:
            point = background.centre + rng.uniform(-1, 1, 2) * background.radius * 0.8
        else:
            point = near + rng.normal(0, background.radius * 0.2, 2)
        in_fov = np.linalg.norm(point - background.centre) < background.radius * 0.82
        off_disc = np.linalg.norm(point - background.disc_centre) > background.disc_radius + 4
        if in_fov and off_disc:
            return point
    return background.centre.copy()


def _field_of_view(size: int, background: _Background) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy - background.centre[0]) ** 2 + (
        xx - background.centre[1]
    ) ** 2 <= background.radius**2


def _render(
    size: int,
    background: _Background,
    lesion_opacity: np.ndarray,
    rng: np.random.Generator,
    layers: tuple[blood.Layer, ...] = (),
) -> np.ndarray:
    """One uint8 RGB image: illuminated retina, disc, fovea, vessels, lesions (exudates, then each
    of ``layers``), then noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    # Per-image jitter around the subject's background: the same eye photographed again.
    shift = rng.normal(0, 0.01 * size, 2)
    ny = (yy - background.centre[0] - shift[0]) / background.radius
    nx = (xx - background.centre[1] - shift[1]) / background.radius
    gradient = background.gradient + rng.normal(0, 0.03, 2)
    illumination = (
        1.0 - background.vignette * (ny**2 + nx**2) + gradient[0] * ny + gradient[1] * nx
    ) * rng.uniform(0.92, 1.08)
    illumination = np.clip(illumination, 0.3, 1.3)

    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 3 * size / 128)
    texture = 1 + 0.06 * texture / (texture.std() + 1e-8)
    image = background.base_rgb * (illumination * texture)[..., None]

    disc_distance = (
        np.hypot(
            yy - background.disc_centre[0] - shift[0], xx - background.disc_centre[1] - shift[1]
        )
        / background.disc_radius
    )
    disc = 0.55 * np.clip(1.4 - disc_distance, 0, 1)
    image = image * (1 - disc[..., None]) + _DISC_RGB * illumination[..., None] * disc[..., None]

    fovea_distance = np.hypot(yy - background.fovea_centre[0], xx - background.fovea_centre[1])
    fovea = 0.3 * np.exp(-((fovea_distance / (0.07 * size)) ** 2))
    image *= (1 - fovea)[..., None]

    vessels = ndimage.shift(background.vessel_darkening, shift, order=1, mode="constant")
    # Vessels absorb more green and blue than red, so they look dark red.
    image *= 1 - vessels[..., None] * np.array([0.7, 1.0, 1.0])

    for colour, look_alike in (
        (_DRUSEN_RGB, _drusen_opacity(yy - shift[0], xx - shift[1], background.drusen)),
        (_REFLEX_RGB, _reflex_opacity(yy, xx, background, rng)),
    ):
        alpha = look_alike[..., None]
        image = image * (1 - alpha) + colour * np.clip(illumination, 0.55, 1.1)[..., None] * alpha

    lit = np.clip(illumination, 0.55, 1.1)[..., None]
    lesions = ((_EXUDATE_RGB, lesion_opacity), *((layer.rgb, layer.opacity) for layer in layers))
    for colour, opacity in lesions:
        alpha = opacity[..., None]
        image = image * (1 - alpha) + colour * lit * alpha

    image += rng.normal(0, 0.025, image.shape)
    image *= _field_of_view(size, background)[..., None]
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _drusen_opacity(yy: np.ndarray, xx: np.ndarray, drusen: np.ndarray) -> np.ndarray:
    """Soft round Gaussian spots, one per row of ``drusen`` (no edge an exudate would have)."""
    opacity = np.zeros(yy.shape)
    for y, x, radius, strength in drusen:
        spot = strength * np.exp(-(((yy - y) ** 2 + (xx - x) ** 2) / radius**2))
        opacity = np.maximum(opacity, spot)
    return opacity


def _reflex_opacity(
    yy: np.ndarray, xx: np.ndarray, background: _Background, rng: np.random.Generator
) -> np.ndarray:
    """In some photographs, one or two faint elongated streaks of reflected flash light."""
    opacity = np.zeros(yy.shape)
    if rng.random() >= REFLEX_IMAGE_FRACTION:
        return opacity
    size = yy.shape[0]
    for _ in range(int(rng.integers(1, 3))):
        centre = _point_in_fov(background, rng)
        half_length = rng.uniform(0.06, 0.2) * size
        half_width = rng.uniform(1.0, 3.0) * size / 128
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - centre[0], xx - centre[1]
        along = dy * np.cos(angle) + dx * np.sin(angle)
        across = -dy * np.sin(angle) + dx * np.cos(angle)
        streak = np.exp(-((along / half_length) ** 2) - (across / half_width) ** 2)
        opacity = np.maximum(opacity, rng.uniform(0.2, 0.45) * streak)
    return opacity


def _write_png(array: np.ndarray, path: Path) -> None:
    with artifacts.atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _with_haemorrhages(
    size: int, background: _Background, exudates: np.ndarray, opacity: np.ndarray, seed: int, index: int
) -> tuple[np.ndarray, np.ndarray, tuple[blood.Layer, ...]]:
    """A lesion-positive photograph's exudates (dropped from some photographs) and its haemorrhage
    layer (none on others), from the photograph's own random stream."""
    rng = blood.image_stream(seed, index)
    keep_exudates, bleeding = blood.lesion_types(rng)
    if not keep_exudates:
        exudates, opacity = np.zeros_like(exudates), np.zeros_like(opacity)
    if not bleeding:
        return exudates, opacity, ()
    points = [_point_in_fov(background, rng) for _ in range(blood.MAX_BLOTS)]
    layer = blood.blots(size, points, _lesion, rng, avoid=exudates)
    fov = _field_of_view(size, background)
    return exudates, opacity, (blood.Layer(layer.rgb, layer.mask & fov, layer.opacity * fov),)


def generate_dataset(
    out_dir: str | os.PathLike,
    n_images: int,
    image_size: int,
    lesion_free_fraction: float,
    seed: int,
    haemorrhages: bool = False,
) -> Path:
    """Write ``n_images`` synthetic fundus images, masks and ``manifest.csv``; return its path.

    Subjects have 1 to 3 images (ids ``0042_1``, ``0042_2``) that share colour, illumination,
    optic disc and vessels with small per-image variation. Exactly
    ``round(lesion_free_fraction * n_images)`` images have no lesion; the others have 1 to 8
    yellow exudate-like lesions of 3 to a few hundred pixels, with sharp or blurred edges, and
    some also faint isolated specks. Half the subjects' eyes show drusen (paler, round, soft
    spots) and a third of the photographs a light reflex: bright look-alikes that are not
    lesions, on lesion-free images too. Masks are 0/255 PNGs and manifest paths are relative to
    ``out_dir``.

    With ``haemorrhages``, lesion-positive photographs show exudates, dark red haemorrhage blots
    (vessels are their look-alikes) or both (:data:`haemorrhages.CLASS_PATTERN`), and masks are
    label maps: 0 background, 1 exudate, 2 haemorrhage. The photographs without haemorrhages and
    every lesion-free one are the same as without them.
    """
    check_parameters(n_images, image_size, lesion_free_fraction, seed, (MIN_IMAGE_SIZE, None), "photographs")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    sizes = images_per_subject(n_images, IMAGES_PER_SUBJECT, rng)
    by_subject = lesion_free_flags(sizes, int(round(lesion_free_fraction * n_images)), rng)
    lesion_free = [flag for flags in by_subject for flag in flags]
    width = max(4, len(str(len(sizes))))

    rows = []
    index = 0
    for subject_number, n_subject_images in enumerate(sizes):
        subject = f"{subject_number:0{width}d}"
        background = _subject_background(image_size, rng)
        for image_number in range(1, n_subject_images + 1):
            image_id = f"{subject}_{image_number}"
            if lesion_free[index]:
                mask = np.zeros((image_size, image_size), dtype=bool)
                opacity = np.zeros((image_size, image_size))
            else:
                mask, opacity = _lesions(image_size, background, rng)
            layers: tuple[blood.Layer, ...] = ()
            if haemorrhages and not lesion_free[index]:
                mask, opacity, layers = _with_haemorrhages(image_size, background, mask, opacity, seed, index)
            image = _render(image_size, background, opacity, rng, layers)
            _write_png(image, out / "images" / f"{image_id}.png")
            if haemorrhages:
                written = blood.label_map(mask, layers[0].mask if layers else np.zeros_like(mask))
            else:
                written = mask.astype(np.uint8) * 255
            _write_png(written, out / "masks" / f"{image_id}.png")
            rows.append(
                {
                    "image_id": image_id,
                    "subject": subject,
                    "image": f"images/{image_id}.png",
                    "mask": f"masks/{image_id}.png",
                }
            )
            index += 1

    manifest = out / "manifest.csv"
    artifacts.write_csv(pd.DataFrame(rows), manifest)
    return manifest
