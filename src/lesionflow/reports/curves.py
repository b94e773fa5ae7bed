"""Training curves: metrics per epoch, the loss gap with its fitted trend, the learning rate per step
(or, for a run with no training in lesionflow, a panel saying so).

Must never smooth, fill or rescale a series: every point drawn is a value of the train stage's tables.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lesionflow.reports import trends
from lesionflow.reports.bands import BAND_COLOURS, BAND_NAMES, band_labels, check_bands, shade_bands
from lesionflow.reports.labels import EPOCH_TITLES, QUALITY_PANELS

# The error lines of a regression run's RMSE/MAE panel: (column, line style, colour, label).
SCORE_ERROR_LINES = (
    ("train_rmse", "-", "tab:blue", "train RMSE"),
    ("val_rmse", "--", "tab:orange", "validation RMSE"),
    ("val_mae", ":", "tab:green", "validation MAE"),
)


def _line_style(n_points: int) -> dict[str, Any]:
    # Markers keep a 1-epoch run visible (a line needs two points) without cluttering long runs.
    return {"marker": "o", "markersize": 3} if n_points <= 60 else {}


def _best_epoch_line(ax: Axes, best_epoch: int | None) -> None:
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")


def _integer_x_axis(ax: Axes, values: pd.Series, label: str) -> None:
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


def _epoch_axis(ax: Axes, epochs: pd.Series, best_epoch: int | None) -> None:
    _best_epoch_line(ax, best_epoch)
    _integer_x_axis(ax, epochs, "epoch")


def plot_epoch_curves(
    metrics_by_epoch: pd.DataFrame, bands: Sequence[float], best_epoch: int | None = None
) -> Figure:
    """One panel per metric (loss, dice, iou, pearson), train vs val over epochs.

    Dice and IoU panels are shaded by quality band; the best epoch (by val Dice unless given, e.g.
    from train_summary.json) is a dotted vertical line on every panel.
    """
    if best_epoch is None:
        best_epoch = trends.best_epoch(metrics_by_epoch)
    fig = Figure(figsize=(12, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (metric, title) in zip(axes, EPOCH_TITLES.items(), strict=True):
        for subset, style in (("train", "-"), ("val", "--")):
            column = f"{subset}_{metric}"
            if column in metrics_by_epoch.columns:
                ax.plot(metrics_by_epoch["epoch"], metrics_by_epoch[column], style, label=subset)
        if metric in ("dice", "iou"):
            shade_bands(ax, bands)
            ax.set_ylim(0, 1)
        _best_epoch_line(ax, best_epoch)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
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
        best_epoch = trends.best_epoch(metrics_by_epoch)
    epochs = metrics_by_epoch["epoch"]
    style = _line_style(len(metrics_by_epoch))
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    loss_ax, gap_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, metrics_by_epoch["train_loss"], "-", label="train", **style)
    loss_ax.plot(epochs, metrics_by_epoch["val_loss"], "--", label="validation", **style)
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Training and validation loss")
    _epoch_axis(loss_ax, epochs, best_epoch)

    gap = trends.loss_gap(metrics_by_epoch)
    gap_ax.plot(epochs, gap, "-", color="tab:purple", label="val - train", **style)
    gap_ax.axhline(0, color="black", linewidth=0.8)
    if window is not None:
        trend = trends.gap_trend(metrics_by_epoch, window)
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
    metrics_by_epoch: pd.DataFrame, bands: Sequence[float], best_epoch: int | None = None
) -> Figure:
    """Dice, IoU and Pearson r per epoch, train vs val, one panel each; Dice shaded by ``bands``.

    Only the Dice panel is shaded: the bands are Dice cut points, and the same numbers would
    mean something else on IoU or Pearson r. One legend below the panels keeps curves uncovered.
    """
    low, high = check_bands(bands)
    if best_epoch is None:
        best_epoch = trends.best_epoch(metrics_by_epoch)
    style = _line_style(len(metrics_by_epoch))
    fig = Figure(figsize=(15, 4.8), layout="constrained")
    axes = fig.subplots(1, len(QUALITY_PANELS))
    for ax, (metric, title, ylabel) in zip(axes, QUALITY_PANELS, strict=True):
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


def _srmse_panel(
    ax: Axes, metrics_by_epoch: pd.DataFrame, good_srmse: float | None, best_epoch: int | None
) -> None:
    epochs, srmse = metrics_by_epoch["epoch"], metrics_by_epoch["val_srmse"].to_numpy(dtype=float)
    if good_srmse is not None:
        ax.axhspan(
            0,
            good_srmse,
            color=BAND_COLOURS["good"],
            alpha=0.12,
            linewidth=0,
            label=f"good: < {good_srmse:g} (verdict_rules.good_val_srmse)",
        )
    ax.axhline(1, color="0.35", linestyle="-.", linewidth=1, label="1 = error of predicting the mean score")
    ax.plot(epochs, srmse, "-", color="tab:red", label="validation sRMSE", **_line_style(len(epochs)))
    at_best = srmse[(epochs == best_epoch).to_numpy()] if best_epoch is not None else []
    if len(at_best) and np.isfinite(at_best[0]):
        ax.plot(
            best_epoch,
            at_best[0],
            "*",
            color="black",
            markersize=13,
            zorder=3,
            label=f"best: {at_best[0]:.3f} at epoch {best_epoch}",
        )
    finite = srmse[np.isfinite(srmse)]
    # From 0, and always tall enough to show the good threshold and the level of predicting the mean.
    top = max([1.0, good_srmse or 0.0, *finite]) * 1.08
    ax.set_ylim(0, top)
    ax.set_ylabel("val sRMSE = RMSE / SD of true scores (lower is better)")
    ax.set_title("Standardised RMSE, validation")
    _epoch_axis(ax, epochs, best_epoch)


def plot_score_curves(
    metrics_by_epoch: pd.DataFrame, good_srmse: float | None, best_epoch: int | None = None
) -> Figure:
    """A regression run's quality per epoch: val sRMSE, RMSE and MAE, and val Pearson r, one panel each.

    The sRMSE panel shades the good range below ``good_srmse`` (verdict_rules.good_val_srmse; None:
    not shaded), marks sRMSE 1 (the error of always predicting the mean score) and the best epoch
    (lowest val sRMSE unless given, e.g. from train_summary.json) with a star; every panel has the
    best epoch as a dotted vertical line. One legend below the panels names every line once.
    """
    if best_epoch is None:
        best_epoch = trends.best_epoch(metrics_by_epoch)
    epochs, style = metrics_by_epoch["epoch"], _line_style(len(metrics_by_epoch))
    fig = Figure(figsize=(16, 5), layout="constrained")
    srmse_ax, error_ax, pearson_ax = fig.subplots(1, 3)
    _srmse_panel(srmse_ax, metrics_by_epoch, good_srmse, best_epoch)
    for column, line, colour, label in SCORE_ERROR_LINES:
        if column in metrics_by_epoch.columns:
            error_ax.plot(epochs, metrics_by_epoch[column], line, color=colour, label=label, **style)
    error_ax.set_ylim(bottom=0)
    error_ax.set_ylabel("score points (lower is better)")
    error_ax.set_title("RMSE and MAE")
    _epoch_axis(error_ax, epochs, best_epoch)
    pearson_ax.plot(
        epochs, metrics_by_epoch["val_pearson"], "-.", color="tab:purple", label="validation Pearson r",
        **style,
    )  # fmt: skip
    below = bool(np.nanmin(metrics_by_epoch["val_pearson"].to_numpy(dtype=float), initial=0) < 0)
    pearson_ax.set_ylim(-1.02 if below else 0, 1.02)
    pearson_ax.set_ylabel("Pearson r, predicted vs true score")
    pearson_ax.set_title("Pearson correlation, validation")
    _epoch_axis(pearson_ax, epochs, best_epoch)
    # One legend below the panels, each entry once (the best-epoch line is on every panel), keeps
    # the curves uncovered.
    entries: dict[str, Any] = {}
    for ax in (srmse_ax, error_ax, pearson_ax):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=5, fontsize="small")
    return fig


def _any_below(metrics_by_epoch: pd.DataFrame, metric: str, limit: float) -> bool:
    values = metrics_by_epoch[[f"train_{metric}", f"val_{metric}"]].to_numpy(dtype=float)
    return bool(np.nanmin(values, initial=limit) < limit)


def plot_no_curves(message: str, title: str) -> Figure:
    """A panel holding only ``message``: the epoch-curve figure of a run with no training in lesionflow
    (its predictions imported from another tool), which the workflow still expects as a file."""
    # The pattern of comparison_figures.message_figure, not an import of it: that would make the
    # analyse stage's code, and so its results' keys, depend on the leaderboard's figures.
    fig = Figure(figsize=(9, 2.6), layout="constrained")
    ax = fig.subplots()
    # Wrapped between words only: a folder's path stays whole, to be copied.
    text = textwrap.fill(message, width=80, break_long_words=False, break_on_hyphens=False)
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="0.3")
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


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
