"""Leaderboard across runs: test metrics with intervals, ranks, and paired comparisons to the baseline.

Must never pick or filter runs by their test numbers: every run given is listed, as evaluated.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from lesionflow.artifacts import read_json, save_figure, write_csv  # noqa: E402
from lesionflow.bootstrap import Resampler, describe  # noqa: E402
from lesionflow.errors import LesionflowError  # noqa: E402
from lesionflow.summary import paired_estimates  # noqa: E402

# summary key -> rank column name
METRICS = {
    "dice_pos": "rank_dice_pos",
    "iou_pos": "rank_iou_pos",
    "presence_roc_auc": "rank_roc_auc",
    "presence_ap": "rank_ap",
}
# Compared with the baseline (paired intervals) but not ranked: the false-positive rate is lower-better.
PAIRED_METRICS = (*METRICS, "lesion_f1", "false_positive_rate_empty")
BOOTSTRAP_DEFAULTS = {"n_resamples": 2000, "seed": 0, "confidence": 0.95}


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
        for metric in PAIRED_METRICS:
            for suffix in ("", "_ci_low", "_ci_high", "_n"):
                row[metric + suffix] = _number(summary["test"].get(metric + suffix))
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


def _shared(per_image: pd.DataFrame, baseline: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables restricted to the images they share, in the same order."""
    shared = sorted(set(per_image["image_id"]) & set(baseline["image_id"]))
    ours = per_image.set_index("image_id").loc[shared].reset_index()
    theirs = baseline.set_index("image_id").loc[shared].reset_index()
    return ours, theirs


def wilcoxon_dice(per_image: pd.DataFrame, baseline: pd.DataFrame) -> dict:
    """Wilcoxon signed-rank test of per-image Dice on shared reference-positive images.

    The p-value is NaN (with n given) when there are no pairs or every difference is zero.
    """
    ours, theirs = _shared(per_image, baseline)
    positive = (ours["gt_pixels"].to_numpy() > 0) & (theirs["gt_pixels"].to_numpy() > 0)
    a = ours["dice"].to_numpy(dtype=float)[positive]
    b = theirs["dice"].to_numpy(dtype=float)[positive]
    defined = ~(np.isnan(a) | np.isnan(b))
    diff = a[defined] - b[defined]
    out = {
        "wilcoxon_dice_n": int(diff.size),
        "median_dice_difference": float(np.median(diff)) if diff.size else float("nan"),
        "wilcoxon_dice_p": float("nan"),
    }
    if np.count_nonzero(diff):
        with warnings.catch_warnings():
            # scipy warns about small samples and switches to the exact distribution; both fine.
            warnings.simplefilter("ignore")
            out["wilcoxon_dice_p"] = float(wilcoxon(a[defined], b[defined]).pvalue)
    return out


def paired_comparison(
    per_image: pd.DataFrame, baseline: pd.DataFrame, bootstrap: Mapping | None = None
) -> dict:
    """Run minus baseline on the test images both scored: paired bootstrap interval per metric
    (same subject resamples for both) and the Wilcoxon test on per-image Dice."""
    settings = {**BOOTSTRAP_DEFAULTS, **(bootstrap or {})}
    ours, theirs = _shared(per_image, baseline)
    out: dict = {"n_shared_images": int(len(ours))}
    if len(ours):
        resampler = Resampler.from_subjects(
            ours["subject"].astype(str).tolist(),
            settings["n_resamples"],
            settings["seed"],
            settings["confidence"],
        )
        for metric, estimate in paired_estimates(ours, theirs, resampler, PAIRED_METRICS).items():
            described = describe(estimate, "d")
            out[f"paired_delta_{metric}"] = described["d"]
            out[f"paired_delta_{metric}_ci_low"] = described["d_ci_low"]
            out[f"paired_delta_{metric}_ci_high"] = described["d_ci_high"]
    out.update(wilcoxon_dice(per_image, baseline))
    return out


def plot_leaderboard(df: pd.DataFrame) -> Figure:
    """Horizontal bars per metric, runs in leaderboard order (best at the top)."""
    fig, axes = plt.subplots(
        1, len(METRICS), figsize=(4 * len(METRICS), 0.45 * len(df) + 1.5), sharey=True
    )
    labels = df["run"].tolist()[::-1]
    for ax, metric in zip(np.atleast_1d(axes), METRICS, strict=True):
        values = df[metric].to_numpy(dtype=float)[::-1]
        ax.barh(labels, np.nan_to_num(values, nan=0.0), color="tab:blue")
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
    fig.suptitle("Test metrics per run with subject-bootstrap intervals (sorted by mean rank)")
    fig.tight_layout()
    return fig


def _read_per_image(name: str, path: str | os.PathLike) -> pd.DataFrame:
    if not Path(path).is_file():
        raise LesionflowError(f"per-image test table of run {name!r} not found: {path}")
    return pd.read_csv(path, dtype={"image_id": str, "subject": str})


def run_compare(
    summary_paths: Mapping[str, str | os.PathLike],
    baseline: str,
    out_dir: str | os.PathLike,
    per_image_paths: Mapping[str, str | os.PathLike] | None = None,
    settings: Mapping | None = None,
) -> pd.DataFrame:
    """Write ``leaderboard.csv`` and ``leaderboard.png`` from the runs' summaries.

    With ``per_image_paths`` (each run's per_image_test.csv) every run is also compared with the
    baseline on their shared test images: paired bootstrap intervals and a Wilcoxon p-value.
    ``settings`` is the compare section (its ``bootstrap`` entry is used).
    """
    if not summary_paths:
        raise LesionflowError("compare needs at least one run summary")
    summaries = {}
    for name, path in summary_paths.items():
        if not Path(path).is_file():
            raise LesionflowError(f"summary of run {name!r} not found: {path}")
        summaries[name] = read_json(path)
    df = leaderboard(summaries, baseline, summary_paths)
    if per_image_paths is not None:
        missing = sorted(set(summary_paths) - set(per_image_paths))
        if missing:
            raise LesionflowError(f"compare: no per-image test table given for runs {missing}")
        tables = {name: _read_per_image(name, path) for name, path in per_image_paths.items()}
        boot = (settings or {}).get("bootstrap", {})
        paired = pd.DataFrame(
            [{"run": run, **paired_comparison(tables[run], tables[baseline], boot)} for run in df["run"]]
        )
        df = df.merge(paired, on="run", how="left")
        df = df[[c for c in df.columns if c != "source"] + ["source"]]
    out = Path(out_dir)
    write_csv(df, out / "leaderboard.csv")
    save_figure(plot_leaderboard(df), out / "leaderboard.png")
    return df
