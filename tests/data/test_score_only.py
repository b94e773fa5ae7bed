"""Tests of a manifest of scores without masks: the check, the data, split and preprocess stages,
and the segmentation reader that must refuse it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from manifests import small_manifest
from schema_settings import split_section, top_level_section

from lesionflow.data.axis_columns import read_axis_columns
from lesionflow.data.dataset import IMAGE_TABLE_COLUMNS, LESION_SUMMARY_KEYS, LESION_TABLE_COLUMNS, run_data
from lesionflow.data.manifest import lesion_presence, manifest_has_masks, read_manifest
from lesionflow.data.manifest_check import ManifestProblems, validate_manifest
from lesionflow.data.preprocess import IMAGE_COLUMNS, prepare_image, run_preprocess
from lesionflow.data.split import make_split, run_split
from lesionflow.data.subsets import load_subset, read_split
from lesionflow.io.geometry import Geometry
from lesionflow.io.readers import read_geometry, read_image, write_image
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

# Sixteen volumes of eight subjects (two visits each, in one score bin): two subjects and four
# volumes in each bin of the default split.score_bins, enough for four stratified folds.
SCORES = [0, 1, 3, 4, 6, 8, 11, 15, 0.5, 1.5, 2.5, 3.5, 7, 9, 12, 20]
SHAPE = (14, 12, 10)
GEOMETRY = Geometry(SHAPE, (1.0, 1.0, 2.0), np.diag([1.0, 1.0, 2.0, 1.0]))
READ_TEXT = {"dtype": str, "keep_default_na": False}


def head(rng: np.random.Generator) -> np.ndarray:
    """A ``(1, *SHAPE)`` bright noisy ellipsoid in dark air: a field of view to crop to."""
    grid = np.indices(SHAPE, dtype=float)
    centre = (np.array(SHAPE) - 1) / 2
    radii = np.array(SHAPE) * 0.35
    inside = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) <= 1
    return (inside * 100 + rng.normal(0, 1, SHAPE)).astype(np.float32)[None]


def write_score_only(folder: Path) -> Path:
    """NIfTI volumes and a manifest with image, subject, visit, loes_score and no mask column."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, score in enumerate(SCORES):
        write_image(folder / f"v{i:02d}.nii.gz", head(rng), GEOMETRY)
        name, visit = f"v{i:02d}.nii.gz", str(i % 2 + 1)
        rows.append({"image": name, "subject": f"s{i // 2}", "visit": visit, "loes_score": f"{score:g}"})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def data_settings(manifest: Path, **given) -> dict:
    """The data section as the data stage gets it, reading ``manifest``'s loes_score by default."""
    values = {"source": "manifest", "manifest": str(manifest), "score_column": "loes_score", **given}
    return top_level_section("data", **values)


@pytest.fixture(scope="module")
def data_stage(tmp_path_factory) -> Path:
    """The data stage's output folder for the score-only manifest."""
    root = tmp_path_factory.mktemp("score_only")
    run_data(data_settings(write_score_only(root / "user"), score_range=[0, 34]), root / "data")
    return root / "data"


@pytest.fixture(scope="module")
def split_stage(data_stage) -> Path:
    """The split stage's split.csv of the data stage's manifest, stratified by the default (auto)."""
    out = data_stage.parent / "split"
    run_split(data_stage / "manifest.csv", split_section(train=0.5, val=0.25, test=0.25, seed=0), out)
    return out / "split.csv"


# ---------------------------------------------------------------- the manifest and its check


def test_a_score_only_manifest_is_read_with_an_empty_mask_column_after_the_image(tmp_path):
    path = write_score_only(tmp_path)
    frame = read_manifest(path, "loes_score")
    assert list(frame.columns[:4]) == ["image_id", "subject", "image", "mask"]
    assert (frame["mask"] == "").all() and not manifest_has_masks(frame)
    assert frame["image"].map(lambda p: Path(p).is_absolute()).all()
    assert frame.attrs["manifest"] == str(path)


