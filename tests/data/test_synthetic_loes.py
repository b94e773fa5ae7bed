"""Tests of the built-in regression dataset: layout, the Loes-like score rule, its skew, visits."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from lesionflow.data import loes_regions
from lesionflow.data.brain_anatomy import head_anatomy, subject_grid
from lesionflow.data.loes_regions import MAX_SCORE, PART_NAMES, loes_score, part_points, region_map
from lesionflow.data.synthetic_loes import generate_loes_dataset
from lesionflow.io.readers import read_image, read_mask
from lesionflow.pipeline.errors import LesionflowError

N_IMAGES = 12
IMAGE_SIZE = 32
LESION_FREE_FRACTION = 0.25
COLUMNS = ["image_id", "subject", "image", "mask", "visit", "loes_score"]


def _generate(folder: Path, **changes) -> Path:
    settings = {
        "n_images": N_IMAGES,
        "image_size": IMAGE_SIZE,
        "lesion_free_fraction": LESION_FREE_FRACTION,
        "seed": 3,
        **changes,
    }
    return generate_loes_dataset(folder, **settings)


def _region_path(image_id: str) -> str:
    return f"regions/{image_id}.nii.gz"


def _rule_by_hand(lesion: np.ndarray, regions: np.ndarray) -> float:
    """docs/loes-score.md's rule, written out part by part in floating point."""
    total = 0.0
    for part, maximum in enumerate(loes_regions.PART_MAXIMA, start=1):
        voxels = regions == part
        if not voxels.any():
            continue
        fraction = (lesion & voxels).sum() / voxels.sum()
        if fraction >= 0.1:
            total += min(maximum, math.ceil(2 * maximum * fraction - 1e-9) / 2)
    return total


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("loes")
    return folder, pd.read_csv(_generate(folder), dtype={"subject": str, "visit": str})


@pytest.fixture(scope="module")
def volumes(dataset) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every volume read in RAS by lesionflow's readers: image id -> (image, bool mask, region map)."""
    folder, manifest = dataset
    read = {}
    for row in manifest.itertuples():
        image = read_image(folder / row.image).array[0]
        mask = read_mask(folder / row.mask).array
        regions = read_image(folder / _region_path(row.image_id)).array[0].astype(np.uint8)
        read[row.image_id] = (image, mask, regions)
    return read


def test_manifest_has_the_regression_columns_and_relative_nifti_paths(dataset):
    folder, manifest = dataset
    assert list(manifest.columns) == COLUMNS
    assert len(manifest) == N_IMAGES and manifest["image_id"].is_unique
    assert (manifest["image_id"] == manifest["subject"] + "_" + manifest["visit"]).all()
    assert set(manifest["visit"]) <= {"1", "2"}
    assert pd.api.types.is_float_dtype(manifest["loes_score"])
    for row in manifest.itertuples():
        assert row.image == f"images/{row.image_id}.nii.gz" and row.mask == f"masks/{row.image_id}.nii.gz"
        assert (folder / row.image).is_file() and (folder / _region_path(row.image_id)).is_file()


def test_masks_and_region_maps_are_binary_and_aligned_with_their_images(dataset):
    folder, manifest = dataset
    for row in manifest.itertuples():
        image, mask = nib.load(folder / row.image), nib.load(folder / row.mask)
        regions = nib.load(folder / _region_path(row.image_id))
        assert image.get_data_dtype() == np.int16 and mask.get_data_dtype() == np.uint8
        assert image.shape == mask.shape == regions.shape and len(image.shape) == 3
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        assert np.asarray(regions.dataobj).max() <= len(PART_NAMES)
        np.testing.assert_array_equal(image.affine, mask.affine)
        np.testing.assert_array_equal(image.affine, regions.affine)


def test_volumes_are_stored_obliquely_in_varied_axis_orders_with_thick_slices(dataset):
    folder, manifest = dataset
    volumes = [nib.load(folder / relative) for relative in manifest["image"]]
    assert len({nib.aff2axcodes(volume.affine) for volume in volumes}) >= 3
    assert all(0 < np.degrees(nib.affines.obliquity(volume.affine)).max() < 10 for volume in volumes)
    assert all(1.5 <= max(volume.header.get_zooms()) <= 2.0 for volume in volumes)


def test_lesion_free_volumes_score_zero_and_every_other_volume_scores_above_zero(dataset, volumes):
    _, manifest = dataset
    empty = manifest["image_id"].map(lambda image_id: not volumes[image_id][1].any())
    assert empty.sum() == round(LESION_FREE_FRACTION * N_IMAGES)
    assert (manifest.loc[empty, "loes_score"] == 0).all()
    assert (manifest.loc[~empty, "loes_score"] > 0).all()


def test_score_is_the_documented_rule_applied_to_the_written_mask_and_regions(dataset, volumes):
    _, manifest = dataset
    for row in manifest.itertuples():
        _, mask, regions = volumes[row.image_id]
        assert loes_score(mask, regions) == row.loes_score
        assert _rule_by_hand(mask, regions) == row.loes_score
        assert row.loes_score % 0.5 == 0 and 0 <= row.loes_score <= MAX_SCORE


def test_lesions_lie_in_the_named_regions_and_are_clearly_brighter_than_white_matter(volumes):
    ratios = []
    for image, mask, regions in volumes.values():
        assert (regions[mask] > 0).all()
        if mask.any():
            unaffected = (regions > 0) & ~ndimage.binary_dilation(mask, iterations=2)
            ratios.append(np.median(image[mask]) / np.median(image[unaffected]))
    assert ratios and min(ratios) > 1.2
    assert np.median(ratios) > 1.4


