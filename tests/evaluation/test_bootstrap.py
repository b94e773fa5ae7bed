"""Tests of lesionflow.evaluation.bootstrap against explicit resampled tables, scikit-learn and
hand-made edge cases.
"""

import math
import re

import numpy as np
import pytest
from schema_settings import evaluate_resampler, evaluate_settings
from sklearn.metrics import average_precision_score, roc_auc_score

from lesionflow.evaluation.bootstrap import (
    Estimate,
    Resampler,
    average_precision,
    derived,
    describe,
    difference,
    mean,
    ratio,
    roc_auc,
)
from lesionflow.pipeline.errors import LesionflowError

CONFIDENCE = evaluate_settings()["bootstrap"]["confidence"]


def _table(n_rows=30, n_subjects=9, seed=0, tied=False):
    """Rows (images) of several subjects, a binary label and a score (rounded when tied)."""
    rng = np.random.default_rng(seed)
    subjects = [f"s{rng.integers(n_subjects)}" for _ in range(n_rows)]
    subjects[:n_subjects] = [f"s{i}" for i in range(n_subjects)]  # every subject present
    y = rng.random(n_rows) > 0.5
    y[:2] = [True, False]  # both classes present in the original data
    scores = rng.random(n_rows) + 0.3 * y
    if tied:
        scores = np.round(scores, 1)
    values = rng.normal(size=n_rows)
    return subjects, y, scores, values


def _expanded_rows(subjects, resampler, r):
    """Row indices of resample r built the slow way: each subject's rows repeated by its multiplicity."""
    rows = []
    for k, subject in enumerate(resampler.subjects):
        own = [i for i, s in enumerate(subjects) if s == subject]
        rows.extend(own * int(resampler.counts[r, k]))
    return np.array(rows, dtype=int)


# --- Resampler --------------------------------------------------------------------------------


def test_resampler_sorts_distinct_subjects_and_draws_each_resample_with_n_subjects_draws():
    res = evaluate_resampler(["b", "a", "b", "c"], n_resamples=50, seed=1)
    assert res.subjects == ("a", "b", "c")
    assert res.counts.shape == (50, 3)
    assert (res.counts.sum(axis=1) == 3).all()
    assert res.n_resamples == 50 and res.n_subjects == 3


def test_resampler_is_reproducible_by_seed():
    subjects = [f"s{i}" for i in range(20)]
    a = evaluate_resampler(subjects, n_resamples=30, seed=7)
    b = evaluate_resampler(subjects, n_resamples=30, seed=7)
    c = evaluate_resampler(subjects, n_resamples=30, seed=8)
    assert np.array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, c.counts)


def test_row_weights_keep_a_subjects_images_together():
    subjects = ["p1", "p1", "p1", "p2", "p3", "p3"]
    res = evaluate_resampler(subjects, n_resamples=200, seed=0)
    weights = res.row_weights(subjects)
    assert weights.shape == (200, 6)
    # The three images of p1 always enter with the same multiplicity, that of subject p1.
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()
    assert np.array_equal(weights[:, 0], res.counts[:, res.subjects.index("p1")])
    assert (weights[:, 4] == weights[:, 5]).all()
    # Each resample draws 3 subjects, so p1 contributes 0, 3, 6 or 9 rows.
    assert set(np.unique(weights[:, :3].sum(axis=1))) <= {0, 3, 6, 9}


def test_row_weights_raise_for_a_subject_the_resampler_does_not_know():
    res = evaluate_resampler(["a", "b"], n_resamples=5)
    with pytest.raises(LesionflowError, match="row 1: subject 'zz'"):
        res.row_weights(["a", "zz", "b"])


@pytest.mark.parametrize("section", ["evaluate.bootstrap", "compare.bootstrap"])
@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"n_resamples": 0}, "n_resamples"),
        ({"n_resamples": 2.5}, "n_resamples"),
        ({"seed": -1}, "seed"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0}, "confidence"),
    ],
)
def test_bad_bootstrap_settings_raise_naming_the_callers_config_key(section, kwargs, key):
    settings = {**evaluate_settings()["bootstrap"], **kwargs}
    with pytest.raises(LesionflowError, match="^" + re.escape(f"{section}.{key} must be")):
        Resampler.from_subjects(["a", "b"], **settings, config_key=section)


def test_no_subjects_raises():
    with pytest.raises(LesionflowError, match="no subjects"):
        evaluate_resampler([])


# --- ratio and mean ---------------------------------------------------------------------------


def test_ratio_point_is_sum_over_sum_and_mean_point_ignores_nan_rows():
    subjects = ["a", "a", "b", "c"]
    res = evaluate_resampler(subjects, n_resamples=20)
    est = ratio([1, 2, 3, 4], [2, 2, 2, 4], subjects, res)
    assert est.value == pytest.approx(10 / 10) and est.n == 4
    m = mean([1.0, math.nan, 3.0, 5.0], subjects, res)
    assert m.value == pytest.approx(3.0)
    assert m.n == 3  # the NaN row is excluded and not counted


