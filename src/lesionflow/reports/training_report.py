"""The training report: what a run's training did, in tables, curves and rule-based conclusions.

It must never judge a run by anything but the explicit rules it is given, and states the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.analysis import (
    BAND_COLOURS,
    BAND_NAMES,
    MISSING,
    band_labels,
    dice_band,
    format_value,
    is_undefined,
    shade_bands,
)

EPOCH_METRICS = ("loss", "dice", "iou", "pearson")
_EPOCH_TITLES = {
    "loss": "Loss",
    "dice": "Dice, lesion-positive images",
    "iou": "IoU, lesion-positive images",
    "pearson": "Pearson r (probability vs mask)",
}
# (column suffix, panel title, y label) of the per-epoch quality curves, in panel order.
QUALITY_METRICS = (
    ("dice", "Dice", "Dice"),
    ("iou", "IoU (Jaccard)", "IoU"),
    ("pearson", "Pearson correlation", "Pearson r (probability vs mask)"),
)
# Names under which the notebook saves its figures; the Snakemake rule declares them as outputs.
FIGURE_NAMES = ("loss_curves", "metric_curves", "lr_schedule")

# Rules training_verdicts knows; a config key outside this list is a typo, not a silent no-op.
# The templates are filled with the rule's value and, for the slope rules, the window.
VERDICT_RULES: dict[str, str] = {
    "good_val_dice": "good performance if best val Dice > {value}",
    "overfit_loss_ratio": "overfitting if final val loss / final train loss > {value}",
    "window": "slopes are fitted over the last {value} epochs",
    "overfit_gap_slope": (
        "overfitting if the slope of (val loss - train loss) over the last {window} epochs "
        "> {value} per epoch"
    ),
    "improving_slope": (
        "still improving if the slope of val Dice over the last {window} epochs > {value} per epoch"
    ),
}
# Rules that fit a slope, so they need verdict_rules.window.
SLOPE_RULES = ("overfit_gap_slope", "improving_slope")
# A least-squares line through fewer than two points has no slope.
MIN_WINDOW = 2
# Decimals a fitted slope is rounded to before it is judged and shown.
SLOPE_DECIMALS = 12


def _best_epoch(metrics_by_epoch: pd.DataFrame) -> int | None:
    val = metrics_by_epoch["val_dice"]
    if val.notna().sum() == 0:
        return None
    return int(metrics_by_epoch.loc[val.idxmax(), "epoch"])


# ---------------------------------------------------------------- parameters and rules


def check_bands(bands: Sequence[float]) -> tuple[float, float]:
    """The two Dice cut points (bad | mid | good) as floats, after checking 0 <= low < high <= 1."""
    values = list(bands)
    if len(values) != 2 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise LesionflowError(f"dice_bands: expected two numbers [low, high], got {bands!r}")
    low, high = float(values[0]), float(values[1])
    if not 0 <= low < high <= 1:
        raise LesionflowError(f"dice_bands: expected 0 <= low < high <= 1, got [{low:g}, {high:g}]")
    return low, high


def _check_rules(rules: Mapping[str, Any]) -> None:
    for name, value in rules.items():
        if name not in VERDICT_RULES:
            raise LesionflowError(
                f"verdict_rules.{name}: unknown rule; known rules are {', '.join(VERDICT_RULES)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LesionflowError(f"verdict_rules.{name}: expected a number, got {value!r}")
    if "window" in rules and (not isinstance(rules["window"], int) or rules["window"] < MIN_WINDOW):
        raise LesionflowError(
            f"verdict_rules.window: expected a whole number of epochs >= {MIN_WINDOW}, "
            f"got {rules['window']!r}"
        )
    needing_window = [name for name in SLOPE_RULES if name in rules]
    if needing_window and "window" not in rules:
        # No silent default: the number of epochs a slope is fitted over changes the verdict.
        raise LesionflowError(
            f"verdict_rules.{needing_window[0]}: needs verdict_rules.window (epochs the slope is fitted over)"
        )


def rule_text(name: str, rules: Mapping[str, Any]) -> str:
    """The configured rule ``name`` in words with its threshold, or '' when it is not configured."""
    if name not in rules:
        return ""
    return VERDICT_RULES[name].format(value=rules[name], window=rules.get("window", MISSING))


def band_rule_text(bands: Sequence[float]) -> str:
    """The performance-band rule in words, with both band edges."""
    low, high = bands
    return f"performance band of best val Dice: bad < {low:g} <= mid < {high:g} <= good"


# ---------------------------------------------------------------- trends


@dataclass(frozen=True)
class Trend:
    """Least-squares line (slope per epoch, intercept at epoch 0) of a series over a span of epochs."""

    slope: float
    intercept: float
    first_epoch: int
    last_epoch: int
    n_epochs: int

    def describe(self) -> str:
        """The slope and its epochs, e.g. 'slope +0.0123 per epoch over epochs 26-30 (5 epochs)'."""
        return (
            f"slope {self.slope:+.4g} per epoch over epochs {self.first_epoch}-{self.last_epoch} "
            f"({self.n_epochs} epochs)"
        )


def loss_gap(metrics_by_epoch: pd.DataFrame) -> pd.Series:
    """Validation minus training loss per epoch (positive: the model fits training data better)."""
    return metrics_by_epoch["val_loss"] - metrics_by_epoch["train_loss"]


def last_epochs_trend(epochs: pd.Series, values: pd.Series, window: int) -> Trend | None:
    """Least-squares slope of ``values`` against ``epochs`` over the last ``window`` epochs.

    Epochs whose value is not finite (an undefined val Dice) are left out of the fit; None when
    fewer than two finite epochs remain, as a line through one point has no slope. A run shorter
    than ``window`` is fitted over all its epochs.
    """
    frame = pd.DataFrame({"epoch": np.asarray(epochs, dtype=float), "value": np.asarray(values, dtype=float)})
    frame = frame.sort_values("epoch").tail(window)
    frame = frame[np.isfinite(frame["value"])]
    if len(frame) < MIN_WINDOW:
        return None
    slope, intercept = np.polyfit(frame["epoch"], frame["value"], 1)
    # Rounding drops the fit's floating-point noise, so a level series reads +0, not +8.55e-17.
    return Trend(
        slope=round(float(slope), SLOPE_DECIMALS),
        intercept=float(intercept),
        first_epoch=int(frame["epoch"].iloc[0]),
        last_epoch=int(frame["epoch"].iloc[-1]),
        n_epochs=len(frame),
    )


def gap_trend(metrics_by_epoch: pd.DataFrame, window: int) -> Trend | None:
    """Slope of (val loss - train loss) over the last ``window`` epochs; None with < 2 epochs."""
    return last_epochs_trend(metrics_by_epoch["epoch"], loss_gap(metrics_by_epoch), window)


def val_dice_trend(metrics_by_epoch: pd.DataFrame, window: int) -> Trend | None:
    """Slope of val Dice over the last ``window`` epochs; None with < 2 epochs of finite val Dice."""
    return last_epochs_trend(metrics_by_epoch["epoch"], metrics_by_epoch["val_dice"], window)


# ---------------------------------------------------------------- verdicts


def _undefined_trend(rule: str, metrics_by_epoch: pd.DataFrame, what: str) -> str:
    return (
        f"Rule '{rule}': undefined; {len(metrics_by_epoch)} epoch(s) in the table, fewer than "
        f"{MIN_WINDOW} of them with finite {what}; a slope needs at least {MIN_WINDOW}."
    )


def performance_band_verdict(metrics_by_epoch: pd.DataFrame, bands: Sequence[float]) -> str:
    """The quality band (bad/mid/good) of the best val Dice, stating the Dice and the band edges."""
    low, high = check_bands(bands)
    rule = band_rule_text((low, high))
    best_epoch = _best_epoch(metrics_by_epoch) if len(metrics_by_epoch) else None
    if best_epoch is None:
        return f"Rule '{rule}': undefined, no finite val Dice in the epoch table."
    best = float(metrics_by_epoch["val_dice"].max())
    band = dice_band(best, (low, high))
    return (
        f"Rule '{rule}': best val Dice {best:.4f} (epoch {best_epoch}) is in band '{band}' "
        f"({band_labels((low, high))[band]})."
    )


def overfitting_verdict(metrics_by_epoch: pd.DataFrame, window: int, max_gap_slope: float) -> str:
    """Overfitting if (val loss - train loss) rose faster than ``max_gap_slope`` per epoch lately.

    The trend of the gap, not its size, is judged: validation loss is often above training loss
    from the first epoch (different data, augmentation), but a gap that keeps widening means the
    model is learning the training images rather than lesions.
    """
    rule = rule_text("overfit_gap_slope", {"overfit_gap_slope": max_gap_slope, "window": window})
    trend = gap_trend(metrics_by_epoch, window)
    if trend is None:
        return _undefined_trend(rule, metrics_by_epoch, "train and val loss")
    met = trend.slope > max_gap_slope
    conclusion = "met (overfitting)" if met else "not met (no overfitting by this rule)"
    return f"Rule '{rule}': {conclusion}; {trend.describe()} {'>' if met else '<='} {max_gap_slope}."


def improving_verdict(metrics_by_epoch: pd.DataFrame, window: int, min_slope: float) -> str:
    """Still improving if val Dice rose faster than ``min_slope`` per epoch over the last epochs."""
    rule = rule_text("improving_slope", {"improving_slope": min_slope, "window": window})
    trend = val_dice_trend(metrics_by_epoch, window)
    if trend is None:
        return _undefined_trend(rule, metrics_by_epoch, "val Dice")
    met = trend.slope > min_slope
    conclusion = "met (still improving)" if met else "not met (not improving by this rule)"
    ending = "; more epochs may raise val Dice." if met else "."
    return f"Rule '{rule}': {conclusion}; {trend.describe()} {'>' if met else '<='} {min_slope}{ending}"


def _good_val_dice_verdict(metrics_by_epoch: pd.DataFrame, threshold: float) -> str:
    rule = rule_text("good_val_dice", {"good_val_dice": threshold})
    best_epoch = _best_epoch(metrics_by_epoch) if len(metrics_by_epoch) else None
    if best_epoch is None:
        return f"Rule '{rule}': undefined, no finite val Dice in the epoch table."
    best = float(metrics_by_epoch["val_dice"].max())
    met = best > threshold
    return (
        f"Rule '{rule}': {'met' if met else 'not met'}; best val Dice {best:.4f} "
        f"(epoch {best_epoch}) {'>' if met else '<='} {threshold}."
    )


def _loss_ratio_verdict(metrics_by_epoch: pd.DataFrame, threshold: float) -> str:
    rule = rule_text("overfit_loss_ratio", {"overfit_loss_ratio": threshold})
    train, val = _final(metrics_by_epoch, "train_loss"), _final(metrics_by_epoch, "val_loss")
    if is_undefined(train) or is_undefined(val) or float(train) <= 0:
        return (
            f"Rule '{rule}': undefined; final train loss {format_value(train)}, "
            f"final val loss {format_value(val)}."
        )
    ratio = float(val) / float(train)
    met = ratio > threshold
    return (
        f"Rule '{rule}': {'met' if met else 'not met'}; {float(val):.4f} / "
        f"{float(train):.4f} = {ratio:.2f} {'>' if met else '<='} {threshold}."
    )


def training_verdicts(
    metrics_by_epoch: pd.DataFrame, rules: Mapping[str, Any], bands: Sequence[float] | None = None
) -> list[str]:
    """Conclusions from the epoch table, one per configured rule, each stating rule and numbers.

    With ``bands`` the first conclusion is the performance band of the best val Dice.
    ``rules['window']`` is a setting of the slope rules, not a conclusion of its own.
    """
    _check_rules(rules)
    verdicts = [] if bands is None else [performance_band_verdict(metrics_by_epoch, bands)]
    if "good_val_dice" in rules:
        verdicts.append(_good_val_dice_verdict(metrics_by_epoch, rules["good_val_dice"]))
    if "overfit_loss_ratio" in rules:
        verdicts.append(_loss_ratio_verdict(metrics_by_epoch, rules["overfit_loss_ratio"]))
    if "overfit_gap_slope" in rules:
        verdicts.append(
            overfitting_verdict(metrics_by_epoch, rules["window"], rules["overfit_gap_slope"])
        )
    if "improving_slope" in rules:
        verdicts.append(improving_verdict(metrics_by_epoch, rules["window"], rules["improving_slope"]))
    return verdicts


# ---------------------------------------------------------------- key numbers


def _final(metrics_by_epoch: pd.DataFrame, column: str) -> Any:
    if len(metrics_by_epoch) == 0 or column not in metrics_by_epoch.columns:
        return None
    return metrics_by_epoch[column].iloc[-1]


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
    _check_rules(rules)
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
        train_summary, "final_train_loss", _final(metrics_by_epoch, "train_loss")
    )
    final_val = _summary_value(
        train_summary, "final_val_loss", _final(metrics_by_epoch, "val_loss")
    )
    best = _summary_value(train_summary, "best_val_dice_pos")
    best_epoch = _summary_value(train_summary, "best_epoch")
    gpu = train_summary.get("peak_gpu_memory_mb", MISSING)
    device = train_summary.get("device", MISSING)
    rss = train_summary.get("peak_rss_mb", MISSING)
    best_rules = [rule_text("good_val_dice", rules)] + ([band_rule_text(bands)] if bands else [])

    rows = [
        ("total training time", time_text, ""),
        ("iterations", format_value(_summary_value(train_summary, "iterations")), ""),
        ("epochs run", epochs, ""),
        ("final train loss", format_value(final_train), ""),
        ("final val loss", format_value(final_val), rule_text("overfit_loss_ratio", rules)),
        (
            "best val Dice (lesion-positive images)",
            f"{format_value(best)} at epoch {format_value(best_epoch)}",
            "; ".join(text for text in best_rules if text),
        ),
    ]
    if "window" in rules:
        window = rules["window"]
        rows += [
            (
                "trend of val loss - train loss",
                _trend_text(gap_trend(metrics_by_epoch, window)),
                rule_text("overfit_gap_slope", rules),
            ),
            (
                "trend of val Dice",
                _trend_text(val_dice_trend(metrics_by_epoch, window)),
                rule_text("improving_slope", rules),
            ),
        ]
    rows += [
        ("peak GPU memory", _megabytes(gpu, f"not measured (device {device})"), ""),
        ("peak RSS", _megabytes(rss, "not measured"), ""),
        ("device", format_value(device), ""),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value", "rule"])


# ---------------------------------------------------------------- log table


def epoch_log(metrics_by_epoch: pd.DataFrame, max_rows: int = 20) -> pd.DataFrame:
    """Every k-th epoch (k chosen so at most about ``max_rows`` rows), plus the best and last.

    The chosen k is in ``.attrs['every']``; the 'mark' column flags the best and last epochs.
    """
    n = len(metrics_by_epoch)
    every = max(1, math.ceil(n / max_rows))
    best, keep = _best_epoch(metrics_by_epoch) if n else None, np.arange(n) % every == 0
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
    """The epoch log as text: metrics to 4 decimals, lr in scientific notation, seconds to 0.1 s.

    One precision for every column would print a learning rate of 1e-5 as 0.0000.
    """
    shown = log.copy()
    for column in shown.columns:
        if column == "lr":
            shown[column] = [MISSING if is_undefined(v) else f"{v:.2e}" for v in shown[column]]
        elif column == "seconds":
            shown[column] = [format_value(v, 1) for v in shown[column]]
        elif column not in ("epoch", "mark") and pd.api.types.is_float_dtype(shown[column]):
            shown[column] = [format_value(v) for v in shown[column]]
    return shown


# ---------------------------------------------------------------- figures


def _line_style(n_points: int) -> dict[str, Any]:
    # Markers keep a 1-epoch run visible (a line needs two points) without cluttering long runs.
    return {"marker": "o", "markersize": 3} if n_points <= 60 else {}


def _integer_x_axis(ax, values: pd.Series, label: str) -> None:
    # Half a unit of margin at least: matplotlib's default span around a single epoch or step is
    # 0.1 wide, where the integer tick locator falls back to fractional ticks.
    if len(values):
        first, last = float(values.min()), float(values.max())
        margin = max(0.5, 0.03 * (last - first))
        ax.set_xlim(first - margin, last + margin)
    # min_n_ticks=1: otherwise the locator gives up on integers when only one fits (1-epoch runs).
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def _epoch_axis(ax, epochs: pd.Series, best_epoch: int | None) -> None:
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
    _integer_x_axis(ax, epochs, "epoch")


def plot_epoch_curves(
    metrics_by_epoch: pd.DataFrame,
    bands: Sequence[float] = (0.4, 0.6),
    best_epoch: int | None = None,
) -> Figure:
    """One panel per metric (loss, dice, iou, pearson), train vs val over epochs.

    Dice and IoU panels are shaded by quality band; the best epoch (by val Dice unless given, e.g.
    from train_summary.json) is a dotted vertical line on every panel.
    """
    if best_epoch is None:
        best_epoch = _best_epoch(metrics_by_epoch)
    fig = Figure(figsize=(12, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, metric in zip(axes, EPOCH_METRICS, strict=True):
        for subset, style in (("train", "-"), ("val", "--")):
            column = f"{subset}_{metric}"
            if column in metrics_by_epoch.columns:
                ax.plot(metrics_by_epoch["epoch"], metrics_by_epoch[column], style, label=subset)
        if metric in ("dice", "iou"):
            shade_bands(ax, bands)
            ax.set_ylim(0, 1)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(_EPOCH_TITLES[metric])
        ax.set_ylabel(metric)
        ax.legend(fontsize="small")
    return fig


def plot_loss_curves(
    metrics_by_epoch: pd.DataFrame, window: int | None = None, best_epoch: int | None = None
) -> Figure:
    """Train vs val loss per epoch, and beside it the gap val - train with its fitted trend.

    With ``window`` the least-squares line the overfitting rule judges is drawn over the last
    ``window`` epochs, its slope in the legend.
    """
    if best_epoch is None:
        best_epoch = _best_epoch(metrics_by_epoch)
    epochs = metrics_by_epoch["epoch"]
    style = _line_style(len(metrics_by_epoch))
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    loss_ax, gap_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, metrics_by_epoch["train_loss"], "-", label="train", **style)
    loss_ax.plot(epochs, metrics_by_epoch["val_loss"], "--", label="validation", **style)
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Training and validation loss")
    _epoch_axis(loss_ax, epochs, best_epoch)

    gap_ax.plot(epochs, loss_gap(metrics_by_epoch), "-", color="tab:purple", label="val - train", **style)
    gap_ax.axhline(0, color="black", linewidth=0.8)
    if window is not None:
        trend = gap_trend(metrics_by_epoch, window)
        if trend is None:
            gap_ax.plot([], [], " ", label="trend undefined (< 2 epochs)")
        else:
            # Draw the fitted line itself so the reader sees exactly what the rule judged.
            span = np.array([trend.first_epoch, trend.last_epoch], dtype=float)
            gap_ax.plot(
                span, trend.intercept + trend.slope * span, color="black", linewidth=2, alpha=0.7,
                label=f"fit, epochs {trend.first_epoch}-{trend.last_epoch}: {trend.slope:+.4g}/epoch",
            )
    gap_ax.set_ylabel("val loss - train loss")
    gap_ax.set_title("Generalisation gap (validation minus training loss)")
    _epoch_axis(gap_ax, epochs, best_epoch)
    for ax in (loss_ax, gap_ax):
        ax.legend(fontsize="small")
    return fig


def plot_metric_curves(
    metrics_by_epoch: pd.DataFrame, bands: Sequence[float] = (0.4, 0.6), best_epoch: int | None = None
) -> Figure:
    """Dice, IoU and Pearson r per epoch, train vs val, one panel each; Dice shaded by ``bands``.

    Only the Dice panel is shaded: the bands are Dice cut points, and the same numbers would
    mean something else on IoU or Pearson r. One legend below the panels keeps curves uncovered.
    """
    low, high = check_bands(bands)
    if best_epoch is None:
        best_epoch = _best_epoch(metrics_by_epoch)
    style = _line_style(len(metrics_by_epoch))
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    axes = fig.subplots(1, len(QUALITY_METRICS))
    for ax, (metric, title, ylabel) in zip(axes, QUALITY_METRICS, strict=True):
        ax.plot(metrics_by_epoch["epoch"], metrics_by_epoch[f"train_{metric}"], "-", color="tab:blue",
                label="train", **style)
        ax.plot(metrics_by_epoch["epoch"], metrics_by_epoch[f"val_{metric}"], "--", color="tab:orange",
                label="validation", **style)
        if metric == "dice":
            shade_bands(ax, (low, high))
        # Pearson r can be negative; Dice and IoU cannot.
        ax.set_ylim(-1.02 if metric == "pearson" and _any_below(metrics_by_epoch, metric, 0) else 0, 1.02)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        _epoch_axis(ax, metrics_by_epoch["epoch"], best_epoch)
    handles, labels = axes[0].get_legend_handles_labels()
    labels_by_band = band_labels((low, high))
    handles += [Patch(color=BAND_COLOURS[name], alpha=0.25) for name in BAND_NAMES]
    labels += [f"Dice band {labels_by_band[name]}" for name in BAND_NAMES]
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    return fig


def _any_below(metrics_by_epoch: pd.DataFrame, metric: str, limit: float) -> bool:
    values = metrics_by_epoch[[f"train_{metric}", f"val_{metric}"]].to_numpy(dtype=float)
    return bool(np.nanmin(values, initial=limit) < limit)


def plot_lr(lr_by_step: pd.DataFrame) -> Figure:
    """Learning rate over optimiser steps, and the training loss per step beside it when logged."""
    panels = ["lr"] + (["loss"] if "loss" in lr_by_step.columns else [])
    n_epochs = lr_by_step["epoch"].nunique() if "epoch" in lr_by_step.columns else None
    fig = Figure(figsize=(6 * len(panels), 4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    titles = {"lr": "Learning rate per optimiser step", "loss": "Training loss per step (one batch)"}
    ylabels = {"lr": "learning rate", "loss": "loss"}
    for ax, column in zip(axes, panels, strict=True):
        ax.plot(lr_by_step["step"], lr_by_step[column], linewidth=1, **_line_style(len(lr_by_step)))
        _integer_x_axis(ax, lr_by_step["step"], "optimiser step")
        ax.set_ylabel(ylabels[column])
        ax.set_title(titles[column])
    # Learning rates span decades; '1.00e-04' on each tick reads better than a shared offset
    # label, and three digits keep the ticks of a constant rate (scheduler none) distinct.
    axes[0].yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.2e}"))
    if n_epochs is not None:
        fig.suptitle(f"{len(lr_by_step)} optimiser step(s) over {n_epochs} epoch(s)")
    return fig
