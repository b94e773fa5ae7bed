"""Tests of lesionflow.evaluation.score_evaluate: the locked calibration applied, and val and test scored
as scipy and scikit-learn score the same rows."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from schema_settings import evaluate_settings
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from lesionflow.evaluation.score_evaluate import PER_CASE_COLUMNS, run_evaluate_scores
from lesionflow.pipeline.errors import LesionflowError

RANGES = [0, 2, 5, 10, 35]


def settings(**bootstrap) -> dict:
    """The evaluate settings this stage reads: schema bootstrap (fewer resamples) and score ranges."""
    boot = {**evaluate_settings()["bootstrap"], "n_resamples": 200, **bootstrap}
    return {"score_ranges": RANGES, "bootstrap": boot}


def write_data(folder, n=24, seed=0):
    """manifest.csv, split.csv and the val/test scores files of ``n`` cases, two visits per subject.

    Raw predictions are 3 + 0.5 * true plus noise; true scores include cut points (2, 10) and the
    top edge 35 so the range labels are tested on their edges.
    """
    rng = np.random.default_rng(seed)
    ids = [f"c{i:02d}" for i in range(n)]
    subjects = [f"s{i // 2}" for i in range(n)]
    true = rng.uniform(0, 30, n).round(2)
    true[[4, 5, 10]] = [2.0, 10.0, 35.0]
    raw = 3 + 0.5 * true + rng.normal(0, 1, n)
    splits = [("train", "val", "test")[i // 2 % 3] for i in range(n)]
    visits = [f"v{i % 2 + 1}" for i in range(n)]
    pd.DataFrame(
        {"image_id": ids, "subject": subjects, "image": ids, "mask": ids, "score": true, "visit": visits}
    ).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame({"image_id": ids, "subject": subjects, "split": splits}).to_csv(
        folder / "split.csv", index=False
    )
    frame = pd.DataFrame({"image_id": ids, "subject": subjects, "visit": visits, "prediction": raw})
    paths = {"manifest": folder / "manifest.csv", "split": folder / "split.csv"}
    for subset in ("val", "test"):
        paths[subset] = folder / f"{subset}_scores.csv"
        frame[[s == subset for s in splits]].to_csv(paths[subset], index=False)
    return paths


def write_calibration(folder, intercept, slope, n_val=8, **extra):
    path = folder / "calibration.json"
    record = {"method": "linear", "intercept": intercept, "slope": slope, "fitted_on": "val", "n_val": n_val}
    path.write_text(json.dumps({**record, "val_rmse_before": 1.0, "val_rmse_after": 0.5, **extra}))
    return path


def evaluate(tmp_path, paths, calibration, stage_settings=None):
    return run_evaluate_scores(
        paths["manifest"],
        paths["split"],
        paths["val"],
        paths["test"],
        calibration,
        {"evaluate": stage_settings or settings()},
        tmp_path / "out",
    )


def per_case(tmp_path, subset):
    return pd.read_csv(tmp_path / "out" / f"per_case_{subset}.csv", dtype={"image_id": str, "subject": str})


def test_per_case_tables_have_the_spec_columns_and_residual_is_predicted_minus_true(tmp_path):
    paths = write_data(tmp_path)
    evaluate(tmp_path, paths, write_calibration(tmp_path, 0.0, 1.0))
    for subset, first in (("val", "c02"), ("test", "c04")):
        table = per_case(tmp_path, subset)
        assert tuple(table.columns) == PER_CASE_COLUMNS
        assert table["image_id"].iloc[0] == first
        np.testing.assert_allclose(table["residual"], table["predicted"] - table["true"])
        np.testing.assert_allclose(table["abs_error"], np.abs(table["residual"]))
        assert set(table["visit"]) == {"v1", "v2"}
    manifest = pd.read_csv(paths["manifest"]).set_index("image_id")
    test = per_case(tmp_path, "test").set_index("image_id")
    np.testing.assert_allclose(test["true"], manifest.loc[test.index, "score"])


def test_summary_metrics_equal_scipy_and_sklearn_on_the_same_rows(tmp_path):
    paths = write_data(tmp_path)
    summary = evaluate(tmp_path, paths, write_calibration(tmp_path, -4.0, 1.8))
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["task"] == "regression"
    assert written["score_ranges"] == RANGES
    for subset in ("val", "test"):
        table = per_case(tmp_path, subset)
        true, pred = table["true"], table["predicted"]
        block = summary[subset]["overall"]
        assert block["n"] == len(table) == 8
        assert block["rmse"] == pytest.approx(math.sqrt(mean_squared_error(true, pred)))
        assert block["mae"] == pytest.approx(mean_absolute_error(true, pred))
        assert block["r2"] == pytest.approx(r2_score(true, pred))
        assert block["srmse"] == pytest.approx(block["rmse"] / np.std(true))
        assert block["pearson_r"] == pytest.approx(pearsonr(true, pred).statistic)
        assert block["pearson_p"] == pytest.approx(pearsonr(true, pred).pvalue)
        assert block["spearman_rho"] == pytest.approx(spearmanr(true, pred).statistic)
        assert block["rmse_ci_low"] <= block["rmse"] <= block["rmse_ci_high"]
        assert summary[subset]["bootstrap"]["n_subjects"] == 4
        assert written[subset]["overall"]["rmse"] == pytest.approx(block["rmse"])


def test_the_locked_calibration_is_applied_and_never_refitted_on_test(tmp_path):
    paths = write_data(tmp_path)
    calibration = write_calibration(tmp_path, 1.0, 2.0)
    summary = evaluate(tmp_path, paths, calibration)
    for subset in ("val", "test"):
        table = per_case(tmp_path, subset)
        np.testing.assert_allclose(table["predicted"], 1.0 + 2.0 * table["predicted_raw"])
    assert summary["calibration"] == json.loads(calibration.read_text())
    # The raw test predictions are about 3 + 0.5 * true: a line refitted on test would nearly
    # undo that (rmse ~ 2, the noise), the locked one leaves it far off.
    test = per_case(tmp_path, "test")
    refit = np.polyval(np.polyfit(test["predicted_raw"], test["true"], 1), test["predicted_raw"])
    assert summary["test"]["overall"]["rmse"] > 3 * math.sqrt(mean_squared_error(test["true"], refit))


def test_range_labels_are_the_summary_by_range_labels_with_cut_points_in_the_upper_range(tmp_path):
    paths = write_data(tmp_path)
    summary = evaluate(tmp_path, paths, write_calibration(tmp_path, 0.0, 1.0))
    test = per_case(tmp_path, "test").set_index("image_id")
    assert test.loc["c04", "range"] == "[2, 5)"
    assert test.loc["c05", "range"] == "[10, 35]"
    assert test.loc["c10", "range"] == "[10, 35]"  # the top edge closes the last range
    for subset in ("val", "test"):
        labels = per_case(tmp_path, subset)["range"].value_counts()
        for block in summary[subset]["by_range"]:
            assert labels.get(block["range"], 0) == block["n"]


def test_an_empty_range_is_written_as_null_with_n_0(tmp_path):
    paths = write_data(tmp_path)
    evaluate(
        tmp_path, paths, write_calibration(tmp_path, 0.0, 1.0), {**settings(), "score_ranges": [0, 40, 50]}
    )
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    empty = written["test"]["by_range"][1]
    assert (empty["range"], empty["n"], empty["rmse"], empty["pearson_r"]) == ("[40, 50]", 0, None, None)


def test_a_val_scores_file_holding_test_ids_is_refused(tmp_path):
    paths = write_data(tmp_path)
    paths["val"] = paths["test"]
    with pytest.raises(LesionflowError, match=r"test_scores\.csv holds 8 image ids outside the 'val'"):
        evaluate(tmp_path, paths, write_calibration(tmp_path, 0.0, 1.0))


def test_a_test_scores_file_holding_val_ids_is_refused(tmp_path):
    paths = write_data(tmp_path)
    paths["test"] = paths["val"]
    with pytest.raises(LesionflowError, match=r"val_scores\.csv holds 8 image ids outside the 'test'"):
        evaluate(tmp_path, paths, write_calibration(tmp_path, 0.0, 1.0))


def test_a_calibration_not_fitted_on_these_val_cases_is_refused(tmp_path):
    paths = write_data(tmp_path)
    with pytest.raises(
        LesionflowError, match="fitted on 5 validation cases but the validation scores hold 8"
    ):
        evaluate(tmp_path, paths, write_calibration(tmp_path, 0.0, 1.0, n_val=5))
    with pytest.raises(LesionflowError, match="fitted_on 'test'"):
        evaluate(tmp_path, paths, write_calibration(tmp_path, 0.0, 1.0, fitted_on="test"))


def test_settings_without_score_ranges_name_the_key(tmp_path):
    paths = write_data(tmp_path)
    with pytest.raises(LesionflowError, match=r"evaluate\.score_ranges"):
        evaluate(
            tmp_path, paths, write_calibration(tmp_path, 0.0, 1.0), {"bootstrap": settings()["bootstrap"]}
        )
