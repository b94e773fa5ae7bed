"""Tests of lesionflow.reports.curves: the per-epoch curves, the loss gap with its fitted trend, and
the learning rate per step."""

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
