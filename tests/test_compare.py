"""Tests of lesionflow.compare: ranks (NaN last), deltas to the baseline, sources, errors."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lesionflow.artifacts import write_json
from lesionflow.compare import leaderboard, plot_leaderboard, run_compare
from lesionflow.errors import LesionflowError


def _summary(dice, iou, auc, ap):
    return {
        "val": {},
        "test": {"dice_pos": dice, "iou_pos": iou, "presence_roc_auc": auc, "presence_ap": ap},
    }


SUMMARIES = {
    "ours": _summary(0.4, 0.3, 0.9, 0.75),
    "nnunet": _summary(0.1, 0.05, 0.7, 0.3),
    "one_class": _summary(0.2, 0.1, None, None),  # presence undefined (null in JSON)
}


def test_ranks_put_best_first_and_undefined_last():
    df = leaderboard(SUMMARIES, "nnunet").set_index("run")
    assert df.loc["ours", "rank_dice_pos"] == 1 and df.loc["nnunet", "rank_dice_pos"] == 3
    assert df.loc["one_class", "rank_roc_auc"] == 3 and df.loc["one_class", "rank_ap"] == 3
    assert df.loc["ours", "mean_rank"] == 1
    assert df.loc["nnunet", "mean_rank"] == pytest.approx((3 + 3 + 2 + 2) / 4)


def test_leaderboard_is_sorted_by_mean_rank_with_contract_columns():
    df = leaderboard(SUMMARIES, "nnunet")
    assert df["run"].tolist() == ["ours", "nnunet", "one_class"]
    for column in (
        "run",
        "dice_pos",
        "iou_pos",
        "presence_roc_auc",
        "presence_ap",
        "rank_dice_pos",
        "rank_iou_pos",
        "rank_roc_auc",
        "rank_ap",
        "mean_rank",
        "delta_dice_pos_vs_baseline",
        "delta_dice_pos_pct_vs_baseline",
        "delta_presence_ap_pct_vs_baseline",
        "source",
    ):
        assert column in df


def test_deltas_to_baseline_are_absolute_and_percent():
    df = leaderboard(SUMMARIES, "nnunet").set_index("run")
    assert df.loc["ours", "delta_dice_pos_vs_baseline"] == pytest.approx(0.3)
    assert df.loc["ours", "delta_dice_pos_pct_vs_baseline"] == pytest.approx(300.0)
    assert df.loc["nnunet", "delta_iou_pos_vs_baseline"] == 0
    assert np.isnan(df.loc["one_class", "delta_presence_roc_auc_vs_baseline"])


def test_percent_delta_to_a_zero_baseline_is_nan_not_infinite():
    summaries = {"a": _summary(0.0, 0.0, 0.5, 0.5), "b": _summary(0.2, 0.1, 0.6, 0.6)}
    df = leaderboard(summaries, "a").set_index("run")
    assert np.isnan(df.loc["b", "delta_dice_pos_pct_vs_baseline"])
    assert df.loc["b", "delta_dice_pos_vs_baseline"] == pytest.approx(0.2)


def test_unknown_baseline_names_the_key_and_the_valid_runs():
    with pytest.raises(LesionflowError, match=r"compare\.baseline.*'nnunet', 'one_class', 'ours'"):
        leaderboard(SUMMARIES, "nnU-Net")


def test_plot_has_one_panel_per_metric():
    fig = plot_leaderboard(leaderboard(SUMMARIES, "nnunet"))
    assert isinstance(fig, Figure) and len(fig.axes) == 4


def test_run_compare_writes_the_leaderboard_with_each_source(tmp_path):
    paths = {}
    for name, summary in SUMMARIES.items():
        paths[name] = tmp_path / name / "summary.json"
        write_json(paths[name], summary)
    run_compare(paths, "nnunet", tmp_path / "compare")
    df = pd.read_csv(tmp_path / "compare" / "leaderboard.csv")
    assert df.set_index("run").loc["ours", "source"] == str(paths["ours"])
    assert (tmp_path / "compare" / "leaderboard.png").stat().st_size > 0


def test_run_compare_names_a_missing_summary(tmp_path):
    with pytest.raises(LesionflowError, match="missing.json"):
        run_compare({"a": tmp_path / "missing.json"}, "a", tmp_path)
