"""The compare notebook's figures: the forest plot and the paired differences to the baseline.

Must never leave a run out nor draw an undefined value as a number: it reads 'n/a'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from lesionflow.evaluation.leaderboard_columns import RANKED, is_baseline
from lesionflow.reports.comparison import DELTA_METRICS, baseline_name, column_values
from lesionflow.reports.labels import COMPARISON_NAMES
from lesionflow.reports.leaderboard_plot import (
    BASELINE_COLOUR,
    NOT_RANKED_COLOUR,
    RANKED_COLOUR,
    colour_tick_labels,
    row_colours,
    row_labels,
)

FOREST_METRICS = ("dice_pos", "presence_roc_auc")
BETTER_COLOUR, WORSE_COLOUR, UNCLEAR_COLOUR = "tab:green", "tab:red", "tab:blue"
NO_RUNS = "No segmentation runs in this config\n(leaderboard.csv has no rows)."


def message_figure(message: str, title: str) -> Figure:
    """A figure holding only ``message``: a figure the workflow expects when it has nothing to draw."""
    fig = Figure(figsize=(9, 2.6), layout="constrained")
    ax = fig.subplots()
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.3")
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def figure_height(n_rows: int) -> float:
    """Height in inches of a figure with one row per run."""
    # Room for the title, the x label and a two-row legend below the rows.
    return max(3.2, 0.42 * n_rows + 2.4)


def na_texts(ax: Axes, rows: np.ndarray, colours: Sequence[str]) -> None:
    """'n/a' in the middle of the panel for undefined values, so they are never read as 0."""
    mid = blended_transform_factory(ax.transAxes, ax.transData)
    for y in rows:
        ax.text(
            0.5,
            y,
            "n/a",
            transform=mid,
            ha="center",
            va="center",
            fontsize=9,
            color=colours[y],
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "0.8"},
        )


def draw_intervals(
    ax: Axes, values: np.ndarray, low: np.ndarray, high: np.ndarray, colours: Sequence[str]
) -> None:
    """Point and horizontal interval line per row (row 0 at the top); 'n/a' where undefined."""
    for y, (value, lo, hi, colour) in enumerate(zip(values, low, high, colours, strict=True)):
        if math.isnan(value):
            continue
        if not (math.isnan(lo) or math.isnan(hi)):
            ax.hlines(y, lo, hi, color=colour, linewidth=2.2)
        ax.plot(value, y, "o", color=colour, markersize=7, markeredgecolor="white", zorder=3)
    na_texts(ax, np.flatnonzero(np.isnan(values)), colours)


def point_handle(colour: str, label: str) -> Line2D:
    """Legend entry that looks like one row: a point on its interval line."""
    return Line2D([], [], color=colour, marker="o", linewidth=2.2, label=label)


def row_axes(ax: Axes, df: pd.DataFrame, colours: Sequence[str]) -> None:
    """One labelled y row per run of ``df``, first at the top, labels coloured as their rows."""
    ax.set_yticks(np.arange(len(df)), row_labels(df))
    ax.set_ylim(len(df) - 0.5, -0.5)  # first leaderboard row at the top
    colour_tick_labels(ax, colours, df)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)


def finish_forest(fig: Figure, axes: Sequence[Axes], references: Sequence[Line2D], title: str) -> None:
    """Label the run axis of a forest plot and add its legend (the row colours, the baseline's
    value line, then the panels' ``references`` lines) and its ``title``."""
    axes[0].set_ylabel("run (leaderboard order)")
    handles = [
        point_handle(RANKED_COLOUR, "ranked run: value and interval"),
        point_handle(BASELINE_COLOUR, "baseline"),
        point_handle(NOT_RANKED_COLOUR, "excluded or failed (not ranked)"),
        Line2D([], [], color=BASELINE_COLOUR, linestyle="--", linewidth=1, label="baseline value"),
        *references,
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    fig.suptitle(title)


def plot_forest(df: pd.DataFrame) -> Figure:
    """Forest plot of test dice_pos and presence ROC-AUC: one row per run in leaderboard order,
    point and bootstrap interval; baseline orange, excluded and failed runs grey with their status.
    A leaderboard without rows gives a figure that says so."""
    if df.empty:
        return message_figure(NO_RUNS, "Test metrics per run with subject-bootstrap intervals")
    fig = Figure(figsize=(11, figure_height(len(df))), layout="constrained")
    axes = fig.subplots(1, len(FOREST_METRICS), sharey=True)
    colours = row_colours(df)
    base = df[is_baseline(df)]
    for ax, metric in zip(axes, FOREST_METRICS, strict=True):
        values = column_values(df, metric)
        low, high = column_values(df, f"{metric}_ci_low"), column_values(df, f"{metric}_ci_high")
        draw_intervals(ax, values, low, high, colours)
        if len(base) and not math.isnan(column_values(base, metric)[0]):
            # The baseline's value as a reference line: rows right of it beat it on the point value.
            ax.axvline(column_values(base, metric)[0], color=BASELINE_COLOUR, linestyle="--", linewidth=1)
        if metric == "presence_roc_auc":
            ax.axvline(0.5, color="0.3", linestyle=":", linewidth=1)
        ax.set_xlim(-0.03, 1.03)  # a point at exactly 0 or 1 stays whole
        ax.set_xlabel(COMPARISON_NAMES[metric])
        row_axes(ax, df, colours)
    chance = Line2D([], [], color="0.3", linestyle=":", linewidth=1, label="ROC-AUC 0.5 (chance)")
    finish_forest(fig, axes, [chance], "Test metrics per run with subject-bootstrap intervals")
    return fig


def delta_colours(
    df: pd.DataFrame, low: np.ndarray, high: np.ndarray, lower_is_better: bool
) -> list[str]:
    """Green: the interval lies on the better side of 0 (above, or below for a lower-better metric),
    red: on the worse side, blue: it includes 0; grey: not ranked."""
    colours = []
    for status, lo, hi in zip(df["status"], low, high, strict=True):
        better, worse = (hi < 0, lo > 0) if lower_is_better else (lo > 0, hi < 0)
        if status != RANKED:
            colours.append(NOT_RANKED_COLOUR)
        else:
            colours.append(BETTER_COLOUR if better else WORSE_COLOUR if worse else UNCLEAR_COLOUR)
    return colours


def symmetric_limit(df: pd.DataFrame, *arrays: np.ndarray) -> float:
    """Half-width of a delta panel, from the ranked runs' values and intervals where there are any.

    A failed run can differ by -0.8 and would squeeze every ranked run's interval to a dot; it is
    drawn at the edge with its value instead (see :func:`off_scale`). Symmetric around 0 so better
    and worse take the same room; at least 0.05 so tiny differences are not blown up.
    """
    stacked = np.abs(np.vstack(arrays))
    ranked = stacked[:, (df["status"] == RANKED).to_numpy()]
    for candidate in (ranked, stacked):
        finite = candidate[np.isfinite(candidate)]
        if finite.size:
            return max(0.05, 1.15 * float(finite.max()))
    return 1.0


def inner_ticks(limit: float) -> list[float]:
    """Round ticks of a +-limit panel, none at its edges: neighbouring panels' edge labels collide."""
    ticks = MaxNLocator(nbins=4, symmetric=True).tick_values(-limit, limit)
    return [float(t) for t in ticks if abs(t) < 0.9 * limit]


def off_scale(ax: Axes, values: np.ndarray, limit: float, colours: Sequence[str]) -> None:
    """A triangle at the panel's edge and the value as text for each point outside +-limit."""
    for y in np.flatnonzero(np.abs(np.nan_to_num(values)) > limit):
        side = float(np.sign(values[y]))
        edge = side * limit * 0.97
        ax.plot(edge, y, ">" if side > 0 else "<", color=colours[y], markersize=8, zorder=3)
        ax.text(
            edge,
            y - 0.22,  # just above the row (the y axis is inverted), clear of the row above
            f"{values[y]:+.3f} (off scale)",
            ha="right" if side > 0 else "left",
            va="bottom",
            fontsize=8,
            color=colours[y],
        )


def delta_panel(ax: Axes, others: pd.DataFrame, column: str, lower_is_better: bool) -> None:
    """One panel of paired differences: each run of ``others`` (every run but the baseline) as
    ``column`` with its interval (``column``_ci_low/_ci_high), coloured by the side of 0 it lies on,
    around a line at 0; a panel that says so when there is no other run."""
    if others.empty:
        ax.text(0.5, 0.5, "no run besides\nthe baseline", transform=ax.transAxes, ha="center",
                va="center", color="0.4")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        return
    values, low, high = (column_values(others, column + s) for s in ("", "_ci_low", "_ci_high"))
    ax.axvline(0, color="black", linewidth=1)
    limit = symmetric_limit(others, values, low, high)
    ax.set_xlim(-limit, limit)
    ax.set_xticks(inner_ticks(limit))
    colours = delta_colours(others, low, high, lower_is_better)
    draw_intervals(ax, values, low, high, colours)
    off_scale(ax, values, limit, colours)
    row_axes(ax, others, [NOT_RANKED_COLOUR if s != RANKED else "black" for s in others["status"]])


def deltas_figure(
    others: pd.DataFrame, panels: Sequence[tuple[str, str, bool]], width: float, sides: tuple[str, str]
) -> Figure:
    """Paired-difference panels side by side over the runs of ``others`` (every run but the
    baseline), one per (column, x label, lower is better) of ``panels``, with a legend whose first
    two entries are ``sides``: what the better and the worse colour mean. The caller titles it."""
    fig = Figure(figsize=(width, figure_height(max(len(others), 1))), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True)
    for ax, (column, label, lower_is_better) in zip(axes, panels, strict=True):
        ax.set_xlabel(label)
        delta_panel(ax, others, column, lower_is_better)
    better, worse = sides
    handles = [
        point_handle(BETTER_COLOUR, better),
        point_handle(WORSE_COLOUR, worse),
        point_handle(UNCLEAR_COLOUR, "interval includes 0"),
        point_handle(NOT_RANKED_COLOUR, "excluded or failed run"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False, fontsize=9)
    return fig


def plot_paired_deltas(df: pd.DataFrame) -> Figure:
    """Per run but the baseline: paired difference (run - baseline) with its interval for dice_pos,
    presence ROC-AUC, AP and lesion F1, one panel each, with a line at 0 (no difference).
    A leaderboard without rows gives a figure that says so."""
    if df.empty:
        return message_figure(NO_RUNS, "Paired differences to the baseline")
    panels = [
        (f"paired_delta_{metric}", f"Δ {COMPARISON_NAMES[metric]}\n(run − baseline)", False)
        for metric in DELTA_METRICS
    ]
    sides = ("interval above 0: run better", "interval below 0: run worse")
    fig = deltas_figure(df[~is_baseline(df)].reset_index(drop=True), panels, 14, sides)
    base = baseline_name(df) if is_baseline(df).sum() == 1 else "?"
    fig.suptitle(f"Paired differences to the baseline {base!r} on shared test images (subject bootstrap)")
    return fig
