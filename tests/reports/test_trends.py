"""Tests of lesionflow.reports.trends: the best epoch and least-squares slopes over the last epochs."""

import math

import pandas as pd
import pytest
from frames import epochs_frame, trend_frame

from lesionflow.reports import trends


def test_slope_uses_every_epoch_of_a_run_shorter_than_the_window_and_skips_undefined_dice():
    frame = trend_frame((0.9, 0.7), (1.0, 0.9), (0.2, 0.4))
    trend = trends.val_dice_trend(frame, 5)
    assert (trend.slope, trend.first_epoch, trend.last_epoch, trend.n_epochs) == pytest.approx(
        (0.2, 1, 2, 2)
    )
    # An epoch with undefined val Dice is left out of the fit, not read as 0.
    gappy = trend_frame((0.9, 0.8, 0.7), (1.0, 0.9, 0.8), (0.2, math.nan, 0.6))
    assert trends.val_dice_trend(gappy, 3).slope == pytest.approx(0.2)


def test_gap_trend_is_the_least_squares_slope_of_val_minus_train_loss():
    # Gaps over the last 3 epochs are 0.10, 0.15, 0.20: least-squares slope 0.05 per epoch.
    frame = trend_frame((0.9, 0.5, 0.4, 0.3), (1.0, 0.6, 0.55, 0.5), (0.3, 0.5, 0.6, 0.6))
    trend = trends.gap_trend(frame, 3)
    assert trend.slope == pytest.approx(0.05) and (trend.first_epoch, trend.last_epoch) == (2, 4)
    assert trend.describe() == "slope +0.05 per epoch over epochs 2-4 (3 epochs)"


def test_a_level_series_has_slope_zero_not_floating_point_noise():
    frame = trend_frame((0.9, 0.5, 0.4, 0.3), (1.4, 1.0, 0.9, 0.8), (0.3, 0.5, 0.6, 0.6))
    assert trends.gap_trend(frame, 3).slope == 0


def test_one_epoch_has_no_trend():
    assert trends.gap_trend(trend_frame((0.9,), (1.0,), (0.3,)), 3) is None


def test_best_epoch_is_that_of_the_highest_val_dice_and_none_without_any():
    assert trends.best_epoch(epochs_frame()) == 2
    assert trends.best_epoch(epochs_frame().assign(val_dice=math.nan)) is None
    assert trends.final_value(epochs_frame(), "val_loss") == 0.6
    assert trends.final_value(epochs_frame(), "no_such_column") is None


def _score_table(val_srmse):
    """A regression run's metrics_by_epoch.csv, reduced to what the trends read."""
    n = len(val_srmse)
    epochs = range(1, n + 1)
    return pd.DataFrame({"epoch": epochs, "train_loss": 1.0, "val_loss": 1.0, "val_srmse": val_srmse})


def test_best_epoch_of_a_regression_run_is_that_of_the_lowest_val_srmse():
    table = _score_table((1.2, 0.5, 0.7))
    assert trends.is_score_table(table) and not trends.is_score_table(epochs_frame())
    assert trends.best_epoch(table) == 2
    assert trends.best_epoch(_score_table((math.nan, math.nan))) is None


def test_val_srmse_trend_is_its_least_squares_slope_over_the_last_epochs():
    trend = trends.val_srmse_trend(_score_table((2.0, 0.9, 0.8, 0.7)), 3)
    assert trend.slope == pytest.approx(-0.1) and (trend.first_epoch, trend.last_epoch) == (2, 4)
    assert trends.val_srmse_trend(_score_table((0.9,)), 3) is None


def test_longest_stretch_finds_the_longest_run_of_consecutive_epochs_and_counts_them_all():
    frame = pd.DataFrame({"epoch": [5, 1, 2, 3, 4, 6, 7, 8]})  # rows out of epoch order
    held = pd.Series([True, True, False, True, True, True, False, True])  # epochs 1, 3-6, 8
    stretch = trends.longest_stretch(frame, held)
    assert stretch == trends.Stretch(first_epoch=3, last_epoch=6, n_epochs=4, n_held=6, n_table=8)
    assert stretch.epochs(frame)["epoch"].tolist() == [5, 3, 4, 6]
    assert trends.longest_stretch(frame, pd.Series([False] * 8)) is None
    # On a tie the earliest run wins.
    in_order = frame.sort_values("epoch")
    tie = trends.longest_stretch(in_order, pd.Series([True, True, False, True, True] + [False] * 3))
    assert (tie.first_epoch, tie.last_epoch) == (1, 2)
