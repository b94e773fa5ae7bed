"""Tests of the tune and evaluate stages of a run of several lesion classes, end to end from the
library's stages: each class locked on validation alone, every metric per class with macro means."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from class_runs import build_class_run
from leaderboards import compare_settings
from schema_settings import evaluate_settings, tune_settings

from lesionflow.data.class_masks import load_class_masks, manifest_classes
from lesionflow.data.manifest import read_manifest
from lesionflow.evaluation.breakdown import CASES, run_breakdown
from lesionflow.evaluation.class_evaluate import run_evaluate_stage
from lesionflow.evaluation.class_tune import read_class_locked, run_tune_stage
from lesionflow.evaluation.classes import MACRO_METRICS
from lesionflow.evaluation.export import run_export
from lesionflow.evaluation.leaderboard import run_compare
from lesionflow.evaluation.lesions import label_lesions
from lesionflow.evaluation.tune import check_tune_settings, image_counts, tune_on_counts
from lesionflow.io.readers import read_mask
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import comparison, comparison_figures

NAMES = ["exudate", "haemorrhage"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    run = build_class_run(tmp_path_factory.mktemp("class-stages"), {"tile_size": 24, "tile_stride": 16})
    data, pre, infer = run["data"], run["pre"], run["infer"]
    tune, evaluate = run["root"] / "tune", run["root"] / "evaluate"
    settings = tune_settings(thresholds=[0.3, 0.5], min_lesion_areas=[0, 4])
    run_tune_stage(data / "manifest.csv", run["split"] / "split.csv", infer / "val.npz", settings, tune)
    tiles = {
        "manifest": pre / "manifest.csv",
        "split": pre / "split.csv",
        "images": pre / "images.csv",
        "val": infer / "val_tiles.npz",
        "test": infer / "test_tiles.npz",
    }
    run_evaluate_stage(
        data / "manifest.csv",
        run["split"] / "split.csv",
        infer / "val.npz",
        infer / "test.npz",
        tune / "locked.json",
        evaluate_settings(bootstrap={"n_resamples": 50}),
        evaluate,
        tiles,
    )
    return {**run, "tune": tune, "evaluate": evaluate, "tune_settings": settings}


def test_each_class_is_locked_on_validation_as_a_binary_run_of_that_class_would_be(evaluated):
    classes = manifest_classes(evaluated["data"] / "manifest.csv")
    locked = read_class_locked(evaluated["tune"] / "locked.json", classes)
    assert list(locked) == NAMES
    rows = read_manifest(evaluated["data"] / "manifest.csv").set_index("image_id")
    cfg = check_tune_settings(evaluated["tune_settings"])
    maps = artifacts.load_arrays(evaluated["infer"] / "val.npz")
    for c, name in enumerate(NAMES):
        counts = [
            image_counts(maps[i][c], load_class_masks(rows.loc[i].to_dict())[c], cfg) for i in sorted(maps)
        ]
        alone, _ = tune_on_counts(counts, cfg)
        assert {k: v for k, v in locked[name].items() if k != "class"} == alone, name
    grid = pd.read_csv(evaluated["tune"] / "tuning_grid.csv")
    assert sorted(grid["class"].unique()) == NAMES
    fusion = artifacts.read_json(evaluated["tune"] / "fusion.json")
    assert fusion["chosen_on"] == "validation" and list(fusion["per_class"]) == NAMES


def test_tuning_refuses_test_maps(evaluated, tmp_path):
    with pytest.raises(LesionflowError, match="val"):
        run_tune_stage(
            evaluated["data"] / "manifest.csv",
            evaluated["split"] / "split.csv",
            evaluated["infer"] / "test.npz",
            evaluated["tune_settings"],
            tmp_path,
        )


def test_every_metric_is_given_per_class_with_macro_means_over_the_defined_classes(evaluated):
    summary = json.loads((evaluated["evaluate"] / "summary.json").read_text())
    assert summary["classes"] == NAMES
    for subset in ("val", "test"):
        section = summary[subset]
        assert list(section["classes"]) == NAMES
        for metric in MACRO_METRICS:
            defined = section["macro"][f"{metric}_classes"]
            values = [section["classes"][name][metric] for name in defined]
            assert section["macro"][f"{metric}_n_classes"] == len(defined)
            if defined:
                assert section["macro"][metric] == pytest.approx(np.mean(values))
                low, high = section["macro"][f"{metric}_ci_low"], section["macro"][f"{metric}_ci_high"]
                assert low is None or low <= section["macro"][metric] <= high
            else:  # undefined for every class: null (JSON's NaN), never 0
                assert section["macro"][metric] is None
        per_image = pd.read_csv(evaluated["evaluate"] / f"per_image_{subset}.csv", dtype={"image_id": str})
        assert list(per_image.columns[:2]) == ["class", "image_id"]
        counts = per_image.groupby("class").size()
        assert counts["exudate"] == counts["haemorrhage"] == section["classes"]["exudate"]["n_images"]


def test_confusion_tables_count_every_reference_pixel_once_for_exclusive_classes(evaluated):
    rows = read_manifest(evaluated["data"] / "manifest.csv").set_index("image_id")
    split = pd.read_csv(evaluated["split"] / "split.csv", dtype=str)
    test_ids = split.loc[split["split"] == "test", "image_id"]
    pixels = pd.read_csv(evaluated["evaluate"] / "confusion_pixels_image_test.csv", index_col="reference")
    stacks = [load_class_masks(rows.loc[i].to_dict()) for i in test_ids]
    assert pixels.to_numpy().sum() == sum(stack[0].size for stack in stacks)
    for c, name in enumerate(NAMES):
        assert pixels.loc[name].sum() == sum(int(stack[c].sum()) for stack in stacks)
    lesions = pd.read_csv(evaluated["evaluate"] / "confusion_lesions_image_test.csv", index_col="reference")
    connectivity = json.loads((evaluated["evaluate"] / "summary.json").read_text())["settings"][
        "lesion_matching"
    ]["connectivity"]
    for c, name in enumerate(NAMES):  # every reference lesion of a class in its row once
        assert lesions.loc[name].sum() == sum(label_lesions(stack[c], connectivity)[1] for stack in stacks)


def test_the_items_training_saw_are_scored_per_class_too(evaluated):
    summary = json.loads((evaluated["evaluate"] / "summary_tiles.json").read_text())
    assert summary["level"] == "tile" and list(summary["test"]["classes"]) == NAMES
    tiles = pd.read_csv(evaluated["evaluate"] / "per_tile_test.csv")
    assert sorted(tiles["class"].unique()) == NAMES


def test_the_zero_dice_breakdown_is_made_class_by_class(evaluated, tmp_path):
    run_breakdown(evaluated["evaluate"] / "per_image_test.csv", tmp_path)
    per_image = pd.read_csv(evaluated["evaluate"] / "per_image_test.csv")
    summary = pd.read_csv(tmp_path / "zero_dice_summary.csv")
    assert list(summary.columns[:2]) == ["class", "case"] and len(summary) == len(NAMES) * len(CASES)
    record = json.loads((tmp_path / "zero_dice.json").read_text())
    for name in NAMES:
        own = per_image[per_image["class"] == name]
        assert record["classes"][name]["n_images"] == len(own)
        assert record["classes"][name]["n_zero_dice"] == int((own["dice"] == 0).sum())
        assert record["classes"][name]["n_dice_undefined"] == int(own["dice"].isna().sum())


def test_each_classs_locked_mask_and_map_are_exported_like_the_source(evaluated, tmp_path):
    infer = evaluated["infer"]
    record = run_export(
        evaluated["data"] / "manifest.csv",
        {"val": infer / "val.npz", "test": infer / "test.npz"},
        evaluated["tune"] / "locked.json",
        tmp_path,
    )
    maps = artifacts.load_arrays(infer / "test.npz")
    assert record["counts"]["test"] == len(maps) * len(NAMES)
    per_image = pd.read_csv(evaluated["evaluate"] / "per_image_test.csv", dtype={"image_id": str})
    for row in record["files"]["test"]:
        mask = read_mask(row["mask"]).array
        assert mask.shape == maps[row["image_id"]].shape[1:]
        scored = per_image[(per_image["class"] == row["class"]) & (per_image["image_id"] == row["image_id"])]
        assert int(mask.sum()) == int(scored["pred_pixels"].iloc[0])


def test_the_leaderboard_ranks_by_the_macro_mean_and_each_class_beside_it(evaluated, tmp_path):
    summary_path = evaluated["evaluate"] / "summary.json"
    summary = json.loads(summary_path.read_text())
    # A second run whose haemorrhages are scored better: the macro mean and that class move.
    better = json.loads(summary_path.read_text())
    macro = np.mean([summary["test"]["classes"]["exudate"]["dice_pos"], 0.9])
    for section, value in ((better["test"]["classes"]["haemorrhage"], 0.9), (better["test"]["macro"], macro)):
        section.update(dice_pos=value, dice_pos_ci_low=value, dice_pos_ci_high=value)
    artifacts.write_json(tmp_path / "better.json", better)
    per_image = evaluated["evaluate"] / "per_image_test.csv"
    board = run_compare(
        {"base": summary_path, "better": tmp_path / "better.json"},
        "base",
        tmp_path / "compare",
        {"base": per_image, "better": per_image},
        compare_settings(baseline="base", bootstrap={"n_resamples": 30}),
    )
    rows = board.set_index("run")
    assert rows.loc["base", "ranked_by"] == "macro mean over 2 classes (exudate, haemorrhage)"
    assert rows.loc["base", "dice_pos"] == pytest.approx(summary["test"]["macro"]["dice_pos"])
    assert rows.loc["base", "dice_pos_haemorrhage"] == pytest.approx(
        summary["test"]["classes"]["haemorrhage"]["dice_pos"]
    )
    assert rows.loc["better", "rank_dice_pos"] == 1 and rows.loc["better", "rank_dice_pos_haemorrhage"] == 1
    assert (
        rows.loc["better", "rank_dice_pos_exudate"] == 1 == rows.loc["base", "rank_dice_pos_exudate"]
    )  # a tie
    # Paired with itself image by image: every class delta and their macro mean are 0.
    assert rows.loc["better", "paired_delta_dice_pos_exudate"] == 0
    deltas = [rows.loc["better", f"paired_delta_dice_pos_{name}"] for name in NAMES]
    macro_delta = rows.loc["better", "paired_delta_dice_pos"]
    assert macro_delta == 0 if np.isfinite(deltas).all() else np.isnan(macro_delta)
    assert rows.loc["base", "n_images"] == summary["test"]["classes"]["exudate"]["n_images"]


def test_the_comparison_report_draws_every_board_table_and_figure_for_each_class(evaluated, tmp_path):
    summary_path = evaluated["evaluate"] / "summary.json"
    per_image = evaluated["evaluate"] / "per_image_test.csv"
    run_compare(
        {"a": summary_path, "b": summary_path}, "a", tmp_path,
        {"a": per_image, "b": per_image}, compare_settings(baseline="a", bootstrap={"n_resamples": 20}),
    )  # fmt: skip
    board = comparison.read_leaderboard(tmp_path / "leaderboard.csv")
    assert "macro mean over 2 classes (exudate, haemorrhage)" in comparison.level_text(board)
    boards = comparison.class_boards(board)
    assert list(boards) == NAMES
    for name, class_board in boards.items():
        np.testing.assert_array_equal(class_board["dice_pos"], board[f"dice_pos_{name}"])
        np.testing.assert_array_equal(class_board["rank_dice_pos"], board[f"rank_dice_pos_{name}"])
        assert set(comparison.rankings(class_board)) == set(comparison.rankings(board))
        assert len(comparison.baseline_differences(class_board)) == 1
        comparison_figures.plot_forest(class_board)
    assert comparison.class_boards(board.drop(columns="ranked_by")) == {}


def test_detection_by_lesion_volume_is_given_per_class_when_asked_for(evaluated, tmp_path):
    infer = evaluated["infer"]
    summary = run_evaluate_stage(
        evaluated["data"] / "manifest.csv", evaluated["split"] / "split.csv", infer / "val.npz",
        infer / "test.npz", evaluated["tune"] / "locked.json",
        evaluate_settings(bootstrap={"n_resamples": 20}, size_bins_mm3=[10, 100]), tmp_path,
    )  # fmt: skip
    for name in NAMES:
        assert "detection_by_size_mm3" in summary["test"]["classes"][name]
