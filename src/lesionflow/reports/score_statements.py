"""Rule-based sentences and tables about a regression run: bias by range, metrics, calibration, agreement.

Must never state a finding without its number, nor claim a direction its bootstrap interval does not support.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from lesionflow.evaluation.bootstrap import Estimate, Resampler, mean
from lesionflow.evaluation.regression import INTERVAL_METRICS, P_VALUES
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.labels import interval_text, p_value_text

# A group with fewer cases than this is flagged as too few to judge, whatever its numbers.
MIN_CASES = 3
# Bland-Altman limits of agreement: mean difference +- this many standard deviations (the
# method's definition: 95 % of differences of a normal distribution lie within).
AGREEMENT_SDS = 1.96
# The config section the bootstrap settings in summary.json come from, for error messages.
BOOTSTRAP_KEY = "evaluate.bootstrap"
# Columns the regression tables must have; the readers check them at the boundary.
PER_CASE_COLUMNS = ("image_id", "subject", "visit", "true", "predicted", "residual", "abs_error", "range")
EPOCH_COLUMNS = ("epoch", "train_loss", "val_loss", "val_srmse")
# Identifiers and labels are text: ids such as 0042 keep their zeros, an empty visit stays ''.
_TEXT_COLUMNS = ("image_id", "subject", "visit", "range")
# Display names of the summary metrics, in table order.
METRIC_LABELS = {
    "srmse": "sRMSE",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "pearson_r": "Pearson r",
    "spearman_rho": "Spearman ρ",
}


class Agreement(NamedTuple):
    """Bland-Altman numbers of predicted - true: mean bias, sample sd (ddof 1), limits, n."""

    bias: float
    sd: float
    low: float
    high: float
    n: int


class Line(NamedTuple):
    """A least-squares line y = intercept + slope * x with its slope's interval and fit residual sd."""

    intercept: float
    slope: float
    slope_low: float
    slope_high: float
    residual_sd: float
    n: int


# ---------------------------------------------------------------- inputs


def read_per_case(path: str | os.PathLike, what: str = "per_case") -> pd.DataFrame:
    """A per_case_{val,test}.csv of the evaluate_scores stage, columns checked, ids as text."""
    return _read_checked(path, PER_CASE_COLUMNS, what)


def read_epochs(path: str | os.PathLike) -> pd.DataFrame:
    """The regression train stage's metrics_by_epoch.csv, columns checked."""
    return _read_checked(path, EPOCH_COLUMNS, "metrics_by_epoch")


def _read_checked(path: str | os.PathLike, columns: Sequence[str], what: str) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={c: str for c in _TEXT_COLUMNS}, keep_default_na=False, na_values=[""])
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LesionflowError(f"{path}: expected a {what} table with column(s) {', '.join(missing)}")
    for column in _TEXT_COLUMNS:
        if column in frame.columns:
            frame[column] = frame[column].fillna("")
    return frame


def case_resampler(per_case: pd.DataFrame, bootstrap: Mapping[str, Any]) -> Resampler:
    """The subject resampler of a per-case table with the summary's ``bootstrap`` settings
    (n_resamples, seed, confidence: those the evaluate stage used)."""
    return Resampler.from_subjects(
        per_case["subject"].astype(str).tolist(),
        bootstrap["n_resamples"],
        bootstrap["seed"],
        bootstrap["confidence"],
        BOOTSTRAP_KEY,
    )


# ---------------------------------------------------------------- numbers


def mean_residual(per_case: pd.DataFrame, rows: np.ndarray, resampler: Resampler) -> Estimate:
    """Mean residual (predicted - true) of the ``rows`` (bool mask) with its subject-bootstrap samples."""
    chosen = per_case.loc[np.asarray(rows, dtype=bool)]
    return mean(chosen["residual"].to_numpy(dtype=float), chosen["subject"].astype(str).tolist(), resampler)


def agreement_limits(per_case: pd.DataFrame) -> Agreement:
    """Bland-Altman bias and 95 % limits of agreement (bias +- 1.96 sample sd); sd NaN below 2 cases."""
    diff = per_case["residual"].to_numpy(dtype=float)
    n = int(diff.size)
    bias = float(diff.mean()) if n else math.nan
    sd = float(diff.std(ddof=1)) if n >= 2 else math.nan
    return Agreement(bias, sd, bias - AGREEMENT_SDS * sd, bias + AGREEMENT_SDS * sd, n)


