"""Tests of lesionflow.reports.score_comparison_figures: the regression forest plot and paired
differences, with undefined values, runs that are not ranked, a single run and no run at all."""

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lesionflow.reports.comparison_figures import BETTER_COLOUR, UNCLEAR_COLOUR, WORSE_COLOUR
from lesionflow.reports.score_comparison_figures import plot_regression_deltas, plot_regression_forest

NAN = np.nan


def board() -> pd.DataFrame:
    """leaderboard_regression.csv as read back: 'resnet' is the baseline; 'densenet' has a lower
    sRMSE (better) and a lower r (worse) than it, 'flat' failed with an undefined r."""
    rows = {
        "run": ["densenet", "resnet", "wide", "flat"],
        "status": ["ranked", "ranked", "ranked", "failed"],
        "status_reason": ["", "", "", "test pearson_r is undefined"],
        "is_baseline": [False, True, False, False],
        "srmse": [0.4, 0.5, 0.55, 1.0],
        "pearson_r": [0.8, 0.85, 0.84, NAN],
        "mae": [1.5, 2.0, 2.1, 5.0],
        "delta_srmse": [-0.1, 0.0, 0.01, 0.5],
        "delta_pearson_r": [-0.05, 0.0, -0.01, NAN],
        "delta_mae": [-0.5, 0.0, 0.02, 3.0],
    }
    df = pd.DataFrame(rows)
    for metric in ("srmse", "pearson_r", "mae", "delta_srmse", "delta_pearson_r", "delta_mae"):
        df[f"{metric}_ci_low"], df[f"{metric}_ci_high"] = df[metric] - 0.03, df[metric] + 0.03
    return df


def _texts(fig):
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def _point_colours(ax):
    """Colour of each row's point (the lines drawn with a circle marker), top row first."""
    return [line.get_color() for line in ax.get_lines() if line.get_marker() == "o"]


def test_regression_forest_shows_srmse_and_r_per_run_with_n_a_for_undefined_r():
    fig = plot_regression_forest(board())
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert labels == ["densenet", "resnet (baseline)", "wide", "flat (failed)"]
    assert fig.axes[0].get_xlabel().startswith("sRMSE") and fig.axes[1].get_xlabel().startswith("Pearson r")
    assert _texts(fig).count("n/a") == 1  # flat's undefined r, never drawn at 0
    # sRMSE from 0 past 1 (predicting the mean) and past the failed run's interval end, 1.03.
    low, high = fig.axes[0].get_xlim()
    assert low == 0 and high > 1.03


def test_regression_deltas_colour_each_interval_by_the_side_that_is_better():
    fig = plot_regression_deltas(board())
    srmse_ax, r_ax, mae_ax = fig.axes
    assert [t.get_text() for t in srmse_ax.get_yticklabels()] == ["densenet", "wide", "flat (failed)"]
    assert "negative = run better" in srmse_ax.get_xlabel() and "positive = run better" in r_ax.get_xlabel()
    # densenet: sRMSE and MAE lower (better, green), r lower (worse, red); wide's intervals include 0.
    assert _point_colours(srmse_ax)[:2] == [BETTER_COLOUR, UNCLEAR_COLOUR]
    assert _point_colours(r_ax)[:2] == [WORSE_COLOUR, UNCLEAR_COLOUR]
    assert _point_colours(mae_ax)[:2] == [BETTER_COLOUR, UNCLEAR_COLOUR]
    # flat's MAE difference (+3.0) is far off the ranked runs' scale: drawn at the edge with its value.
    assert "+3.000 (off scale)" in _texts(fig) and "n/a" in _texts(fig)
    assert "'resnet'" in fig.get_suptitle()


def test_regression_figures_of_no_run_or_only_the_baseline_say_so():
    empty = board().iloc[:0]
    for fig in (plot_regression_forest(empty), plot_regression_deltas(empty)):
        assert "No regression runs in this config\n(leaderboard_regression.csv has no rows)." in _texts(fig)
    single = board().iloc[[1]]
    assert len(plot_regression_forest(single).axes) == 2
    assert _texts(plot_regression_deltas(single)).count("no run besides\nthe baseline") == 3
