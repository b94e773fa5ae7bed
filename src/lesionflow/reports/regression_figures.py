"""Figures of a regression run: predicted vs true, residuals by range, Bland-Altman, training curves.

Must never smooth, drop or recompute a score: every point drawn is a row of the per-case or epoch tables.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from lesionflow.evaluation.bootstrap import Estimate, Resampler
from lesionflow.reports.labels import interval_text
from lesionflow.reports.score_statements import (
    AGREEMENT_SDS,
    MIN_CASES,
    agreement_limits,
    block_interval,
    least_squares_line,
    line_band,
    mean_residual,
)

TEST_COLOUR, VAL_COLOUR = "tab:blue", "0.6"
# The training-curve panels: (y label, title, metrics_by_epoch columns drawn).
EPOCH_PANELS = (
    ("loss", "Loss", ("train_loss", "val_loss")),
    ("RMSE (score units)", "RMSE", ("train_rmse", "val_rmse")),
    ("sRMSE (RMSE / sd of true)", "Validation sRMSE (kept epoch: the lowest)", ("val_srmse",)),
)
# Seeded jitter of the strip points: the same table draws the same figure.
_JITTER_SEED = 0


def note_panel(ax: Axes, text: str) -> None:
    """Write ``text`` in the middle of an empty panel: a panel with nothing to draw says why."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _span(*tables: pd.DataFrame) -> tuple[float, float]:
    values = np.concatenate([t[c].to_numpy(dtype=float) for t in tables for c in ("true", "predicted")])
    return float(values.min()), float(values.max())


# ---------------------------------------------------------------- predicted vs true


