"""Leaderboard across runs from the test section of each run's summary.json, with ranks and deltas.

Must never pick or filter runs by their test numbers: every run given is listed, as evaluated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lesionflow.artifacts import read_json, save_figure, write_csv  # noqa: E402
from lesionflow.errors import LesionflowError  # noqa: E402

# summary key -> rank column name
METRICS = {
    "dice_pos": "rank_dice_pos",
    "iou_pos": "rank_iou_pos",
    "presence_roc_auc": "rank_roc_auc",
    "presence_ap": "rank_ap",
}


def _number(value) -> float:
    # summary.json stores undefined metrics as null.
    if value is None:
        return float("nan")
    number = float(value)
    return number if math.isfinite(number) else float("nan")


def leaderboard(
    summaries: Mapping[str, Mapping],
    baseline: str,
    sources: Mapping[str, str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Rank runs on their test metrics (1 = best, NaN ranks last) and compare with ``baseline``.

    Columns: run, the four metrics, their ranks, mean_rank, for each metric the absolute and
    percent difference to the baseline, and source. Sorted by mean_rank, then run name.
    """
    if baseline not in summaries:
        raise LesionflowError(
            f"compare.baseline {baseline!r} is not a run; valid run names: {sorted(summaries)}"
        )
    rows = []
    for run, summary in summaries.items():
        if "test" not in summary:
            where = f" ({sources[run]})" if sources and run in sources else ""
            raise LesionflowError(f"summary of run {run!r}{where} has no 'test' section")
        row: dict = {"run": run}
        row.update({m: _number(summary["test"].get(m)) for m in METRICS})
        rows.append(row)
    df = pd.DataFrame(rows)
    for metric, rank_col in METRICS.items():
        # method="min": tied runs share the better rank; NaN (undefined) ranks last.
        df[rank_col] = df[metric].rank(ascending=False, method="min", na_option="bottom")
    df["mean_rank"] = df[list(METRICS.values())].mean(axis=1)
    base = df.set_index("run").loc[baseline]
    for metric in METRICS:
        delta = df[metric] - base[metric]
        df[f"delta_{metric}_vs_baseline"] = delta
        ref = base[metric]
        # Percent of a zero or undefined baseline is undefined, not infinite.
        df[f"delta_{metric}_pct_vs_baseline"] = (
            100.0 * delta / ref if np.isfinite(ref) and ref != 0 else np.nan
        )
    df["source"] = [str(sources[r]) if sources and r in sources else "" for r in df["run"]]
    return df.sort_values(["mean_rank", "run"], kind="stable").reset_index(drop=True)


def plot_leaderboard(df: pd.DataFrame) -> Figure:
    """Horizontal bars per metric, runs in leaderboard order (best at the top)."""
    fig, axes = plt.subplots(
        1, len(METRICS), figsize=(4 * len(METRICS), 0.45 * len(df) + 1.5), sharey=True
    )
    labels = df["run"].tolist()[::-1]
    for ax, metric in zip(np.atleast_1d(axes), METRICS, strict=True):
        values = df[metric].to_numpy(dtype=float)[::-1]
        ax.barh(labels, np.nan_to_num(values, nan=0.0), color="tab:blue")
        for y, value in enumerate(values):
            ax.text(
                0.01,
                y,
                "n/a" if np.isnan(value) else f"{value:.3f}",
                va="center",
                color="black" if np.isnan(value) else "white",
                fontsize=8,
            )
        ax.set_xlim(0, 1)
        ax.set_title(metric)
    fig.suptitle("Test metrics per run (sorted by mean rank)")
    fig.tight_layout()
    return fig


def run_compare(
    summary_paths: Mapping[str, str | os.PathLike], baseline: str, out_dir: str | os.PathLike
) -> pd.DataFrame:
    """Write ``leaderboard.csv`` and ``leaderboard.png`` from the runs' summary.json files."""
    if not summary_paths:
        raise LesionflowError("compare needs at least one run summary")
    summaries = {}
    for name, path in summary_paths.items():
        if not Path(path).is_file():
            raise LesionflowError(f"summary of run {name!r} not found: {path}")
        summaries[name] = read_json(path)
    df = leaderboard(summaries, baseline, summary_paths)
    out = Path(out_dir)
    write_csv(df, out / "leaderboard.csv")
    save_figure(plot_leaderboard(df), out / "leaderboard.png")
    return df
