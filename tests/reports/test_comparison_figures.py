"""Tests of lesionflow.reports.comparison_figures: the forest plot and the paired differences to the
baseline, with undefined values, runs that are not ranked and a single run."""

import numpy as np
from leaderboards import board, board_with_intervals, counted_summary, status_board
from matplotlib.figure import Figure

from lesionflow.reports.comparison_figures import plot_forest, plot_paired_deltas


def _texts(fig):
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def test_forest_plot_has_two_panels_and_writes_n_a_for_undefined_values():
    board = board_with_intervals()
    board.loc[board["run"] == "segresnet", "presence_roc_auc"] = np.nan
    fig = plot_forest(board)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert _texts(fig).count("n/a") == 1
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert labels == ["segresnet", "unet (baseline)", "quick (excluded)", "empty (failed)"]


def test_paired_delta_plot_has_four_panels_for_the_runs_but_the_baseline():
    fig = plot_paired_deltas(board_with_intervals())
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "segresnet",
        "quick (excluded)",
        "empty (failed)",
    ]
    assert all(ax.get_xlabel().startswith("Δ") for ax in fig.axes)


def test_figures_survive_nan_intervals_and_a_single_run():
    statuses = status_board()  # no intervals and no paired columns at all
    assert len(plot_forest(statuses).axes) == 2
    assert len(plot_paired_deltas(statuses).axes) == 4
    single = board({"only": counted_summary(None, auc=None)}, "only")
    assert len(plot_forest(single).axes) == 2 and _texts(plot_forest(single)).count("n/a") == 2
    assert "no run besides\nthe baseline" in _texts(plot_paired_deltas(single))


def test_paired_delta_far_off_the_ranked_scale_is_drawn_at_the_edge_with_its_value():
    fig = plot_paired_deltas(board_with_intervals())
    # The failed run's dice difference (-0.6) dwarfs the ranked run's (+0.1).
    assert "-0.600 (off scale)" in _texts(fig)
    assert fig.axes[0].get_xlim()[1] < 0.6


def test_figures_of_a_leaderboard_without_rows_say_there_are_no_segmentation_runs():
    empty = board_with_intervals().iloc[:0]
    for fig in (plot_forest(empty), plot_paired_deltas(empty)):
        assert "No segmentation runs in this config\n(leaderboard.csv has no rows)." in _texts(fig)
