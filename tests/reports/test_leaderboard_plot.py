"""Tests of lesionflow.reports.leaderboard_plot: the compare stage's leaderboard.png."""

from leaderboards import SUMMARIES, board, status_board
from matplotlib.figure import Figure

from lesionflow.reports.leaderboard_plot import plot_leaderboard, row_colours, row_labels


def test_plot_has_one_panel_per_metric():
    fig = plot_leaderboard(board(SUMMARIES, "nnunet"))
    assert isinstance(fig, Figure) and len(fig.axes) == 4


def test_leaderboard_plot_labels_runs_that_are_not_ranked():
    fig = plot_leaderboard(status_board())
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert "quick (excluded)" in labels and "empty (failed)" in labels


def test_rows_say_baseline_and_status_and_grey_out_runs_that_are_not_ranked():
    board = status_board()
    assert row_labels(board) == ["segresnet", "unet (baseline)", "quick (excluded)", "empty (failed)"]
    assert row_colours(board) == ["tab:blue", "tab:orange", "0.6", "0.6"]
