"""Tests of lesionflow.evaluation.evaluate: locked settings applied to val and test, summary.json contract."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionflow.evaluation.evaluate import run_evaluate
from lesionflow.evaluation.metrics import LESION_COLUMNS, PER_IMAGE_COLUMNS
from lesionflow.pipeline.artifacts import read_json, save_arrays, write_json
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

LOCKED = {
    "threshold": 0.5,
    "min_lesion_area": 0,
    "presence_threshold": 0.55,
    "presence_score": "max_probability",
    "connectivity": 1,
    "objective": "dice_pos",
    "objective_value": 1.0,
    "n_val_images": 2,
    "chosen_on": "validation",
}


def _write(folder):
    """Four images: val (positive, empty) and test (positive, empty with a 0.52 blob)."""
    size = 12
    specs = {
        "0001_1": ("val", True, 0.9),
        "0002_1": ("val", False, 0.0),
        "0003_1": ("test", True, 0.9),
        # Above the pixel threshold but below the presence threshold: gating must empty it.
        "0004_1": ("test", False, 0.52),
    }
    rows, split_rows, arrays = [], [], {"val": {}, "test": {}}
    for image_id, (subset, positive, level) in specs.items():
        mask = np.zeros((size, size), dtype=bool)
        prob = np.full((size, size), 0.05, dtype=np.float32)
        if positive:
            mask[3:6, 3:6] = True
            prob[3:6, 3:6] = level
        elif level:
            prob[8:10, 8:10] = level
        Image.fromarray((prob * 255).astype(np.uint8)).save(folder / f"{image_id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{image_id}_m.png")
        rows.append({"image": f"{image_id}.png", "mask": f"{image_id}_m.png", "subject": image_id})
        split_rows.append({"image_id": image_id, "subject": image_id[:4], "split": subset})
        arrays[subset][image_id] = prob.astype(np.float16)
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(split_rows).to_csv(folder / "split.csv", index=False)
    save_arrays(folder / "val.npz", arrays["val"])
    save_arrays(folder / "test.npz", arrays["test"])
    write_json(folder / "locked.json", LOCKED)
    return folder


def _run(folder, out, val="val.npz", test="test.npz", settings=None):
    return run_evaluate(
        folder / "manifest.csv",
        folder / "split.csv",
        folder / val,
        folder / test,
        folder / "locked.json",
        complete_run_section("evaluate", (settings or {}).get("evaluate", settings or {})),
        out,
    )


def test_evaluate_writes_per_image_tables_and_summary_with_the_contract_keys(tmp_path):
    data = _write(tmp_path)
    out = tmp_path / "evaluate"
    _run(data, out)
    summary = read_json(out / "summary.json")
    assert set(summary) == {
        "level", "resolution", "val", "test", "locked", "settings", "conventions"
    }
    assert summary["level"] == "image" and summary["resolution"].startswith("original")
    assert summary["locked"]["threshold"] == 0.5
    for subset in ("val", "test"):
        table = pd.read_csv(out / f"per_image_{subset}.csv", dtype={"image_id": str})
        assert list(table.columns) == PER_IMAGE_COLUMNS and len(table) == 2
        lesions = pd.read_csv(out / f"lesions_{subset}.csv", dtype={"image_id": str})
        assert list(lesions.columns) == LESION_COLUMNS and len(lesions) == 1
    test = summary["test"]
    assert test["dice_pos"] == pytest.approx(1.0) and test["dice_pos_n"] == 1
    assert test["dice_all_convention"].startswith("empty reference and empty prediction")
    assert "dice_iou" in summary["conventions"]


def test_presence_gating_removes_a_prediction_in_an_empty_test_image(tmp_path):
    data = _write(tmp_path)
    summary = _run(data, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "per_image_test.csv", dtype={"image_id": str})
    empty = table.set_index("image_id").loc["0004_1"]
    assert empty["pred_pixels"] == 0 and not empty["presence_pred"]
    assert np.isnan(empty["dice"])  # empty vs empty stays undefined
    assert summary["test"]["false_positive_rate_empty"] == 0.0
    assert summary["test"]["presence_roc_auc"] == pytest.approx(1.0)


def test_undefined_values_stay_empty_cells_and_are_counted_in_the_summary(tmp_path):
    data = _write(tmp_path)
    _run(data, tmp_path / "out")
    summary = read_json(tmp_path / "out" / "summary.json")
    table = pd.read_csv(tmp_path / "out" / "per_image_val.csv", dtype={"image_id": str})
    empty = table.set_index("image_id").loc["0002_1"]
    # Empty reference, empty prediction, constant probability map: all undefined, none 0 or 1.
    assert np.isnan(empty["dice"]) and np.isnan(empty["iou"]) and np.isnan(empty["pearson"])
    assert summary["val"]["nan_counts"]["pearson_mean"] == 1
    assert summary["val"]["pearson_mean_n"] == 1


def test_evaluate_refuses_swapped_probability_files(tmp_path):
    data = _write(tmp_path)
    with pytest.raises(LesionflowError, match=r"test\.npz.*outside the 'val' split"):
        _run(data, tmp_path / "out", val="test.npz", test="val.npz")


def test_evaluate_refuses_unknown_settings_naming_the_key(tmp_path):
    data = _write(tmp_path)
    with pytest.raises(LesionflowError, match=r"evaluate\.bootstrap\.n_resample'"):
        _run(data, tmp_path / "out", settings={"evaluate": {"bootstrap": {"n_resample": 10}}})
    with pytest.raises(LesionflowError, match=r"evaluate\.size_bin'"):
        _run(data, tmp_path / "out", settings={"size_bin": [10]})


def test_evaluate_refuses_incomplete_settings_instead_of_guessing_a_default(tmp_path):
    data = _write(tmp_path)
    settings = complete_run_section("evaluate", {})
    del settings["bootstrap"]["seed"]
    with pytest.raises(LesionflowError, match=r"missing keys \['evaluate\.bootstrap\.seed'\]"):
        run_evaluate(
            data / "manifest.csv", data / "split.csv", data / "val.npz", data / "test.npz",
            data / "locked.json", settings, tmp_path / "out",
        )


def test_summary_records_intervals_and_how_they_were_resampled(tmp_path):
    data = _write(tmp_path)
    settings = {"bootstrap": {"n_resamples": 50, "seed": 3}}
    summary = _run(data, tmp_path / "out", settings=settings)
    test = summary["test"]
    assert test["bootstrap"] == {
        "unit": "subject",
        "method": "percentile",
        "n_resamples": 50,
        "n_subjects": 2,
        "seed": 3,
        "confidence": 0.95,
    }
    assert test["dice_pos_ci_low"] <= test["dice_pos"] <= test["dice_pos_ci_high"]
    assert [row["size_bin"] for row in test["detection_by_size"]] == ["<50", "50-499", ">=500"]


def test_lesion_matching_connectivity_defaults_to_the_locked_one(tmp_path):
    data = _write(tmp_path)
    summary = _run(data, tmp_path / "out")
    assert summary["settings"]["lesion_matching"]["connectivity"] == LOCKED["connectivity"]
    explicit = _run(data, tmp_path / "out2", settings={"lesion_matching": {"connectivity": 2}})
    assert explicit["settings"]["lesion_matching"]["connectivity"] == 2


def test_evaluate_refuses_locked_settings_not_chosen_on_validation(tmp_path):
    data = _write(tmp_path)
    write_json(data / "locked.json", {**LOCKED, "chosen_on": "test"})
    with pytest.raises(LesionflowError, match="chosen_on"):
        _run(data, tmp_path / "out")


def test_tiles_are_scored_apart_with_locked_areas_at_their_scale(tmp_path):
    data = _write(tmp_path)
    # A minimum area of 16 original pixels removes the 9-pixel lesions of the whole images; the
    # tiles were downscaled by 0.5, where the same rule keeps lesions of 4 pixels and more.
    write_json(data / "locked.json", {**LOCKED, "min_lesion_area": 16})
    split = pd.read_csv(data / "split.csv", dtype=str)
    split.assign(source_image_id=split["image_id"]).to_csv(data / "tile_split.csv", index=False)
    pd.DataFrame({"image_id": split["image_id"], "scale": 0.5}).to_csv(data / "images.csv", index=False)
    out = tmp_path / "evaluate"
    tiles = {
        "manifest": data / "manifest.csv", "split": data / "tile_split.csv",
        "images": data / "images.csv", "val": data / "val.npz", "test": data / "test.npz",
    }
    run_evaluate(
        data / "manifest.csv", data / "split.csv", data / "val.npz", data / "test.npz",
        data / "locked.json", complete_run_section("evaluate", {}), out, tiles=tiles,
    )
    images = pd.read_csv(out / "per_image_test.csv", dtype={"image_id": str}).set_index("image_id")
    tile_table = pd.read_csv(out / "per_tile_test.csv", dtype={"image_id": str}).set_index("image_id")
    assert images.loc["0003_1", "dice"] == 0 and tile_table.loc["0003_1", "dice"] == 1
    summary = read_json(out / "summary_tiles.json")
    assert summary["level"] == "tile" and "0.5" in summary["resolution"]
    assert summary["locked"]["min_lesion_area"] == 16
    assert (out / "lesions_tiles_val.csv").is_file()


def test_a_connectivity_the_masks_cannot_have_names_its_config_key(tmp_path):
    data = _write(tmp_path)
    message = r"evaluate\.lesion_matching\.connectivity is 3, but the masks have 2 spatial axes"
    with pytest.raises(LesionflowError, match=message):
        _run(data, tmp_path / "out", settings={"lesion_matching": {"connectivity": 3}})
