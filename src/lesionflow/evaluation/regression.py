"""Regression metrics (RMSE, MAE, R², Pearson, Spearman) with subject-level bootstrap intervals, by range.

Must never report an undefined metric (constant scores, too few rows) as a number, nor let scipy warn.

Conventions:

- srmse = RMSE / population standard deviation of the true scores; NaN when the true scores are constant.
- r2 follows sklearn.metrics.r2_score; NaN (not 0 or 1) when the true scores are constant or n < 2.
- pearson_* and spearman_* follow scipy.stats; r and p are NaN when either input is constant or n < 3.
- Intervals come from the subject-level bootstrap of ``lesionflow.evaluation.bootstrap``; every resample is
  scored as the explicitly expanded resampled data would be (weights = subject multiplicities).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from lesionflow.evaluation.bootstrap import Estimate, Resampler
from lesionflow.evaluation.score_metrics import (
    INTERVAL_METRICS,
    P_VALUES,
    check_pair,
    finite_vector,
    regression_metrics,
)
from lesionflow.pipeline.errors import LesionflowError

__all__ = ["INTERVAL_METRICS", "P_VALUES", "regression_metrics", "regression_summary"]

def regression_summary(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    subjects: Sequence[str] | None = None,
    ranges: Sequence[float] | None = None,
    *,
    n_resamples: int,
    seed: int,
    confidence: float,
    config_key: str,
) -> dict:
    """Metrics with subject-level bootstrap intervals, overall and by range of the true score.

    ``subjects`` default to one per row. The bootstrap settings are those of the config section
    ``config_key`` (see ``Resampler.from_subjects``). ``ranges`` are increasing cut points of the
    true score: [0, 5, 10, 35] gives [0, 5), [5, 10), [10, 35] (the last range is closed on the
    right); rows outside every range are counted in ``n_outside_ranges``. Returns
    ``{"overall": block, "by_range": [block, ...], "n_outside_ranges": int, "bootstrap": {...}}``
    where a block has ``n`` and every metric with ``_ci_low`` / ``_ci_high`` (p-values without).
    """
    true, pred = check_pair(y_true, y_pred)
    if true.size == 0:
        raise LesionflowError("regression summary: no rows to evaluate")
    if subjects is None:
        subjects = [str(i) for i in range(true.size)]
    elif len(subjects) != true.size:
        raise LesionflowError(f"regression summary: {len(subjects)} subjects for {true.size} rows")
    cuts = _check_ranges(ranges)
    resampler = Resampler.from_subjects(subjects, n_resamples, seed, confidence, config_key)
    idx = resampler.subject_index(subjects)

    overall = _block(true, pred, idx, resampler, np.ones(true.size, dtype=bool))
    by_range = []
    in_some_range = np.zeros(true.size, dtype=bool)
    for label, low, high, mask in _range_masks(true, cuts):
        in_some_range |= mask
        block = _block(true, pred, idx, resampler, mask)
        by_range.append({"range": label, "low": low, "high": high, **block})
    return {
        "overall": overall,
        "by_range": by_range,
        "n_outside_ranges": int(true.size - in_some_range.sum()) if cuts else 0,
        "bootstrap": {
            "unit": "subject",
            "n_resamples": resampler.n_resamples,
            "seed": resampler.seed,
            "confidence": resampler.confidence,
            "n_subjects": resampler.n_subjects,
        },
    }


def weighted_regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray) -> dict:
    """Every interval metric for each row of ``weights`` (shape (n_resamples, n_rows)) at once.

    Each row's values equal ``regression_metrics`` on the data with every row repeated as often as its
    weight (whole numbers). Spearman is the weighted Pearson of the average ranks of that expanded data.
    """
    true = np.asarray(y_true, dtype=float)
    pred = np.asarray(y_pred, dtype=float)
    w = np.asarray(weights, dtype=float)
    n_eff = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = pred - true
        mse = (w @ err**2) / n_eff
        rank_true, true_levels = _weighted_average_ranks(true, w)
        rank_pred, pred_levels = _weighted_average_ranks(pred, w)
        # A resample is constant when at most one distinct value has positive weight; tested
        # exactly on the values, because a weighted variance can be a rounding residue.
        true_varies, pred_varies = true_levels > 1, pred_levels > 1
        var_true = _weighted_cov(true, true, w, n_eff)
        both_vary = true_varies & pred_varies & (n_eff >= 3)
        out = {
            "rmse": np.sqrt(mse),
            "srmse": np.where(true_varies, np.sqrt(mse) / np.sqrt(var_true), math.nan),
            "mae": (w @ np.abs(err)) / n_eff,
            "r2": np.where(true_varies & (n_eff >= 2), 1.0 - mse / var_true, math.nan),
            "pearson_r": np.where(both_vary, _weighted_pearson(true, pred, w, n_eff), math.nan),
            "spearman_rho": np.where(both_vary, _weighted_pearson(rank_true, rank_pred, w, n_eff), math.nan),
        }
    # Resamples that drew none of these rows (e.g. of one range) have every metric undefined.
    return {name: np.where(n_eff > 0, values, math.nan) for name, values in out.items()}


def range_labels(y_true: ArrayLike, ranges: Sequence[float]) -> np.ndarray:
    """The ``by_range`` label of ``regression_summary`` that each true score falls in ('' in none).

    Labels and edges are exactly those of ``regression_summary`` with the same ``ranges``.
    """
    true = finite_vector(y_true, "y_true")
    labels = np.full(true.size, "", dtype=object)
    for label, _, _, mask in _range_masks(true, _check_ranges(ranges)):
        labels[mask] = label
    return labels


def regression_estimates(
    y_true: ArrayLike, y_pred: ArrayLike, subjects: Sequence[str], resampler: Resampler
) -> dict[str, Estimate]:
    """Every interval metric as an :class:`Estimate` over ``resampler``'s subject resamples.

    Two prediction sets of the same rows scored with one ``resampler`` see the same resamples, so
    ``bootstrap.difference`` of their estimates is the paired difference.
    """
    true, pred = check_pair(y_true, y_pred)
    idx = resampler.subject_index(subjects)
    if idx.size != true.size:
        raise LesionflowError(f"regression estimates: {idx.size} subjects for {true.size} rows")
    point = regression_metrics(true, pred)
    samples = weighted_regression_metrics(true, pred, resampler.counts[:, idx])
    return {
        name: Estimate(point[name], samples[name], point["n"], resampler.confidence)
        for name in INTERVAL_METRICS
    }


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _range_masks(true: np.ndarray, cuts: list[float]) -> list[tuple[str, float, float, np.ndarray]]:
    """(label, low, high, rows in the range) of each range between consecutive cut points."""
    out = []
    for i, (low, high) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        last = i == len(cuts) - 2
        # A value on a cut point belongs to the upper range; the top edge closes the last range.
        mask = (true >= low) & ((true <= high) if last else (true < high))
        out.append((f"[{low:g}, {high:g}{']' if last else ')'}", low, high, mask))
    return out


def _block(
    true: np.ndarray, pred: np.ndarray, idx: np.ndarray, resampler: Resampler, mask: np.ndarray
) -> dict:
    point = regression_metrics(true[mask], pred[mask])
    samples = weighted_regression_metrics(true[mask], pred[mask], resampler.counts[:, idx[mask]])
    block: dict = {"n": point["n"]}
    for name in INTERVAL_METRICS:
        low, high = Estimate(point[name], samples[name], point["n"], resampler.confidence).interval()
        block[name] = point[name]
        block[f"{name}_ci_low"] = low
        block[f"{name}_ci_high"] = high
        if name in P_VALUES:
            block[P_VALUES[name]] = point[P_VALUES[name]]
    return block


def _weighted_average_ranks(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks of the expanded data for every weight row, and the number of distinct values present.

    Rank of a value = weight of the smaller values + (weight of the equal values + 1) / 2, which is
    scipy.stats.rankdata's average rank of that value in the expanded data. One sort serves every row.
    """
    if values.size == 0:
        return np.zeros_like(weights), np.zeros(weights.shape[0], dtype=int)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    is_new = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    starts = np.flatnonzero(is_new)
    level = np.empty(values.size, dtype=np.intp)
    level[order] = np.cumsum(is_new) - 1
    level_weight = np.add.reduceat(weights[:, order], starts, axis=1)
    below = np.cumsum(level_weight, axis=1) - level_weight
    level_rank = below + (level_weight + 1.0) / 2.0
    return level_rank[:, level], np.count_nonzero(level_weight > 0, axis=1)


