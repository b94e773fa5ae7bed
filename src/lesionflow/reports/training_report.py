"""The training report's tables: key numbers beside the rules that judge them, peak memory, epoch log.

Must never judge a run by anything but the explicit rules it is given, and always states the numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.labels import MISSING, format_value, is_undefined
from lesionflow.reports.notebook_inputs import read_table
from lesionflow.reports.trends import (
    MIN_WINDOW,
    Trend,
    best_epoch,
    final_value,
    gap_trend,
    is_score_table,
)
from lesionflow.reports.verdicts import band_rule_text, check_rules, quality_of, rule_text

# The tasks a train_summary.json may name (pipeline.stages.TASKS), restated rather than imported so
# that an edit of the stage registry does not change this stage's code fingerprint.
TASKS = ("segmentation", "regression")
SEGMENTATION, REGRESSION = TASKS
# Columns a regression run's metrics_by_epoch.csv must have (a segmentation run's: see read_table).
SCORE_EPOCH_COLUMNS = (
    "epoch", "train_loss", "val_loss", "train_rmse", "val_rmse", "val_srmse", "val_mae", "val_pearson",
)  # fmt: skip

# ---------------------------------------------------------------- the run's task


def run_task(train_summary: Mapping[str, Any], source: str | os.PathLike) -> str:
    """The task of the run whose train_summary.json (read from ``source``) is given.

    A summary without a ``task`` key is a segmentation run's: they were written before regression.
    """
    task = train_summary.get("task", SEGMENTATION)
    if task not in TASKS:
        raise LesionflowError(f"{source}: task {task!r} is not one of {', '.join(TASKS)}")
    return task


def read_epoch_table(path: str | os.PathLike, task: str) -> pd.DataFrame:
    """metrics_by_epoch.csv of a run of ``task``, its columns checked against that task."""
    if task != REGRESSION:
        frame = read_table(path, "metrics_by_epoch")
    else:
        frame = pd.read_csv(path)
        missing = [c for c in SCORE_EPOCH_COLUMNS if c not in frame.columns]
        if missing:
            raise LesionflowError(
                f"{path}: expected a regression run's metrics_by_epoch table with column(s) "
                f"{', '.join(missing)}; found {', '.join(map(str, frame.columns))}"
            )
    if task == REGRESSION and not is_score_table(frame):
        # A Dice and an sRMSE column together would leave the reports guessing which one to judge.
        raise LesionflowError(
            f"{path}: a regression run's metrics_by_epoch table has a val_dice column; "
            "is train_summary.json's task right?"
        )
    return frame


# ---------------------------------------------------------------- key numbers


def _summary_value(summary: Mapping[str, Any], key: str, fallback: Any = None) -> Any:
    # train_summary.json is the record of the run; the per-epoch table only fills its gaps.
    if key in summary:
        return summary[key]
    return MISSING if fallback is None else fallback


def _megabytes(value: Any, when_null: str) -> str:
    # null means the quantity was not measured (e.g. GPU memory on a CPU run), not zero.
    if value is None:
        return when_null
    return MISSING if value == MISSING else f"{format_value(value, 0)} MB"


def peak_memory_text(train_summary: Mapping[str, Any]) -> str:
    """Peak GPU memory when measured, else peak RSS, saying which one and on what device."""
    device = train_summary.get("device", MISSING)
    gpu = train_summary.get("peak_gpu_memory_mb", MISSING)
    rss = _megabytes(train_summary.get("peak_rss_mb", MISSING), "not measured")
    if gpu is None:
        # A CPU run has no GPU memory; the process's resident memory is the comparable peak.
        return (
            f"Peak GPU memory: not measured (device {device}). Shown instead: peak RSS "
            f"(resident memory of the training process) {rss}."
        )
    return f"Peak GPU memory (allocated by PyTorch on {device}): {_megabytes(gpu, 'not measured')}."


def _trend_text(trend: Trend | None) -> str:
    if trend is None:
        return f"undefined (fewer than {MIN_WINDOW} epochs with finite values)"
    return trend.describe()


def training_report(
    train_summary: Mapping[str, Any],
    metrics_by_epoch: pd.DataFrame,
    rules: Mapping[str, Any],
    bands: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Key training metrics (quantity, value, rule) from train_summary.json and the epoch table.

    The rule column shows the configured rule that judges a row, so numbers and thresholds sit
    side by side. With ``rules['window']`` the two slopes the trend rules judge are rows too.
    """
    check_rules(rules)
    seconds = _summary_value(train_summary, "wall_time_s")
    time_text = (
        f"{seconds:.1f} s ({seconds / 60:.1f} min)"
        if isinstance(seconds, int | float) and not is_undefined(seconds)
        else format_value(seconds)
    )
    epochs = format_value(_summary_value(train_summary, "epochs_run", len(metrics_by_epoch)))
    if train_summary.get("stopped_early"):
        epochs += " (stopped early)"
    final_train = _summary_value(
        train_summary, "final_train_loss", final_value(metrics_by_epoch, "train_loss")
    )
    final_val = _summary_value(
        train_summary, "final_val_loss", final_value(metrics_by_epoch, "val_loss")
    )
    gpu = train_summary.get("peak_gpu_memory_mb", MISSING)
    device = train_summary.get("device", MISSING)
    rss = train_summary.get("peak_rss_mb", MISSING)
    rows = [
        ("total training time", time_text, ""),
        ("iterations", format_value(_summary_value(train_summary, "iterations")), ""),
        ("epochs run", epochs, ""),
        ("final train loss", format_value(final_train), ""),
        ("final val loss", format_value(final_val), rule_text("overfit_loss_ratio", rules)),
        _best_row(train_summary, metrics_by_epoch, rules, bands),
    ]
    if "window" in rules:
        rows += _trend_rows(metrics_by_epoch, rules)
    rows += [
        ("peak GPU memory", _megabytes(gpu, f"not measured (device {device})"), ""),
        ("peak RSS", _megabytes(rss, "not measured"), ""),
        ("device", format_value(device), ""),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value", "rule"])


def _best_row(
    train_summary: Mapping[str, Any],
    metrics_by_epoch: pd.DataFrame,
    rules: Mapping[str, Any],
    bands: Sequence[float] | None,
) -> tuple[str, str, str]:
    best_at = format_value(_summary_value(train_summary, "best_epoch"))
    if is_score_table(metrics_by_epoch):
        best = format_value(_summary_value(train_summary, "best_val_srmse"))
        return ("best val sRMSE", f"{best} at epoch {best_at}", rule_text("good_val_srmse", rules))
    best = format_value(_summary_value(train_summary, "best_val_dice_pos"))
    best_rules = [rule_text("good_val_dice", rules)] + ([band_rule_text(bands)] if bands else [])
    return (
        "best val Dice (lesion-positive images)",
        f"{best} at epoch {best_at}",
        "; ".join(text for text in best_rules if text),
    )


def _trend_rows(metrics_by_epoch: pd.DataFrame, rules: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    window = rules["window"]
    gap = (
        "trend of val loss - train loss",
        _trend_text(gap_trend(metrics_by_epoch, window)),
        rule_text("overfit_gap_slope", rules),
    )
    quality = quality_of(metrics_by_epoch)
    trend = (
        f"trend of {quality.what}",
        _trend_text(quality.trend(metrics_by_epoch, window)),
        rule_text(quality.improving_rule, rules),
    )
    return [gap, trend]


# ---------------------------------------------------------------- log table


def epoch_log(metrics_by_epoch: pd.DataFrame, max_rows: int = 20) -> pd.DataFrame:
    """Every k-th epoch (k chosen so at most about ``max_rows`` rows), plus the best and last.

    The chosen k is in ``.attrs['every']``; the 'mark' column flags the best and last epochs.
    """
    n = len(metrics_by_epoch)
    every = max(1, math.ceil(n / max_rows))
    best, keep = best_epoch(metrics_by_epoch) if n else None, np.arange(n) % every == 0
    epochs = metrics_by_epoch["epoch"].to_numpy()
    keep |= (epochs == best) | (np.arange(n) == n - 1)
    log = metrics_by_epoch.loc[keep].copy()
    log["mark"] = [
        ", ".join(m for m, hit in (("best", e == best), ("last", e == epochs[-1])) if hit)
        for e in log["epoch"]
    ]
    log = log.reset_index(drop=True)
    log.attrs["every"] = every
    return log


def formatted_epoch_log(log: pd.DataFrame) -> pd.DataFrame:
    """The epoch log as text: metrics to 4 decimals, lr in scientific notation, seconds to 0.1 s,
    pixel fractions (``*_fraction``) in percent to 3 significant digits.

    One precision for every column would print a learning rate of 1e-5 as 0.0000.
    """
    shown = log.copy()
    for column in shown.columns:
        if column == "lr":
            shown[column] = [MISSING if is_undefined(v) else f"{v:.2e}" for v in shown[column]]
        elif column == "seconds":
            shown[column] = [format_value(v, 1) for v in shown[column]]
        elif column.endswith("_fraction"):
            # Lesion fractions of 1e-4 and below would all read 0.0000 at four decimals.
            shown[column] = [MISSING if is_undefined(v) else f"{100 * v:.3g}%" for v in shown[column]]
        elif column not in ("epoch", "mark") and pd.api.types.is_float_dtype(shown[column]):
            shown[column] = [format_value(v) for v in shown[column]]
    return shown
