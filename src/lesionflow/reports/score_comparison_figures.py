"""The compare notebook's regression figures: forest plot of sRMSE and r, paired deltas to the baseline.

Must never leave a run out nor draw an undefined value as a number: it reads 'n/a'.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lesionflow.evaluation.leaderboard_columns import is_baseline
from lesionflow.reports.comparison import column_values
from lesionflow.reports.comparison_figures import (
    deltas_figure,
    draw_intervals,
    figure_height,
    finish_forest,
    message_figure,
    row_axes,
)
from lesionflow.reports.leaderboard_plot import BASELINE_COLOUR, row_colours
from lesionflow.reports.score_comparison import SCORE_DELTAS, SCORE_NAMES, regression_baseline

FOREST_TITLE = "Regression runs: test metrics with subject-bootstrap intervals"
DELTAS_TITLE = "Regression runs: paired differences to the baseline"
NO_RUNS = "No regression runs in this config\n(leaderboard_regression.csv has no rows)."
# Margin around the drawn values, so a point or interval end at the edge stays whole.
MARGIN = 0.03


def _finite(*arrays: np.ndarray) -> np.ndarray:
    values = np.concatenate([np.asarray(a, dtype=float) for a in arrays])
    return values[np.isfinite(values)]


def _srmse_limits(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """From 0 to past the largest value or interval end, and always past 1 (predicting the mean)."""
    top = max(1.0, *_finite(values, low, high)) if _finite(values, low, high).size else 1.0
    return 0.0, top * 1.08


def _r_limits(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """0 to 1, or -1 to 1 when a value or interval end is negative."""
    finite = _finite(values, low, high)
    below = bool(finite.size and finite.min() < 0)
    return (-1 - MARGIN if below else -MARGIN), 1 + MARGIN


def _forest_panel(ax: Axes, df: pd.DataFrame, metric: str, colours: list[str]) -> None:
    values = column_values(df, metric)
    low, high = column_values(df, f"{metric}_ci_low"), column_values(df, f"{metric}_ci_high")
    draw_intervals(ax, values, low, high, colours)
    base = column_values(df[is_baseline(df)], metric)
    if base.size and not math.isnan(base[0]):
        ax.axvline(base[0], color=BASELINE_COLOUR, linestyle="--", linewidth=1)
    if metric == "srmse":
        ax.axvline(1, color="0.3", linestyle="-.", linewidth=1)
        ax.set_xlim(*_srmse_limits(values, low, high))
        ax.set_xlabel(f"{SCORE_NAMES[metric]}\nlower is better")
    else:
        ax.axvline(0, color="0.3", linestyle=":", linewidth=1)
        ax.set_xlim(*_r_limits(values, low, high))
        ax.set_xlabel(f"{SCORE_NAMES[metric]}\nhigher is better")
    row_axes(ax, df, colours)


def plot_regression_forest(df: pd.DataFrame) -> Figure:
    """Forest plot of the regression runs' test sRMSE and Pearson r: one row per run in leaderboard
    order, point and bootstrap interval; baseline orange, excluded and failed runs grey.

    A leaderboard without rows gives a figure that says there are no regression runs.
    """
    if df.empty:
        return message_figure(NO_RUNS, FOREST_TITLE)
    fig = Figure(figsize=(11, figure_height(len(df))), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    colours = row_colours(df)
    for ax, metric in zip(axes, ("srmse", "pearson_r"), strict=True):
        _forest_panel(ax, df, metric, colours)
    references = [
        Line2D([], [], color="0.3", linestyle="-.", linewidth=1, label="sRMSE 1: predicting the mean"),
        Line2D([], [], color="0.3", linestyle=":", linewidth=1, label="r = 0: no correlation"),
    ]
    finish_forest(fig, axes, references, FOREST_TITLE)
    return fig


def _delta_label(metric: str, lower_is_better: bool) -> str:
    better = "negative" if lower_is_better else "positive"
    return f"Δ {SCORE_NAMES[metric]}\n(run − baseline; {better} = run better)"


def plot_regression_deltas(df: pd.DataFrame) -> Figure:
    """Per regression run but the baseline: paired difference (run - baseline) with its interval for
    sRMSE, Pearson r and MAE, one panel each, with a line at 0 (no difference).

    Green: the interval lies on the better side of 0 (below for sRMSE and MAE, above for r); red:
    on the worse side; blue: it includes 0. A leaderboard without rows gives a figure that says so.
    """
    if df.empty:
        return message_figure(NO_RUNS, DELTAS_TITLE)
    panels = [(f"delta_{m}", _delta_label(m, lower), lower) for m, lower in SCORE_DELTAS.items()]
    sides = ("interval on the better side of 0: run better", "interval on the worse side of 0: run worse")
    fig = deltas_figure(df[~is_baseline(df)].reset_index(drop=True), panels, 13, sides)
    base = regression_baseline(df) if is_baseline(df).sum() == 1 else "?"
    fig.suptitle(f"{DELTAS_TITLE} {base!r} on shared test cases (subject bootstrap)")
    return fig
