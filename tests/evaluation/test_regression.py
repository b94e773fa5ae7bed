"""Tests of lesionflow.evaluation.regression against scikit-learn, scipy, expanded resamples and
hand-made edge cases.
"""

import math
import warnings

import numpy as np
import pytest
from schema_settings import evaluate_resampler, evaluate_settings
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from lesionflow.evaluation.regression import (
    INTERVAL_METRICS,
    regression_metrics,
    regression_summary,
    weighted_regression_metrics,
)
from lesionflow.pipeline.errors import LesionflowError


def _summary(y_true, y_pred, subjects=None, ranges=None, **bootstrap):
    """regression_summary with evaluate.bootstrap's schema settings, any of them given."""
    settings = {**evaluate_settings()["bootstrap"], **bootstrap}
    return regression_summary(
        y_true, y_pred, subjects, ranges, **settings, config_key="evaluate.bootstrap"
    )


def _scores(n=40, seed=0, tied=False):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 30, n)
    pred = true + rng.normal(0, 4, n)
    if tied:
        true, pred = np.round(true / 5), np.round(pred / 5)  # few distinct values, many ties
    return true, pred


def _expanded_metrics(true, pred, weights_row):
    rows = np.repeat(np.arange(true.size), weights_row.astype(int))
    return regression_metrics(true[rows], pred[rows])


# --- point metrics ----------------------------------------------------------------------------


def test_point_metrics_equal_sklearn_and_scipy():
    true, pred = _scores()
    out = regression_metrics(true, pred)
    assert out["n"] == 40
    assert out["rmse"] == pytest.approx(math.sqrt(mean_squared_error(true, pred)))
    assert out["srmse"] == pytest.approx(out["rmse"] / np.std(true))
    assert out["mae"] == pytest.approx(mean_absolute_error(true, pred))
    assert out["r2"] == pytest.approx(r2_score(true, pred))
    pearson, spearman = pearsonr(true, pred), spearmanr(true, pred)
    assert out["pearson_r"] == pytest.approx(pearson.statistic)
    assert out["pearson_p"] == pytest.approx(pearson.pvalue)
    assert out["spearman_rho"] == pytest.approx(spearman.statistic)
    assert out["spearman_p"] == pytest.approx(spearman.pvalue)