def plot_score_scatter(
    test: pd.DataFrame,
    test_overall: Mapping[str, Any],
    confidence: float,
    val: pd.DataFrame | None = None,
    calibrated: bool = False,
) -> Figure:
    """Predicted vs true score on test, the identity line, the least-squares line of predicted on
    true with its ``confidence`` band; validation points faint behind.

    ``test_overall`` is the test block of summary.json: r, sRMSE and MAE with their intervals go in
    the title. The identity line spans every point drawn.
    """
    fig = Figure(figsize=(6.8, 6.4), layout="constrained")
    ax = fig.subplots()
    shown = [test] if val is None else [test, val]
    low, high = _span(*shown)
    if val is not None:
        ax.scatter(
            val["true"],
            val["predicted"],
            s=18,
            color=VAL_COLOUR,
            alpha=0.5,
            label=f"validation (n = {len(val)})",
        )
    ax.scatter(
        test["true"],
        test["predicted"],
        s=28,
        color=TEST_COLOUR,
        edgecolor="white",
        linewidth=0.5,
        label=f"test (n = {len(test)})",
        zorder=3,
    )
    ax.plot([low, high], [low, high], color="black", linestyle="--", linewidth=1, label="identity (perfect)")
    true, pred = test["true"].to_numpy(dtype=float), test["predicted"].to_numpy(dtype=float)
    line = least_squares_line(true, pred, confidence)
    if line is None:
        ax.plot([], [], " ", label="least-squares line undefined (< 3 cases or constant true score)")
    else:
        grid = np.linspace(float(true.min()), float(true.max()), 100)
        ax.plot(
            grid,
            line.intercept + line.slope * grid,
            color="tab:red",
            linewidth=1.5,
            label=f"least squares: predicted = {line.intercept:.2f} + {line.slope:.2f} × true",
        )
        band_low, band_high = line_band(line, true, grid, confidence)
        ax.fill_between(
            grid,
            band_low,
            band_high,
            color="tab:red",
            alpha=0.15,
            linewidth=0,
            label=f"{100 * confidence:g} % confidence band of the line",
        )
    pad = 0.04 * (high - low) or 0.5
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score" + (" (after the locked calibration)" if calibrated else ""))
    ax.set_title(
        f"Test: r = {block_interval(test_overall, 'pearson_r')}\n"
        f"sRMSE = {block_interval(test_overall, 'srmse')}, MAE = {block_interval(test_overall, 'mae')}",
        fontsize="medium",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    return fig


# ---------------------------------------------------------------- residuals by range


def plot_residuals_by_range(per_case: pd.DataFrame, ranges: Sequence[str], resampler: Resampler) -> Figure:
    """Residual (predicted - true) per range of the true score: box, every case as a point, and
    the mean residual with its subject-bootstrap interval (``resampler``); n under each range."""
    fig = Figure(figsize=(max(6.0, 1.6 * len(ranges) + 2), 4.8), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(_JITTER_SEED)
    for position, label in enumerate(ranges):
        rows = (per_case["range"] == label).to_numpy()
        values = per_case.loc[rows, "residual"].to_numpy(dtype=float)
        if values.size:
            _draw_range(ax, position, values, mean_residual(per_case, rows, resampler), rng)
        else:
            ax.text(position, 0, "no case", ha="center", va="bottom", color="0.4", fontsize="small")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(ranges)))
    counts = [int((per_case["range"] == label).sum()) for label in ranges]
    ax.set_xticklabels(
        [
            f"{label}\nn = {n}{'' if n >= MIN_CASES else ' (too few)'}"
            for label, n in zip(ranges, counts, strict=True)
        ]
    )
    ax.set_xlim(-0.6, len(ranges) - 0.4)
    ax.set_xlabel("range of the true score")
    ax.set_ylabel("residual: predicted - true")
    outside = len(per_case) - sum(counts)
    ax.set_title(
        "Residuals by range (below 0: under-predicted)"
        + (f"; {outside} case(s) in no range" if outside else ""),
        fontsize="medium",
    )
    handles = [
        Line2D([], [], marker="o", linestyle="", color=TEST_COLOUR, alpha=0.6, label="one test case"),
        Line2D(
            [],
            [],
            marker="D",
            color="tab:red",
            label=f"mean residual, {100 * resampler.confidence:g} % subject-bootstrap interval",
        ),
    ]
    ax.legend(handles=handles, fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def _draw_range(
    ax: Axes, position: int, values: np.ndarray, estimate: Estimate, rng: np.random.Generator
) -> None:
    ax.boxplot(
        [values],
        positions=[position],
        widths=0.5,
        showfliers=False,
        manage_ticks=False,
        medianprops={"color": "black"},
        boxprops={"color": "0.4"},
    )
    jitter = rng.uniform(-0.15, 0.15, values.size)
    ax.scatter(position + jitter, values, s=14, color=TEST_COLOUR, alpha=0.6, zorder=3)
    low, high = estimate.interval()
    yerr = None if np.isnan(low) else [[estimate.value - low], [high - estimate.value]]
    ax.errorbar(
        position + 0.3, estimate.value, yerr=yerr, fmt="D", color="tab:red", capsize=4, markersize=6, zorder=4
    )


# ---------------------------------------------------------------- Bland-Altman


def plot_bland_altman(per_case: pd.DataFrame) -> Figure:
    """Difference (predicted - true) against the mean of true and predicted, with the mean bias and
    the 95 % limits of agreement (bias +- 1.96 sample sd)."""
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    ax = fig.subplots()
    average = (per_case["true"].to_numpy(dtype=float) + per_case["predicted"].to_numpy(dtype=float)) / 2
    agreement = agreement_limits(per_case)
    ax.scatter(
        average,
        per_case["residual"],
        s=24,
        color=TEST_COLOUR,
        alpha=0.7,
        label=f"test case (n = {agreement.n})",
    )
    ax.axhline(0, color="black", linewidth=0.6)
    ax.axhline(agreement.bias, color="tab:red", label=f"mean bias {agreement.bias:+.2f}")
    if np.isnan(agreement.sd):
        ax.plot([], [], " ", label="limits of agreement undefined (< 2 cases)")
    else:
        for value, side in ((agreement.high, "upper"), (agreement.low, "lower")):
            ax.axhline(
                value,
                color="tab:red",
                linestyle="--",
                label=f"{side} limit {value:+.2f} (bias {'+' if side == 'upper' else '-'} "
                f"{AGREEMENT_SDS} sd, sd {agreement.sd:.2f})",
            )
    ax.set_xlabel("mean of true and predicted score")
    ax.set_ylabel("difference: predicted - true")
    ax.set_title("Bland-Altman agreement on test (95 % limits of agreement)", fontsize="medium")
    if not np.isnan(agreement.sd):
        # The limits stay inside the frame even when no case lies near them.
        values = np.r_[per_case["residual"].to_numpy(dtype=float), agreement.low, agreement.high]
        pad = 0.08 * (values.max() - values.min()) or 0.5
        ax.set_ylim(values.min() - pad, values.max() + pad)
    # Below the panel: inside it, the legend would hide the limits it names.
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    ax.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------- training curves


def plot_training_curves(metrics_by_epoch: pd.DataFrame, best_epoch: int | None) -> Figure:
    """Train and val loss, train and val RMSE, and val sRMSE per epoch; the kept epoch (``best_epoch``,
    from train_summary.json) is a dotted line on every panel and a ringed point on the sRMSE."""
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    axes = fig.subplots(1, 3)
    epochs = metrics_by_epoch["epoch"]
    marker = {"marker": "o", "markersize": 3} if len(metrics_by_epoch) <= 60 else {}
    for ax, (ylabel, title, columns) in zip(axes, EPOCH_PANELS, strict=True):
        for column in columns:
            if column in metrics_by_epoch.columns:
                train = column.startswith("train")
                ax.plot(
                    epochs,
                    metrics_by_epoch[column],
                    "-" if train else "--",
                    label="train" if train else "validation",
                    **marker,
                )
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"kept epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize="medium")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    kept = metrics_by_epoch[metrics_by_epoch["epoch"] == best_epoch]
    if len(kept):
        value = float(kept["val_srmse"].iloc[0])
        axes[2].plot(
            [best_epoch],
            [value],
            "o",
            markersize=10,
            markerfacecolor="none",
            color="tab:red",
            label=f"val sRMSE {value:.3f} at the kept epoch",
        )
    for ax in axes:
        ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- one-line readings


def score_scatter_reading(test: pd.DataFrame, confidence: float) -> str:
    """What the scatter's fitted line says: its slope with its t-interval, against 1 (the identity)."""
    line = least_squares_line(
        test["true"].to_numpy(dtype=float), test["predicted"].to_numpy(dtype=float), confidence
    )
    if line is None:
        return "The least-squares line is undefined (fewer than 3 test cases, or one true score for all)."
    slope = f"{line.slope:.2f} [{line.slope_low:.2f}, {line.slope_high:.2f}]"
    if line.slope_high < 1:
        verdict = (
            "its interval lies below 1: predictions are compressed toward the mean "
            "(high scores under-, low scores over-predicted)"
        )
    elif line.slope_low > 1:
        verdict = "its interval lies above 1: predictions are stretched away from the mean"
    else:
        verdict = "its interval contains 1: no evidence that predictions are compressed or stretched"
    return (
        f"Slope of predicted on true {slope} ({100 * confidence:g} % t-interval taking the {line.n} "
        f"cases as independent; 1 follows the identity): {verdict}."
    )


def residuals_reading(per_case: pd.DataFrame, ranges: Sequence[str], resampler: Resampler) -> str:
    """Each range's mean residual with its interval; ranges with too few cases named as such."""
    judged, too_few = [], []
    for label in ranges:
        rows = (per_case["range"] == label).to_numpy()
        if rows.sum() < MIN_CASES:
            too_few.append(label)
            continue
        estimate = mean_residual(per_case, rows, resampler)
        value = interval_text(estimate.value, *estimate.interval(), 2, signed=True)
        judged.append(f"{label} {value} (n = {rows.sum()})")
    parts = [f"Mean residual (predicted - true) by range: {'; '.join(judged) or 'no range has enough cases'}"]
    if too_few:
        parts.append(f"fewer than {MIN_CASES} cases, not judged: {', '.join(too_few)}")
    return "; ".join(parts) + "."


def bland_altman_reading(per_case: pd.DataFrame) -> str:
    """The mean bias and the limits of agreement in numbers."""
    agreement = agreement_limits(per_case)
    if np.isnan(agreement.sd):
        return (
            f"Mean bias {agreement.bias:+.2f} (n = {agreement.n}); limits of agreement need 2 cases or more."
        )
    return (
        f"Mean bias {agreement.bias:+.2f}; 95 % limits of agreement {agreement.low:+.2f} to "
        f"{agreement.high:+.2f} (sd {agreement.sd:.2f}, n = {agreement.n}): about 95 % of predictions "
        "fall within that distance of the true score, if the differences are roughly normal."
    )


def training_reading(metrics_by_epoch: pd.DataFrame, train_summary: Mapping[str, Any]) -> str:
    """The kept epoch and its validation sRMSE, against the last epoch's."""
    best = train_summary.get("best_epoch")
    kept = metrics_by_epoch.loc[metrics_by_epoch["epoch"] == best, "val_srmse"]
    last = metrics_by_epoch.iloc[-1] if len(metrics_by_epoch) else None
    if best is None or kept.empty or last is None:
        return f"The kept epoch ({best}) is not in the epoch table of {len(metrics_by_epoch)} epoch(s)."
    return (
        f"Weights kept from epoch {best} of {int(last['epoch'])} (lowest val sRMSE, "
        f"{float(kept.iloc[0]):.3f}); the last epoch's val sRMSE is {float(last['val_srmse']):.3f}."
    )
