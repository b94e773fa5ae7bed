"""Tests of the built-in synthetic dataset: deterministic, realistic enough, lesion statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from schema_settings import synthetic_settings
from scipy import ndimage

from lesionflow.data.synthetic import MAX_LESIONS_PER_IMAGE, generate_dataset
from lesionflow.pipeline.errors import LesionflowError

# The dataset the demo config generates: the schema's data.synthetic.
DEMO = synthetic_settings()


def _read(folder: Path, relative: str) -> np.ndarray:
    return np.asarray(Image.open(folder / relative))


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """The dataset the demo config generates (DEMO)."""
    folder = tmp_path_factory.mktemp("synthetic")
    manifest = generate_dataset(folder, **DEMO)
    return folder, pd.read_csv(manifest, dtype=str)


@pytest.fixture(scope="module")
def lesion_components(default_dataset) -> list[np.ndarray]:
    """Areas of the connected lesions of every image, lesion-free images giving empty arrays."""
    folder, manifest = default_dataset
    areas = []
    for relative in manifest["mask"]:
        labels, _ = ndimage.label(_read(folder, relative) > 127)
        areas.append(np.bincount(labels.ravel())[1:])
    return areas


def test_generator_is_deterministic(tmp_path):
    settings = synthetic_settings(n_images=6, image_size=48, seed=3)
    first = generate_dataset(tmp_path / "a", **settings)
    second = generate_dataset(tmp_path / "b", **settings)
    assert first.read_text() == second.read_text()
    for relative in [*pd.read_csv(first)["image"], *pd.read_csv(first)["mask"]]:
        assert (first.parent / relative).read_bytes() == (second.parent / relative).read_bytes()


def test_different_seeds_give_different_images(tmp_path):
    first = generate_dataset(tmp_path / "a", **synthetic_settings(n_images=2, image_size=48, seed=1))
    second = generate_dataset(tmp_path / "b", **synthetic_settings(n_images=2, image_size=48, seed=2))
    relative = pd.read_csv(first)["image"].iloc[0]
    assert not np.array_equal(_read(first.parent, relative), _read(second.parent, relative))


def test_writes_exactly_n_images_with_matching_files_and_relative_paths(tmp_path):
    manifest_path = generate_dataset(tmp_path, **synthetic_settings(n_images=7, image_size=40))
    manifest = pd.read_csv(manifest_path, dtype=str)
    assert manifest_path == tmp_path / "manifest.csv"
    assert list(manifest.columns) == ["image_id", "subject", "image", "mask"]
    assert len(manifest) == 7 and manifest["image_id"].is_unique
    for row in manifest.itertuples():
        assert row.image == f"images/{row.image_id}.png" and row.mask == f"masks/{row.image_id}.png"
        image, mask = _read(tmp_path, row.image), _read(tmp_path, row.mask)
        assert image.shape == (40, 40, 3) and image.dtype == np.uint8
        assert mask.shape == (40, 40) and set(np.unique(mask)) <= {0, 255}


def test_subjects_have_one_to_three_images_and_ids_name_their_subject(default_dataset):
    _, manifest = default_dataset
    assert len(manifest) == DEMO["n_images"]
    assert manifest["subject"].str.fullmatch(r"\d{4}").all()
    assert (manifest["image_id"].str.split("_").str[0] == manifest["subject"]).all()
    per_subject = manifest.groupby("subject").size()
    assert per_subject.between(1, 3).all()
    assert (per_subject > 1).any() and (per_subject == 1).any()


def test_lesion_free_fraction_between_30_and_50_percent(lesion_components):
    free = np.mean([areas.size == 0 for areas in lesion_components])
    assert 0.3 <= free <= 0.5
    assert free == pytest.approx(DEMO["lesion_free_fraction"])


def test_lesion_free_fraction_setting_is_met_exactly(tmp_path):
    manifest = generate_dataset(
        tmp_path, **synthetic_settings(n_images=20, image_size=32, lesion_free_fraction=0.25)
    )
    masks = [_read(tmp_path, m) for m in pd.read_csv(manifest)["mask"]]
    assert sum(not mask.any() for mask in masks) == 5


def test_lesion_sizes_span_few_to_hundreds_of_pixels(lesion_components):
    areas = np.concatenate(lesion_components)
    assert areas.min() >= 3 and areas.min() <= 5
    assert areas.max() >= 300
    tiny = areas <= 10
    # Tiny lesions exist but neither dominate the count nor the lesion pixels.
    assert 10 <= tiny.sum() and tiny.mean() < 0.4
    assert areas[tiny].sum() / areas.sum() < 0.05


def test_positive_images_have_one_to_eight_lesions_and_a_few_specks(lesion_components):
    counts = np.array([areas.size for areas in lesion_components if areas.size])
    # Overlapping lesions merge into one component, so the count can only fall below the drawn one.
    assert counts.min() == 1 and 6 <= counts.max() <= MAX_LESIONS_PER_IMAGE + 3


def _brightest_spot_off_the_disc(image: np.ndarray) -> float:
    """Green top-hat peak of one image, away from the optic disc and the field-of-view rim."""
    green = image[..., 1]
    yy, xx = np.indices(green.shape)
    disc = np.unravel_index(np.argmax(ndimage.gaussian_filter(green, 4)), green.shape)
    away = np.hypot(yy - disc[0], xx - disc[1]) > 18
    inside = ndimage.binary_erosion(image.max(axis=2) > 0, iterations=4)
    return float(np.where(away & inside, ndimage.white_tophat(green, size=9), 0).max())


def test_lesion_free_images_hold_look_alikes_as_bright_as_lesions(default_dataset, lesion_contrasts):
    folder, manifest = default_dataset
    free = [
        _read(folder, row.image).astype(float) / 255
        for row in manifest.itertuples()
        if not (_read(folder, row.mask) > 127).any()
    ]
    peaks = np.array([_brightest_spot_off_the_disc(image) for image in free])
    # Drusen and light reflexes: brightness alone cannot tell a lesion-free image from one with
    # lesions (without them, under a fifth of lesion-free images reach the median lesion).
    assert np.mean(peaks > np.median(lesion_contrasts)) > 0.5


def test_field_of_view_is_black_outside_and_lesions_lie_inside(default_dataset):
    folder, manifest = default_dataset
    for row in manifest.head(30).itertuples():
        image, mask = _read(folder, row.image), _read(folder, row.mask) > 127
        assert image[0, 0].max() == 0 and image[-1, -1].max() == 0
        assert (image[mask].max(axis=1) > 0).all()
        assert image[DEMO["image_size"] // 2, DEMO["image_size"] // 2].max() > 0


@pytest.fixture(scope="module")
def lesion_contrasts(default_dataset) -> np.ndarray:
    """Each lesion's mean green minus that of a ring around it."""
    folder, manifest = default_dataset
    contrasts = []
    for row in manifest.itertuples():
        mask = _read(folder, row.mask) > 127
        green = _read(folder, row.image)[..., 1].astype(float) / 255
        labels, count = ndimage.label(mask)
        for lesion in (labels == k for k in range(1, count + 1)):
            ring = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(mask)
            contrasts.append(green[lesion].mean() - green[ring].mean())
    return np.array(contrasts)