def test_constant_true_scores_give_nan_srmse_r2_pearson_spearman_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = regression_metrics([3.0, 3.0, 3.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    assert out["rmse"] == pytest.approx(math.sqrt(np.mean([4, 1, 0, 1])))
    for name in ("srmse", "r2", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"):
        assert math.isnan(out[name]), name


def test_constant_predictions_give_nan_correlations_but_defined_r2():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = regression_metrics([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0])
    assert out["r2"] == pytest.approx(r2_score([1, 2, 3, 4], [2, 2, 2, 2]))
    for name in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p"):
        assert math.isnan(out[name]), name


def test_two_rows_give_r2_but_nan_correlations():
    out = regression_metrics([1.0, 3.0], [1.5, 2.0])
    assert out["n"] == 2
    assert out["r2"] == pytest.approx(r2_score([1.0, 3.0], [1.5, 2.0]))
    assert all(math.isnan(out[name]) for name in ("pearson_r", "pearson_p", "spearman_rho", "spearman_p"))


def test_one_row_and_no_rows_leave_undefined_metrics_nan():
    one = regression_metrics([2.0], [1.0])
    assert one["rmse"] == 1.0 and one["mae"] == 1.0
    assert math.isnan(one["r2"]) and math.isnan(one["srmse"])
    none = regression_metrics([], [])
    assert none["n"] == 0 and math.isnan(none["rmse"]) and math.isnan(none["mae"])


def test_perfect_prediction_gives_rmse_0_and_r2_1():
    true = np.array([0.0, 2.0, 5.0, 9.0])
    out = regression_metrics(true, true)
    assert out["rmse"] == 0.0 and out["mae"] == 0.0 and out["srmse"] == 0.0
    assert out["r2"] == 1.0
    assert out["pearson_r"] == pytest.approx(1.0) and out["spearman_rho"] == pytest.approx(1.0)


def test_bad_inputs_raise_naming_the_offending_thing():
    with pytest.raises(LesionflowError, match="y_true has 3 values but y_pred has 2"):
        regression_metrics([1, 2, 3], [1, 2])
    with pytest.raises(LesionflowError, match=r"y_pred\[1\] is nan"):
        regression_metrics([1, 2, 3], [1, math.nan, 3])
    with pytest.raises(LesionflowError, match=r"y_true\[2\] is inf"):
        _summary([1, 2, math.inf], [1, 2, 3])
    with pytest.raises(LesionflowError, match="ranges"):
        _summary([1, 2, 3], [1, 2, 3], ranges=[0, 5, 5])
    with pytest.raises(LesionflowError, match="ranges"):
        _summary([1, 2, 3], [1, 2, 3], ranges=[10])
    with pytest.raises(LesionflowError, match="2 subjects for 3 rows"):
        _summary([1, 2, 3], [1, 2, 3], subjects=["a", "b"])
    with pytest.raises(LesionflowError, match="evaluate.bootstrap.n_resamples"):
        _summary([1, 2, 3], [1, 2, 3], n_resamples=0)


# --- vectorised resamples ---------------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_weighted_metrics_equal_point_metrics_on_expanded_resamples(tied):
    true, pred = _scores(n=30, seed=2, tied=tied)
    if tied:
        assert len(np.unique(true)) < 15 and len(np.unique(pred)) < 15
    res = evaluate_resampler([f"s{i % 11}" for i in range(30)], n_resamples=25, seed=4)
    weights = res.row_weights([f"s{i % 11}" for i in range(30)])
    samples = weighted_regression_metrics(true, pred, weights)
    for r in range(res.n_resamples):
        expected = _expanded_metrics(true, pred, weights[r])
        for name in INTERVAL_METRICS:
            assert samples[name][r] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), (name, r)


def test_weighted_spearman_equals_scipy_on_expanded_resamples_with_ties():
    true = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 5.0, 8.0])
    pred = np.array([2.0, 1.0, 2.0, 2.0, 4.0, 4.0, 4.0, 9.0])
    weights = np.array([[2, 0, 1, 3, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1], [0, 2, 2, 0, 1, 0, 1, 2]])
    rho = weighted_regression_metrics(true, pred, weights)["spearman_rho"]
    for r in range(3):
        rows = np.repeat(np.arange(8), weights[r])
        assert rho[r] == pytest.approx(spearmanr(true[rows], pred[rows]).statistic, abs=1e-12)


def test_resamples_with_constant_or_too_few_rows_are_nan():
    true = np.array([1.0, 1.0, 2.0])
    pred = np.array([0.0, 1.0, 2.0])
    weights = np.array([[2, 1, 0], [0, 0, 2], [0, 0, 0], [1, 0, 1]])
    out = weighted_regression_metrics(true, pred, weights)
    assert np.isnan(out["r2"][0]) and np.isnan(out["pearson_r"][0])  # true constant in expansion
    assert np.isnan(out["srmse"][1]) and out["rmse"][1] == 0.0
    assert all(np.isnan(out[name][2]) for name in INTERVAL_METRICS)  # nothing drawn
    assert not np.isnan(out["r2"][3]) and np.isnan(out["spearman_rho"][3])  # n = 2


# --- summary ----------------------------------------------------------------------------------


def test_summary_blocks_have_every_metric_with_an_interval_and_n():
    true, pred = _scores(n=50, seed=1)
    summary = _summary(true, pred, n_resamples=200, seed=3, confidence=0.95)
    overall = summary["overall"]
    assert overall["n"] == 50
    point = regression_metrics(true, pred)
    for name in INTERVAL_METRICS:
        assert overall[name] == pytest.approx(point[name])
        assert overall[f"{name}_ci_low"] <= overall[name] <= overall[f"{name}_ci_high"]
    assert overall["pearson_p"] == pytest.approx(point["pearson_p"])
    assert "pearson_p_ci_low" not in overall
    assert summary["bootstrap"] == {
        "unit": "subject",
        "n_resamples": 200,
        "seed": 3,
        "confidence": 0.95,
        "n_subjects": 50,
    }
    assert summary["by_range"] == [] and summary["n_outside_ranges"] == 0