def test_a_score_only_manifest_passes_the_check_and_its_images_are_still_checked(tmp_path):
    path = write_score_only(tmp_path)
    validate_manifest(path, data_settings(path, score_range=[0, 34]))
    write_image(tmp_path / "v03.nii.gz", np.ones((1, *SHAPE), np.float32), GEOMETRY)
    four_axes = np.random.default_rng(1).normal(size=(4, 4, 4, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(four_axes, np.eye(4)), tmp_path / "v05.nii.gz")
    (tmp_path / "v07.nii.gz").unlink()
    table = pd.read_csv(path, **READ_TEXT)
    table.loc[9, "loes_score"] = "N/A"
    table.to_csv(path, index=False)
    with pytest.raises(ManifestProblems) as caught:
        validate_manifest(path, data_settings(path, score_range=[0, 34]))
    problems = caught.value.problems
    where = [(p.row, p.column) for p in problems]
    assert where == [(5, "image"), (7, "image"), (9, "image"), (11, "loes_score")]
    assert "every voxel has the same value" in problems[0].what
    assert "expected a 3D volume" in problems[1].what
    assert "does not exist" in problems[2].what and "missing value" in problems[3].what


def test_without_a_score_column_a_missing_mask_column_is_the_old_error(tmp_path):
    path = write_score_only(tmp_path)
    old = (
        f"manifest {path}: missing column 'mask'; expected columns image, mask, subject (optional "
        "image_id), found image, subject, visit, loes_score"
    )
    for read in (
        lambda: run_data(data_settings(path, score_column=None), tmp_path / "out"),
        lambda: validate_manifest(path),
        lambda: read_manifest(path, None),
    ):
        with pytest.raises(LesionflowError) as caught:
            read()
        assert str(caught.value) == old
    assert not (tmp_path / "out").exists()


def test_empty_mask_cells_are_still_errors_without_a_score_column(tmp_path):
    path = write_score_only(tmp_path)
    pd.read_csv(path, **READ_TEXT).assign(mask="").to_csv(path, index=False)
    with pytest.raises(LesionflowError, match=r"row 2, column 'mask': expected a value, found an empty cell"):
        read_manifest(path, None)
    assert read_manifest(path, "loes_score")["mask"].eq("").all()  # with the score column: no masks


def test_lesion_presence_without_masks_is_unknown_not_false(data_stage):
    presence = lesion_presence(read_manifest(data_stage / "manifest.csv"))
    assert presence.dtype == "boolean" and presence.isna().all() and len(presence) == len(SCORES)


# ---------------------------------------------------------------- the data stage


def test_the_data_stage_writes_empty_mask_cells_nan_lesion_counts_and_says_there_are_no_masks(data_stage):
    written = pd.read_csv(data_stage / "manifest.csv", **READ_TEXT)
    assert list(written.columns[:4]) == ["image_id", "subject", "image", "mask"]
    assert (written["mask"] == "").all()
    assert written["score"].astype(float).tolist() == SCORES
    assert not manifest_has_masks(read_manifest(data_stage / "manifest.csv"))
    images = pd.read_csv(data_stage / "images.csv", dtype={"image_id": str})
    assert list(images.columns) == [*IMAGE_TABLE_COLUMNS, "score"]
    assert images[["lesion_pixels", "lesion_fraction", "n_lesions"]].isna().all().all()
    geometry = read_geometry(written.loc[0, "image"])
    first = read_axis_columns(images).iloc[0]
    assert first["shape"] == SHAPE == geometry.shape and first["spacing"] == (1.0, 1.0, 2.0)
    np.testing.assert_allclose(json.loads(first["affine"]), geometry.affine, atol=1e-6)
    lesions = pd.read_csv(data_stage / "lesions.csv")
    assert list(lesions.columns) == LESION_TABLE_COLUMNS and lesions.empty
    summary = json.loads((data_stage / "data_summary.json").read_text())
    assert summary["masks"] is False and summary["n_images"] == 16 and summary["n_subjects"] == 8
    assert all(summary[key] is None for key in LESION_SUMMARY_KEYS)
    assert "no masks" in summary["lesion_statistics_missing"]
    assert summary["scores"]["n"] == len(SCORES) and summary["scores"]["max"] == 20.0


def test_the_data_summary_says_masks_true_when_there_are_masks(tmp_path):
    settings = top_level_section("data", source="manifest", manifest=str(small_manifest(tmp_path)))
    run_data(settings, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "data_summary.json").read_text())
    assert summary["masks"] is True and summary["n_lesions"] == 2 and summary["n_lesion_free"] == 1
    assert "lesion_statistics_missing" not in summary


# ---------------------------------------------------------------- the split


def test_the_split_stratifies_by_score_bins_and_leaves_lesion_presence_empty(data_stage, split_stage):
    split = pd.read_csv(split_stage, **READ_TEXT)
    assert (split["lesion_positive"] == "").all()
    assert set(split["score_bin"]) == {"<2", "[2, 5)", "[5, 10)", ">=10"}
    assert (split.groupby("subject")["split"].nunique() == 1).all()
    assert set(split["split"]) == {"train", "val", "test"}
    summary = pd.read_csv(split_stage.parent / "split_summary.csv", **READ_TEXT)
    assert (summary["lesion_positive"] == "").all() and (summary["lesion_rate"] == "").all()
    assert summary["n"].astype(int).sum() == len(SCORES)


