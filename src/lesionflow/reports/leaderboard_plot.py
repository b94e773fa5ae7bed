"""The compare stage's leaderboard.png, and the row labels and colours all leaderboard figures share.

Must never hide a run: every row of the leaderboard is drawn, and an undefined value reads 'n/a'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lesionflow.evaluation.leaderboard_columns import RANK_COLUMNS, RANKED, is_baseline

RANKED_COLOUR, BASELINE_COLOUR, NOT_RANKED_COLOUR = "tab:blue", "tab:orange", "0.6"


def row_labels(df: pd.DataFrame) -> list[str]:
    """Run names, with '(baseline)' and the status of runs that are not ranked."""
    labels = []
    for run, status, is_base in zip(df["run"], df["status"], is_baseline(df), strict=True):
        notes = (["baseline"] if is_base else []) + ([status] if status != RANKED else [])
        labels.append(f"{run} ({', '.join(notes)})" if notes else str(run))
    return labels


def row_colours(df: pd.DataFrame) -> list[str]:
    """Baseline orange, other ranked runs blue, excluded and failed runs grey."""
    return [
        NOT_RANKED_COLOUR if status != RANKED else BASELINE_COLOUR if is_base else RANKED_COLOUR
        for status, is_base in zip(df["status"], is_baseline(df), strict=True)
    ]


def colour_tick_labels(ax: Axes, colours: Sequence[str], df: pd.DataFrame) -> None:
    """Colour each run's y tick label as its row (ranked runs black) and set the baseline's in bold."""
    # Major ticks, not get_yticklabels(): panels sharing the y axis hide their labels, and hidden
    # labels are left out of get_yticklabels().
    for tick, colour, is_base in zip(ax.yaxis.get_major_ticks(), colours, is_baseline(df), strict=True):
        tick.label1.set_color("black" if colour == RANKED_COLOUR else colour)
        if is_base:
            tick.label1.set_fontweight("bold")


def plot_leaderboard(df: pd.DataFrame) -> Figure:
    """Horizontal bars per metric, runs in leaderboard order (best at the top); runs that are not
    ranked are grey and labelled with their status."""
    if df.empty:
        fig = Figure(figsize=(6, 1.5))
        fig.text(0.5, 0.5, "No segmentation runs in this config.", ha="center", va="center")
        return fig
    fig = Figure(figsize=(4 * len(RANK_COLUMNS), 0.45 * len(df) + 1.5))
    axes = fig.subplots(1, len(RANK_COLUMNS), sharey=True)
    labels = row_labels(df)[::-1]
    colours = row_colours(df)[::-1]
    for ax, metric in zip(np.atleast_1d(axes), RANK_COLUMNS, strict=True):
        values = df[metric].to_numpy(dtype=float)[::-1]
        ax.barh(labels, np.nan_to_num(values, nan=0.0), color=colours)
        if f"{metric}_ci_low" in df:
            # The interval says whether a gap between two bars means anything.
            low = df[f"{metric}_ci_low"].to_numpy(dtype=float)[::-1]
            high = df[f"{metric}_ci_high"].to_numpy(dtype=float)[::-1]
            shown = ~(np.isnan(low) | np.isnan(high) | np.isnan(values))
            ax.errorbar(
                values[shown],
                np.flatnonzero(shown),
                xerr=[values[shown] - low[shown], high[shown] - values[shown]],
                fmt="none",
                ecolor="black",
                capsize=3,
                label="95 % interval",
            )
        for y, value in enumerate(values):
            # White inside a bar wide enough to hold it; black after a short (or zero) bar.
            inside = not np.isnan(value) and value >= 0.15
            ax.text(
                0.01 if inside or np.isnan(value) else value + 0.01,
                y,
                "n/a" if np.isnan(value) else f"{value:.3f}",
                va="center",
                color="white" if inside else "black",
                fontsize=8,
            )
        ax.set_xlim(0, 1)
        ax.set_title(metric)
    colour_tick_labels(np.atleast_1d(axes)[0], colours, df.iloc[::-1])
    fig.suptitle(
        "Test metrics per run with subject-bootstrap intervals "
        "(ranked runs by mean rank; excluded and failed runs, grey, after them)"
    )
    fig.tight_layout()
    return fig