def test_ratio_and_mean_resamples_equal_an_explicit_loop_over_resampled_tables():
    subjects, _, _, values = _table(n_rows=25, n_subjects=8, seed=3)
    values[[4, 11]] = math.nan
    den = np.arange(1, 26, dtype=float)
    res = evaluate_resampler(subjects, n_resamples=12, seed=5)
    defined = ~np.isnan(values)
    est_ratio = ratio(values[defined], den[defined], np.array(subjects)[defined], res)
    est_mean = mean(values, subjects, res)
    for r in range(res.n_resamples):
        rows = _expanded_rows(subjects, res, r)
        rows_defined = rows[defined[rows]]
        expected_ratio = values[rows_defined].sum() / den[rows_defined].sum()
        assert est_ratio.samples[r] == pytest.approx(expected_ratio, rel=1e-12)
        assert est_mean.samples[r] == pytest.approx(values[rows_defined].mean(), rel=1e-12)


def test_ratio_is_nan_where_the_denominator_is_zero():
    subjects = ["a", "b"]
    res = evaluate_resampler(subjects, n_resamples=200, seed=0)
    est = ratio([1.0, 1.0], [0.0, 1.0], subjects, res)
    only_a = res.counts[:, 0] == 2  # resamples that drew subject a twice have denominator 0
    assert only_a.any()
    assert np.isnan(est.samples[only_a]).all()
    assert not np.isnan(est.samples[~only_a]).any()
    assert est.n_undefined_resamples == int(only_a.sum())
    assert math.isnan(ratio([1.0], [0.0], ["a"], res).value)


def test_ratio_refuses_undefined_rows_and_mismatched_lengths():
    res = evaluate_resampler(["a", "b"], n_resamples=5)
    with pytest.raises(LesionflowError, match=r"ratio numerator\[1\] is nan"):
        ratio([1.0, math.nan], [1.0, 1.0], ["a", "b"], res)
    with pytest.raises(LesionflowError, match="lengths differ"):
        ratio([1.0, 2.0], [1.0, 1.0], ["a"], res)


def test_tables_scored_with_one_resampler_give_paired_resamples():
    subjects, _, _, values = _table(n_rows=20, n_subjects=6, seed=2)
    other = values + np.linspace(0, 1, 20)
    res = evaluate_resampler(subjects, n_resamples=40, seed=0)
    paired = difference(mean(values, subjects, res), mean(other, subjects, res))
    direct = mean(values - other, subjects, res)
    assert paired.value == pytest.approx(direct.value)
    assert np.allclose(paired.samples, direct.samples, rtol=0, atol=1e-12)


# --- ROC-AUC and average precision ------------------------------------------------------------


@pytest.mark.parametrize("tied", [False, True])
def test_roc_auc_and_ap_points_equal_sklearn(tied):
    subjects, y, scores, _ = _table(seed=4, tied=tied)
    res = evaluate_resampler(subjects, n_resamples=10)
    assert roc_auc(y, scores, subjects, res).value == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert average_precision(y, scores, subjects, res).value == pytest.approx(
        average_precision_score(y, scores), abs=1e-12
    )


@pytest.mark.parametrize("tied", [False, True])
def test_roc_auc_and_ap_resamples_equal_sklearn_with_weights_and_on_expanded_data(tied):
    subjects, y, scores, _ = _table(n_rows=40, n_subjects=12, seed=6, tied=tied)
    if tied:
        assert len(np.unique(scores)) < len(scores)
    res = evaluate_resampler(subjects, n_resamples=30, seed=2)
    auc = roc_auc(y, scores, subjects, res)
    ap = average_precision(y, scores, subjects, res)
    weights = res.row_weights(subjects)
    checked = 0
    for r in range(res.n_resamples):
        rows = _expanded_rows(subjects, res, r)
        if len(np.unique(y[rows])) < 2:
            continue
        expected_auc = roc_auc_score(y, scores, sample_weight=weights[r])
        expected_ap = average_precision_score(y, scores, sample_weight=weights[r])
        assert auc.samples[r] == pytest.approx(expected_auc, abs=1e-12)
        assert ap.samples[r] == pytest.approx(expected_ap, abs=1e-12)
        assert auc.samples[r] == pytest.approx(roc_auc_score(y[rows], scores[rows]), abs=1e-12)
        assert ap.samples[r] == pytest.approx(average_precision_score(y[rows], scores[rows]), abs=1e-12)
        checked += 1
    assert checked >= 20


def test_tied_positive_and_negative_count_one_half_in_roc_auc():
    res = evaluate_resampler(["a", "b"], n_resamples=5)
    assert roc_auc([True, False], [0.5, 0.5], ["a", "b"], res).value == 0.5