def least_squares_line(x: np.ndarray, y: np.ndarray, confidence: float) -> Line | None:
    """scipy's linregress of y on x with the ``confidence`` t-interval of the slope; None when
    undefined (fewer than 3 points, or x constant)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.all(x == x[0]):
        return None
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 2) * fit.stderr
    residual_sd = float(np.sqrt(np.sum((y - fit.intercept - fit.slope * x) ** 2) / (x.size - 2)))
    slope = float(fit.slope)
    return Line(float(fit.intercept), slope, slope - half, slope + half, residual_sd, int(x.size))


def line_band(
    line: Line, x: np.ndarray, x_grid: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ``confidence`` band of the fitted mean at ``x_grid`` (t with n - 2 df)."""
    x = np.asarray(x, dtype=float)
    centre = line.intercept + line.slope * x_grid
    spread = np.sqrt(1 / x.size + (x_grid - x.mean()) ** 2 / np.sum((x - x.mean()) ** 2))
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 2) * line.residual_sd * spread
    return centre - half, centre + half


# ---------------------------------------------------------------- statements


def bias_statement(group: str, estimate: Estimate, n_subjects: int) -> str:
    """'<group> are under-predicted by 3.10 on average [1.90, 4.20] (...; n = 6 images of 4 subjects)',
    over-predicted, or no systematic bias when the interval contains 0; too few to judge below
    MIN_CASES cases."""
    n = f"n = {estimate.n} images of {n_subjects} subjects"
    if estimate.n < MIN_CASES:
        cases = f"{estimate.n} case(s) of {n_subjects} subject(s)"
        return f"{group}: {cases}, fewer than {MIN_CASES}: too few to judge."
    low, high = estimate.interval()
    value = estimate.value
    if math.isnan(low) or math.isnan(high):
        return (
            f"{group}: mean residual {value:+.2f} ({n}) has no interval (no resample is defined): not judged."
        )
    interval = f"{100 * estimate.confidence:g} % subject-bootstrap interval; {n}"
    if high < 0:
        return (
            f"{group} are under-predicted by {-value:.2f} on average [{-high:.2f}, {-low:.2f}] "
            f"(mean of true - predicted, {interval})."
        )
    if low > 0:
        return (
            f"{group} are over-predicted by {value:.2f} on average [{low:.2f}, {high:.2f}] "
            f"(mean of predicted - true, {interval})."
        )
    return (
        f"{group}: no systematic bias: the interval contains 0 (mean of predicted - true {value:+.2f} "
        f"[{low:+.2f}, {high:+.2f}], {interval})."
    )


def high_score_statement(per_case: pd.DataFrame, high_score: float, resampler: Resampler) -> str:
    """The bias of the cases whose true score is >= ``high_score``."""
    rows = per_case["true"].to_numpy(dtype=float) >= high_score
    subjects = per_case.loc[rows, "subject"].nunique()
    return bias_statement(
        f"high scores (>= {high_score:g})", mean_residual(per_case, rows, resampler), subjects
    )


def range_bias_statements(per_case: pd.DataFrame, ranges: Sequence[str], resampler: Resampler) -> list[str]:
    """The bias of each range of the true score (``range`` labels, in order), one sentence each."""
    out = []
    for label in ranges:
        rows = (per_case["range"] == label).to_numpy()
        subjects = per_case.loc[rows, "subject"].nunique()
        out.append(bias_statement(f"scores in {label}", mean_residual(per_case, rows, resampler), subjects))
    return out


def block_interval(block: Mapping[str, Any], name: str) -> str:
    """'0.520 [0.400, 0.660]': one metric of a summary block with its interval."""
    return interval_text(*(_number(block.get(key)) for key in (name, f"{name}_ci_low", f"{name}_ci_high")))


def metric_text(block: Mapping[str, Any], name: str) -> str:
    """'sRMSE 0.520 [0.400, 0.660]' of one metric of a summary block, with its p-value if it has one."""
    text = f"{METRIC_LABELS[name]} {block_interval(block, name)}"
    if name in P_VALUES:
        text += f" (p {_p_text(_number(block.get(P_VALUES[name])))})"
    return text


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _p_text(p: float) -> str:
    text = p_value_text(p)
    if text == "undefined":
        return text
    return f"< {text[1:]}" if text.startswith("<") else f"= {text}"