def test_by_range_puts_cut_points_in_the_upper_range_and_closes_the_top_edge():
    true = np.array([-1.0, 0.0, 4.9, 5.0, 7.0, 10.0, 35.0, 36.0])
    pred = true + 1.0
    summary = _summary(true, pred, ranges=[0, 5, 10, 35], n_resamples=50)
    blocks = summary["by_range"]
    assert [b["range"] for b in blocks] == ["[0, 5)", "[5, 10)", "[10, 35]"]
    assert [(b["low"], b["high"]) for b in blocks] == [(0, 5), (5, 10), (10, 35)]
    assert [b["n"] for b in blocks] == [2, 2, 2]  # 5 -> [5, 10), 10 -> [10, 35], 35 included
    assert summary["n_outside_ranges"] == 2  # -1 and 36
    assert all(b["rmse"] == pytest.approx(1.0) for b in blocks)
    assert summary["overall"]["n"] == 8


def test_empty_range_reports_n_0_and_nan_metrics():
    summary = _summary([1.0, 2.0, 3.0], [1.0, 2.0, 3.5], ranges=[0, 5, 10], n_resamples=20)
    empty = summary["by_range"][1]
    assert empty["n"] == 0
    assert math.isnan(empty["rmse"]) and math.isnan(empty["rmse_ci_low"])


def test_subjects_with_several_rows_are_resampled_together():
    # Subject a is predicted exactly, subject b off by 2 on each of its three rows: a subject-level
    # resample draws aa, ab or bb, so RMSE can only be 0, sqrt(2) or 2.
    true = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    pred = true + np.array([0, 0, 0, 2, 2, 2])
    subjects = ["a", "a", "a", "b", "b", "b"]
    res = evaluate_resampler(subjects, n_resamples=300, seed=0)
    rmse = weighted_regression_metrics(true, pred, res.row_weights(subjects))["rmse"]
    assert np.allclose(np.sort(np.unique(np.round(rmse, 12))), [0.0, math.sqrt(2), 2.0])
    summary = _summary(true, pred, subjects=subjects, n_resamples=300, seed=0, confidence=0.95)
    assert summary["bootstrap"]["n_subjects"] == 2
    assert summary["overall"]["rmse_ci_low"] == pytest.approx(np.percentile(rmse, 2.5))
    assert summary["overall"]["rmse_ci_high"] == pytest.approx(np.percentile(rmse, 97.5))


def test_summary_intervals_are_percentiles_of_explicitly_resampled_tables():
    true, pred = _scores(n=18, seed=5)
    subjects = [f"p{i // 3}" for i in range(18)]
    summary = _summary(true, pred, subjects=subjects, n_resamples=40, seed=9, confidence=0.8)
    res = evaluate_resampler(subjects, n_resamples=40, seed=9)
    weights = res.row_weights(subjects)
    mae = [_expanded_metrics(true, pred, weights[r])["mae"] for r in range(40)]
    assert summary["overall"]["mae_ci_low"] == pytest.approx(np.percentile(mae, 10))
    assert summary["overall"]["mae_ci_high"] == pytest.approx(np.percentile(mae, 90))


def test_summary_is_reproducible_by_seed():
    true, pred = _scores(n=25, seed=6)
    a = _summary(true, pred, n_resamples=100, seed=1)
    b = _summary(true, pred, n_resamples=100, seed=1)
    c = _summary(true, pred, n_resamples=100, seed=2)
    assert a == b
    assert a["overall"]["rmse_ci_low"] != c["overall"]["rmse_ci_low"]