def test_one_class_resamples_are_nan_and_counted():
    subjects = ["pos", "pos", "neg"]
    res = evaluate_resampler(subjects, n_resamples=300, seed=0)
    y, scores = [True, True, False], [0.9, 0.4, 0.6]
    one_class = (res.counts == 0).any(axis=1)  # a resample that drew one subject twice
    for est in (roc_auc(y, scores, subjects, res), average_precision(y, scores, subjects, res)):
        assert not math.isnan(est.value)
        assert np.isnan(est.samples[one_class]).all()
        assert not np.isnan(est.samples[~one_class]).any()
        assert est.n_undefined_resamples == int(one_class.sum()) > 0


def test_one_class_data_gives_nan_point_and_nan_interval():
    res = evaluate_resampler(["a", "b"], n_resamples=20)
    for fn in (roc_auc, average_precision):
        est = fn([True, True], [0.2, 0.7], ["a", "b"], res)
        assert math.isnan(est.value)
        assert all(math.isnan(v) for v in est.interval())
        assert est.n_undefined_resamples == 20


def test_non_binary_labels_raise_naming_the_row():
    res = evaluate_resampler(["a", "b"], n_resamples=5)
    with pytest.raises(LesionflowError, match=r"roc_auc y_true\[1\]"):
        roc_auc([0, 2], [0.1, 0.2], ["a", "b"], res)


# --- Estimate, difference, derived, describe --------------------------------------------------


def test_difference_of_an_estimate_with_itself_is_zero_in_every_resample():
    subjects, y, scores, _ = _table(seed=8)
    res = evaluate_resampler(subjects, n_resamples=100, seed=3)
    est = roc_auc(y, scores, subjects, res)
    diff = difference(est, est)
    defined = ~np.isnan(est.samples)
    assert diff.value == 0.0
    assert (diff.samples[defined] == 0.0).all()
    assert diff.interval() == (0.0, 0.0)


def test_difference_refuses_estimates_from_different_resamplers():
    a = Estimate(0.5, np.zeros(10), 3, CONFIDENCE)
    b = Estimate(0.5, np.zeros(11), 3, CONFIDENCE)
    with pytest.raises(LesionflowError, match="same Resampler"):
        difference(a, b)


def test_interval_of_a_constant_statistic_is_degenerate():
    subjects = ["a", "a", "b", "c", "d"]
    res = evaluate_resampler(subjects, n_resamples=50)
    est = mean([2.5] * 5, subjects, res)
    assert est.interval() == (2.5, 2.5)


def test_interval_uses_the_resamplers_confidence():
    subjects = [f"s{i}" for i in range(30)]
    values = np.arange(30, dtype=float)
    narrow = mean(values, subjects, evaluate_resampler(subjects, n_resamples=500, confidence=0.5))
    wide = mean(values, subjects, evaluate_resampler(subjects, n_resamples=500, confidence=0.99))
    assert narrow.confidence == 0.5 and wide.confidence == 0.99
    n_lo, n_hi = narrow.interval()
    w_lo, w_hi = wide.interval()
    assert w_lo < n_lo < narrow.value < n_hi < w_hi
    assert n_lo == pytest.approx(np.percentile(narrow.samples, 25))


def test_derived_f1_is_elementwise_and_nan_where_undefined():
    precision = Estimate(0.5, np.array([0.5, 0.0, math.nan]), 10, CONFIDENCE)
    recall = Estimate(1.0, np.array([1.0, 0.0, 0.5]), 8, CONFIDENCE)
    f1 = derived(lambda p, s: 2 * p * s / (p + s), precision, recall)
    assert f1.value == pytest.approx(2 / 3)
    assert f1.samples[0] == pytest.approx(2 / 3)
    assert math.isnan(f1.samples[1]) and math.isnan(f1.samples[2])  # 0/0 and NaN input
    assert f1.n == 8
    nothing = Estimate(0.0, np.zeros(3), 1, CONFIDENCE)
    zero = derived(lambda p, s: 2 * p * s / (p + s), nothing, nothing)
    assert math.isnan(zero.value)


def test_describe_is_flat_and_keeps_nan_as_float():
    est = Estimate(math.nan, np.full(4, math.nan), 0, CONFIDENCE)
    out = describe(est, "presence_roc_auc")
    name = "presence_roc_auc"
    assert set(out) == {name, f"{name}_n", f"{name}_ci_low", f"{name}_ci_high"}
    assert isinstance(out["presence_roc_auc"], float) and math.isnan(out["presence_roc_auc"])
    assert math.isnan(out["presence_roc_auc_ci_low"]) and math.isnan(out["presence_roc_auc_ci_high"])
    assert out["presence_roc_auc_n"] == 0
    defined = describe(Estimate(0.7, np.array([0.6, 0.8]), 5, confidence=0.5), "dice")
    assert defined["dice"] == 0.7 and defined["dice_n"] == 5
    assert defined["dice_ci_low"] < defined["dice_ci_high"]
