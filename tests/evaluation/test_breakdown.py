"""Tests of lesionflow.evaluation.breakdown: every Dice-0 image in exactly one case, NaN never a zero."""

import numpy as np
import pandas as pd
import pytest

from lesionflow.evaluation.breakdown import CASES, run_breakdown, zero_dice_images, zero_dice_summary
from lesionflow.pipeline.artifacts import read_json
from lesionflow.pipeline.errors import LesionflowError


def _per_image():
    return pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e", "f", "g"],
            "subject": ["1", "1", "2", "2", "3", "3", "4"],
            "dice": [0.0, 0.0, 0.0, 0.0, np.nan, 0.7, 0.0],
            "gt_pixels": [0, 0, 30, 10, 0, 40, 0],
            "pred_pixels": [5, 15, 0, 12, 0, 35, 25],
        }
    )


def test_each_zero_dice_image_gets_exactly_one_case_and_nan_is_not_zero():
    zero = zero_dice_images(_per_image())
    assert zero.set_index("image_id")["case"].to_dict() == {
        "a": "A_GT_empty_PRED_nonempty",
        "b": "A_GT_empty_PRED_nonempty",
        "g": "A_GT_empty_PRED_nonempty",
        "c": "B_GT_nonempty_PRED_empty",
        "d": "C_disjoint",
    }
    assert "e" not in set(zero["image_id"])  # empty vs empty: Dice undefined, not 0


def test_summary_has_all_three_cases_with_hand_computed_statistics():
    summary = zero_dice_summary(zero_dice_images(_per_image()), n_images=7).set_index("case")
    assert list(summary.index) == list(CASES)
    a = summary.loc["A_GT_empty_PRED_nonempty"]
    assert a["count"] == 3
    assert a["percent_of_zero_dice"] == pytest.approx(60.0)
    assert a["percent_of_images"] == pytest.approx(300 / 7)
    expected = pd.Series([5, 15, 25], dtype=float).describe()
    for stat in ("count", "mean", "std", "min", "25%", "50%", "75%", "max"):
        assert a[f"pred_pixels_{stat}"] == pytest.approx(expected[stat])
    assert a["gt_pixels_max"] == 0


def test_empty_case_has_count_zero_and_nan_statistics():
    per_image = _per_image()[lambda df: df["image_id"] != "d"]
    summary = zero_dice_summary(zero_dice_images(per_image), n_images=6).set_index("case")
    c = summary.loc["C_disjoint"]
    assert c["count"] == 0 and c["percent_of_zero_dice"] == 0
    assert c["gt_pixels_count"] == 0 and np.isnan(c["gt_pixels_mean"])
    assert np.isnan(c["pred_pixels_max"])


def test_no_zero_dice_images_gives_nan_percent_of_zero_dice():
    per_image = _per_image()[lambda df: df["dice"] != 0]
    summary = zero_dice_summary(zero_dice_images(per_image), n_images=len(per_image))
    assert (summary["count"] == 0).all()
    assert summary["percent_of_zero_dice"].isna().all()
    assert (summary["percent_of_images"] == 0).all()


def test_run_breakdown_writes_both_tables(tmp_path):
    _per_image().to_csv(tmp_path / "per_image_test.csv", index=False)
    run_breakdown(tmp_path / "per_image_test.csv", tmp_path / "out")
    images = pd.read_csv(tmp_path / "out" / "zero_dice_images.csv")
    summary = pd.read_csv(tmp_path / "out" / "zero_dice_summary.csv")
    assert len(images) == 5 and summary["count"].tolist() == [3, 1, 1]


def test_run_breakdown_names_a_table_without_the_needed_columns(tmp_path):
    pd.DataFrame({"image_id": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(LesionflowError, match=r"bad\.csv.*dice"):
        run_breakdown(tmp_path / "bad.csv", tmp_path / "out")


def test_json_record_holds_cases_undefined_count_and_size_bin_of_each_missed_image(tmp_path):
    per_image = _per_image().assign(gt_size_bin=["", "", ">=20", "<20", "", ">=20", ""])
    per_image.to_csv(tmp_path / "per_image_test.csv", index=False)
    run_breakdown(tmp_path / "per_image_test.csv", tmp_path / "out")
    record = read_json(tmp_path / "out" / "zero_dice.json")
    assert (record["n_images"], record["n_zero_dice"], record["n_dice_undefined"]) == (7, 5, 1)
    assert [case["case"] for case in record["cases"]] == list(CASES)
    assert record["missed_by_size_bin"] == {
        "B_GT_nonempty_PRED_empty": {">=20": 1},
        "C_disjoint": {"<20": 1},
    }
    bins = {image["image_id"]: image["gt_size_bin"] for image in record["images"]}
    assert bins["c"] == ">=20" and bins["a"] == ""
    assert record["cases"][0]["gt_pixels_count"] == 3