def test_presence_stratification_without_masks_is_refused_naming_split_stratify(data_stage, tmp_path):
    settings = split_section(train=0.5, val=0.25, test=0.25, seed=0, stratify="presence")
    refused = r"^split\.stratify: 'presence' .* needs masks, but manifest .*manifest\.csv has none"
    with pytest.raises(LesionflowError, match=refused):
        run_split(data_stage / "manifest.csv", settings, tmp_path / "split")
    with pytest.raises(LesionflowError, match=r"^split\.stratify: 'presence'"):
        make_split(read_manifest(data_stage / "manifest.csv"), 0.5, 0.25, 0.25, 0)
    assert not (tmp_path / "split").exists()


def test_a_split_column_of_a_score_only_manifest_fixes_the_split_with_presence_unknown(tmp_path):
    path = write_score_only(tmp_path / "user")
    table = pd.read_csv(path, **READ_TEXT)
    table["split"] = ["train"] * 8 + ["val"] * 4 + ["test"] * 4
    table.to_csv(path, index=False)
    run_data(data_settings(path), tmp_path / "data")
    run_split(tmp_path / "data" / "manifest.csv", split_section(), tmp_path / "split")
    split = pd.read_csv(tmp_path / "split" / "split.csv", **READ_TEXT)
    assert split["split"].tolist() == table["split"].tolist() and (split["lesion_positive"] == "").all()


# ---------------------------------------------------------------- preprocess


@pytest.mark.parametrize(
    "partial",
    [{}, {"crop_field_of_view": True, "target_spacing": [1.0, 1.0, 1.0], "normalise": "percentile"}],
    ids=["identity", "prepared"],
)
def test_preprocess_without_masks_writes_images_only_with_empty_mask_cells(
    data_stage, split_stage, tmp_path, partial
):
    out = tmp_path / "pre"
    settings = complete_run_section("preprocess", partial)
    record = run_preprocess(data_stage / "manifest.csv", split_stage, settings, out)
    assert record["n_items"] == record["n_images"] == len(SCORES)
    assert not (out / "masks").exists()
    items = pd.read_csv(out / "manifest.csv", **READ_TEXT)
    images = pd.read_csv(out / "images.csv", **READ_TEXT)
    assert (items["mask"] == "").all() and (images["mask"] == "").all()
    assert (images["original_mask"] == "").all() and (images["lesion_pixels"] == "").all()
    assert list(images.columns) == [*IMAGE_COLUMNS, "score", "visit"]
    assert items["score"].astype(float).tolist() == SCORES
    table = read_manifest(out / "manifest.csv")  # the train stage's reader takes the items
    assert not manifest_has_masks(table)
    shapes = read_axis_columns(pd.read_csv(out / "images.csv", dtype={"image_id": str}))["shape"]
    for path, shape in zip(table["image"], shapes, strict=True):
        assert read_image(path).array.shape == (1, *shape)
    if partial:
        assert shapes.iloc[0] != SHAPE  # cropped to the head and resampled to 1 mm slices


def test_an_image_prepares_the_same_without_its_mask(tmp_path):
    image = head(np.random.default_rng(1))
    mask = np.zeros(SHAPE, dtype=bool)
    mask[6:8, 5:7, 4:6] = True
    settings = complete_run_section(
        "preprocess", {"crop_field_of_view": True, "target_spacing": [1.0, 1.0, 1.0], "normalise": "image"}
    )
    with_mask = prepare_image(image, mask, (1.0, 1.0, 2.0), settings, "a")
    without = prepare_image(image, None, (1.0, 1.0, 2.0), settings, "a")
    np.testing.assert_array_equal(without.image, with_mask.image)
    assert without.mask is None and without.box == with_mask.box and without.scale == with_mask.scale


def test_preprocess_refuses_tiles_without_masks_naming_the_key(data_stage, split_stage, tmp_path):
    settings = complete_run_section("preprocess", {"tile_size": 8})
    with pytest.raises(LesionflowError, match=r"^preprocess\.tile_size: tiles are for segmentation.*no mask"):
        run_preprocess(data_stage / "manifest.csv", split_stage, settings, tmp_path / "pre")
    assert not (tmp_path / "pre" / "manifest.csv").exists()


# ---------------------------------------------------------------- segmentation refuses it


def test_load_subset_of_a_manifest_without_masks_names_it_and_says_segmentation_needs_masks(
    data_stage, split_stage
):
    path = data_stage / "manifest.csv"
    with pytest.raises(LesionflowError) as caught:
        load_subset(read_manifest(path), read_split(split_stage), "train")
    message = str(caught.value)
    assert message.startswith(f"manifest {path}: the data have no masks")
    assert "task segmentation needs a mask column" in message and "\n" not in message