def _weighted_cov(x: np.ndarray, y: np.ndarray, w: np.ndarray, n_eff: np.ndarray) -> np.ndarray:
    # Two passes (centre first) rather than E[xy] - E[x]E[y], which cancels catastrophically.
    x_c = x - ((w * x).sum(axis=1) / n_eff)[:, None]
    y_c = y - ((w * y).sum(axis=1) / n_eff)[:, None]
    return (w * x_c * y_c).sum(axis=1) / n_eff


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray, n_eff: np.ndarray) -> np.ndarray:
    r = _weighted_cov(x, y, w, n_eff) / np.sqrt(_weighted_cov(x, x, w, n_eff) * _weighted_cov(y, y, w, n_eff))
    # scipy clips too: rounding can push |r| a hair above 1.
    return np.clip(r, -1.0, 1.0)


def _check_ranges(ranges: Sequence[float] | None) -> list[float]:
    if ranges is None:
        return []
    try:
        cuts = [float(cut) for cut in ranges]
    except (TypeError, ValueError):
        raise LesionflowError(f"ranges must be numbers, got {list(ranges)!r}") from None
    increasing = all(b > a for a, b in zip(cuts, cuts[1:], strict=False))
    if len(cuts) < 2 or not all(math.isfinite(c) for c in cuts) or not increasing:
        raise LesionflowError(f"ranges must be two or more strictly increasing finite cut points, got {cuts}")
    return cuts