def overall_statement(subset: str, block: Mapping[str, Any]) -> str:
    """Every overall metric of ``subset`` with its interval; whether r's interval excludes 0."""
    metrics = ", ".join(metric_text(block, name) for name in METRIC_LABELS)
    low, high = _number(block.get("pearson_r_ci_low")), _number(block.get("pearson_r_ci_high"))
    if math.isnan(low) or math.isnan(high):
        reading = "the correlation has no interval"
    elif low > 0:
        reading = "r's interval lies above 0"
    elif high < 0:
        reading = "r's interval lies below 0"
    else:
        reading = "r's interval contains 0: no evidence of a correlation"
    return f"{subset} (n = {block.get('n')}): {metrics}; {reading}."


def worst_range_statement(by_range: Sequence[Mapping[str, Any]]) -> str:
    """The range with the highest MAE among those with at least MIN_CASES cases, with its interval."""
    judged = [b for b in by_range if b.get("n", 0) >= MIN_CASES and not math.isnan(_number(b.get("mae")))]
    if not judged:
        return f"worst range by MAE: not judged, no range has {MIN_CASES} or more cases."
    worst = max(judged, key=lambda b: _number(b["mae"]))
    others = ", ".join(f"{b['range']} {_number(b['mae']):.2f}" for b in judged if b is not worst)
    return (
        f"the worst MAE is in range {worst['range']}: {block_interval(worst, 'mae')} (n = {worst['n']})"
        + (f", against {others}" if others else ", the only range with enough cases")
        + f" (ranges with at least {MIN_CASES} cases; overlapping intervals mean the ranking is uncertain)."
    )


def calibration_statement(calibration: Mapping[str, Any]) -> str:
    """The locked calibration in numbers: method, line, fitted on val, val RMSE before and after."""
    method, n_val = calibration.get("method"), calibration.get("n_val")
    if method == "none":
        return (
            f"calibration: none; predictions are the raw model output (slope 1, intercept 0, n_val {n_val})."
        )
    slope, intercept = _number(calibration.get("slope")), _number(calibration.get("intercept"))
    effect = "stretches" if slope > 1 else "shrinks" if slope < 1 else "keeps"
    before, after = _number(calibration.get("val_rmse_before")), _number(calibration.get("val_rmse_after"))
    return (
        f"calibration: {method}, fitted on {calibration.get('fitted_on')} (n = {n_val}): "
        f"true ≈ {intercept:.2f} + {slope:.3f} × raw prediction (a point fit, no interval); the slope "
        f"{slope:.3f} {effect} the spread of the raw predictions about their mean; val RMSE "
        f"{before:.2f} before, {after:.2f} after (on the cases it was fitted on, so not a test result)."
    )


def score_statements(per_case_test: pd.DataFrame, summary: Mapping[str, Any], high_score: float) -> list[str]:
    """Every rule-based statement of the regression notebook, on the test table, in reading order."""
    test = summary["test"]
    resampler = case_resampler(per_case_test, test["bootstrap"])
    ranges = [b["range"] for b in test["by_range"]]
    return [
        overall_statement("test", test["overall"]),
        high_score_statement(per_case_test, high_score, resampler),
        *range_bias_statements(per_case_test, ranges, resampler),
        worst_range_statement(test["by_range"]),
        *_outside_statement(test),
        calibration_statement(summary["calibration"]),
    ]


def _outside_statement(section: Mapping[str, Any]) -> list[str]:
    outside = section.get("n_outside_ranges", 0)
    return (
        [f"{outside} test case(s) lie outside every score range, in no range's numbers."] if outside else []
    )


# ---------------------------------------------------------------- tables


def metrics_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per subset (val, test) and scope (overall, each range): n and every metric with its
    interval, p-values beside the correlations; undefined values read 'undefined'."""
    rows = []
    for subset in ("val", "test"):
        section = summary.get(subset, {})
        blocks = [("overall", section.get("overall", {}))] + [
            (b["range"], b) for b in section.get("by_range", [])
        ]
        for scope, block in blocks:
            row: dict[str, Any] = {"subset": subset, "scope": scope, "n": block.get("n")}
            for name in INTERVAL_METRICS:
                row[METRIC_LABELS[name]] = block_interval(block, name)
                if name in P_VALUES:
                    row[f"{METRIC_LABELS[name]} p"] = p_value_text(_number(block.get(P_VALUES[name])))
            rows.append(row)
    return pd.DataFrame(rows)
