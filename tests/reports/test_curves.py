"""Tests of lesionflow.reports.curves: the per-epoch curves, the loss gap with its fitted trend, and
the learning rate per step."""

import math

import numpy as np
import pandas as pd
from frames import epochs_frame, trend_frame

from lesionflow.reports import curves


def test_epoch_curves_have_one_panel_per_metric_with_train_val_and_best_epoch():
    fig = curves.plot_epoch_curves(epochs_frame(), bands=(0.4, 0.6))
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["loss", "dice", "iou", "pearson"]
    assert axes[1].get_title() == "Dice, lesion-positive images"
    for ax in axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["train", "val", "best epoch 2"]
    # Three shaded quality bands on the Dice and IoU panels only.
    assert [len(ax.patches) for ax in axes] == [0, 3, 3, 0]


def test_lr_figure_plots_lr_and_loss_per_step():
    steps = pd.DataFrame({"step": range(6), "epoch": [1] * 3 + [2] * 3, "lr": 1e-3, "loss": 0.5})
    fig = curves.plot_lr(steps)
    assert [len(ax.get_lines()) for ax in fig.get_axes()] == [1, 1]
    assert len(curves.plot_lr(steps.drop(columns="loss")).get_axes()) == 1


def test_loss_figure_draws_the_fitted_gap_trend_the_rule_judges():
    frame = trend_frame((0.9, 0.5, 0.4, 0.3), (1.0, 0.6, 0.55, 0.5), (0.3, 0.5, 0.6, 0.6))
    loss_ax, gap_ax = curves.plot_loss_curves(frame, window=3).get_axes()
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation", "best epoch 3"]
    assert loss_ax.get_ylabel() == "loss" and gap_ax.get_ylabel() == "val loss - train loss"
    fit = next(line for line in gap_ax.get_lines() if line.get_label().startswith("fit"))
    assert fit.get_label() == "fit, epochs 2-4: +0.05/epoch"
    assert list(fit.get_xdata()) == [2, 4]


def test_metric_figure_has_dice_iou_pearson_panels_and_shades_only_dice():
    fig = curves.plot_metric_curves(epochs_frame(), bands=(0.4, 0.6))
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["Dice", "IoU (Jaccard)", "Pearson correlation"]
    assert all(ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in axes)
    assert [len(ax.patches) for ax in axes] == [3, 0, 0]
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()][-1] == "Dice band good: >= 0.6"


def score_frame(val_srmse=(1.2, 0.5, 0.7), val_pearson=(0.2, 0.8, 0.7)):
    """A regression run's metrics_by_epoch.csv over epochs 1-3: val sRMSE lowest at epoch 2."""
    srmse = np.asarray(val_srmse, dtype=float)
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [30.0, 12.0, 8.0],
            "val_loss": [35.0, 14.0, 11.0],
            "train_rmse": 4.0 * srmse,
            "val_rmse": 5.0 * srmse,
            "val_srmse": srmse,
            "val_mae": 4.0 * srmse,
            "val_pearson": val_pearson,
            "lr": 1e-3,
            "seconds": 2.0,
        }
    )


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_score_figure_draws_val_srmse_and_marks_the_best_epoch():
    srmse_ax, error_ax, pearson_ax = curves.plot_score_curves(score_frame(), 0.6).get_axes()
    lines = _lines(srmse_ax)
    assert list(lines["validation sRMSE"].get_ydata()) == [1.2, 0.5, 0.7]
    star = lines["best: 0.500 at epoch 2"]
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([2], [0.5])
    assert list(lines["best epoch 2"].get_xdata()) == [2, 2]
    assert list(lines["1 = error of predicting the mean score"].get_ydata()) == [1, 1]
    # The good range below verdict_rules.good_val_srmse is shaded, and is in the legend.
    (good,) = srmse_ax.patches
    assert good.get_label() == "good: < 0.6 (verdict_rules.good_val_srmse)"
    assert srmse_ax.get_ylim()[0] == 0 and srmse_ax.get_ylim()[1] > 1.2
    assert set(_lines(error_ax)) == {"train RMSE", "validation RMSE", "validation MAE", "best epoch 2"}
    assert list(_lines(pearson_ax)["validation Pearson r"].get_ydata()) == [0.2, 0.8, 0.7]
    assert [ax.get_xlabel() for ax in (srmse_ax, error_ax, pearson_ax)] == ["epoch"] * 3
    (legend,) = srmse_ax.figure.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels.count("best epoch 2") == 1 and "validation MAE" in labels


def test_score_figure_uses_the_given_best_epoch_and_survives_undefined_values():
    fig = curves.plot_score_curves(score_frame(val_pearson=(math.nan,) * 3), None, best_epoch=3)
    srmse_ax, _, pearson_ax = fig.get_axes()
    assert "best: 0.700 at epoch 3" in _lines(srmse_ax) and not srmse_ax.patches
    assert pearson_ax.get_ylim() == (0, 1.02)
    undefined = curves.plot_score_curves(score_frame(val_srmse=(math.nan,) * 3), 0.6).get_axes()[0]
    assert not [label for label in _lines(undefined) if label.startswith("best")]


def test_loss_figure_of_a_regression_run_marks_its_lowest_val_srmse_epoch():
    loss_ax, _ = curves.plot_loss_curves(score_frame(), window=3).get_axes()
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation", "best epoch 2"]


def test_score_figure_of_a_one_epoch_run_marks_its_only_epoch():
    one = score_frame().iloc[:1]
    srmse_ax = curves.plot_score_curves(one, 0.6).get_axes()[0]
    assert "best: 1.200 at epoch 1" in _lines(srmse_ax)
    assert srmse_ax.get_xlim() == (0.5, 1.5)