def test_lesions_are_distinctly_but_not_trivially_brighter_and_yellower(
    default_dataset, lesion_contrasts
):
    folder, manifest = default_dataset
    red_minus_blue, background_spread = [], []
    for row in manifest.itertuples():
        mask = _read(folder, row.mask) > 127
        image = _read(folder, row.image).astype(float) / 255
        fov = image.max(axis=2) > 0
        green = image[fov & ~ndimage.binary_dilation(mask, iterations=2), 1]
        background_spread.append(np.quantile(green, 0.95) - np.quantile(green, 0.05))
        if mask.any():
            red_minus_blue.append(image[mask, 0].mean() - image[mask, 2].mean())
    contrasts = lesion_contrasts
    assert contrasts.min() > 0.03 and 0.12 < np.median(contrasts) < 0.3
    assert np.mean(red_minus_blue) > 0.2  # yellow: much more red than blue
    # Illumination, vessels and noise spread the retina's own green as widely as a faint
    # lesion stands out, so no single global threshold separates lesion from background.
    assert np.quantile(contrasts, 0.1) < np.median(background_spread) * 1.5


def test_images_of_one_subject_share_their_background(default_dataset):
    folder, manifest = default_dataset
    images = {r.image_id: _read(folder, r.image).astype(float) for r in manifest.itertuples()}
    same, different = [], []
    subjects = manifest.groupby("subject")["image_id"].apply(list)
    pairs = [ids[:2] for ids in subjects if len(ids) > 1][:20]
    for (a, b), (c, _) in zip(pairs, pairs[1:] + pairs[:1], strict=True):
        same.append(np.abs(images[a] - images[b]).mean())
        different.append(np.abs(images[a] - images[c]).mean())
    assert np.mean(same) < 0.6 * np.mean(different)


@pytest.mark.parametrize(
    ("name", "value"),
    [("n_images", 0), ("image_size", 16), ("lesion_free_fraction", 1.5), ("seed", -1)],
)
def test_invalid_parameter_error_names_the_setting(tmp_path, name, value):
    with pytest.raises(LesionflowError, match=rf"data\.synthetic\.{name}"):
        generate_dataset(tmp_path, **synthetic_settings(**{name: value}))
    assert not (tmp_path / "manifest.csv").exists()