def test_every_lesion_involves_the_splenium_or_genu_where_adrenoleukodystrophy_starts(dataset, volumes):
    _, manifest = dataset
    callosum = [
        PART_NAMES.index(f"corpus_callosum_{end}_{side}")
        for end in ("splenium", "genu")
        for side in ("left", "right")
    ]
    for row in manifest[manifest["loes_score"] > 0].itertuples():
        _, mask, regions = volumes[row.image_id]
        assert part_points(mask, regions)[callosum].sum() > 0


def test_second_visits_keep_the_first_visits_lesion_and_never_score_lower(dataset, volumes):
    _, manifest = dataset
    visits = manifest.pivot(index="subject", columns="visit", values="image_id").dropna()
    assert len(visits) >= 1
    scores = manifest.set_index("image_id")["loes_score"]
    for first, second in visits[["1", "2"]].itertuples(index=False):
        (image_1, mask_1, regions_1), (image_2, mask_2, regions_2) = volumes[first], volumes[second]
        np.testing.assert_array_equal(regions_1, regions_2)
        assert np.corrcoef(image_1.ravel(), image_2.ravel())[0, 1] > 0.9
        assert not (mask_1 & ~mask_2).any()
        assert scores[second] >= scores[first]


def test_scores_are_skewed_with_rare_high_scores(tmp_path):
    manifest = pd.read_csv(_generate(tmp_path, n_images=80, image_size=24, lesion_free_fraction=0.2, seed=0))
    scores = manifest["loes_score"]
    assert (scores == 0).sum() == 16
    assert scores.median() < 5
    assert scores.max() >= 10 and scores.max() <= MAX_SCORE
    assert (scores >= 10).mean() < 0.25
    # About a third of the subjects come back for a second visit.
    assert 0.15 < (manifest.groupby("subject").size() == 2).mean() < 0.5


def test_part_points_rise_in_half_points_with_the_involved_fraction():
    # 20 voxels of the left parieto-occipital white matter (5 points) and of the left splenium (1).
    regions = np.zeros((20, 2, 1), dtype=np.uint8)
    regions[:, 0] = PART_NAMES.index("parieto_occipital_white_matter_left") + 1
    regions[:, 1] = PART_NAMES.index("corpus_callosum_splenium_left") + 1
    expected = {
        0: (0, 0),
        1: (0, 0),
        2: (0.5, 0.5),
        4: (1.0, 0.5),
        10: (2.5, 0.5),
        11: (3.0, 1.0),
        20: (5.0, 1.0),
    }
    for involved, (white_matter, splenium) in expected.items():
        lesion = np.zeros(regions.shape, dtype=bool)
        lesion[:involved] = True
        points = part_points(lesion, regions)
        assert points[regions[0, 0, 0] - 1] == white_matter
        assert points[regions[0, 1, 0] - 1] == splenium
        assert loes_score(lesion, regions) == white_matter + splenium


def test_a_head_has_every_named_region_and_a_full_lesion_scores_34():
    names = {region.name for region in loes_regions.REGIONS}
    assert {
        "parieto_occipital_white_matter",
        "frontal_white_matter",
        "corpus_callosum_splenium",
        "corpus_callosum_genu",
        "internal_capsule",
        "brainstem",
        "cerebellar_white_matter",
    } <= names
    assert len(PART_NAMES) == 2 * len(names) and MAX_SCORE == 34
    rng = np.random.default_rng(0)
    shape, spacing = subject_grid(40, rng)
    regions = region_map(*head_anatomy(shape, spacing, rng))
    assert (np.bincount(regions.ravel(), minlength=len(PART_NAMES) + 1)[1:] > 0).all()
    assert loes_score(regions > 0, regions) == MAX_SCORE
    assert loes_score(np.zeros(shape, dtype=bool), regions) == 0


def test_scoring_a_mask_of_another_shape_or_an_unknown_part_number_is_an_error():
    with pytest.raises(LesionflowError, match="does not match the region map"):
        loes_score(np.zeros((3, 3, 3), dtype=bool), np.zeros((3, 3, 2), dtype=np.uint8))
    with pytest.raises(LesionflowError, match="expected part numbers 0 to 20"):
        loes_score(np.zeros((3, 3, 3), dtype=bool), np.full((3, 3, 3), 21, dtype=np.uint8))


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    first = _generate(tmp_path / "a", n_images=3, image_size=24)
    second = _generate(tmp_path / "b", n_images=3, image_size=24)
    other = _generate(tmp_path / "c", n_images=3, image_size=24, seed=4)
    assert first.read_bytes() == second.read_bytes()
    manifest = pd.read_csv(first, dtype=str)
    relatives = [*manifest["image"], *manifest["mask"], *map(_region_path, manifest["image_id"])]
    for relative in relatives:
        assert (first.parent / relative).read_bytes() == (second.parent / relative).read_bytes()
    relative = manifest["image"].iloc[0]
    assert (first.parent / relative).read_bytes() != (other.parent / relative).read_bytes()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("n_images", 0),
        ("n_images", True),
        ("image_size", 16),
        ("image_size", 300),
        ("image_size", 32.0),
        ("lesion_free_fraction", 1.5),
        ("seed", -1),
    ],
)
def test_invalid_parameter_error_names_the_setting(tmp_path, name, value):
    with pytest.raises(LesionflowError, match=rf"data\.synthetic\.{name}"):
        _generate(tmp_path, **{name: value})
    assert not (tmp_path / "manifest.csv").exists()
