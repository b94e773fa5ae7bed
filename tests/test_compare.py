"""Tests of lesionflow.compare: ranks (NaN last), deltas to the baseline, sources, errors."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy.stats import wilcoxon

from lesionflow.artifacts import write_csv, write_json
from lesionflow.compare import leaderboard, paired_comparison, plot_leaderboard, run_compare, wilcoxon_dice
from lesionflow.errors import LesionflowError
from lesionflow.metrics import score_images


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


# --- paired comparisons on per-image tables -------------------------------------------------


def _per_image(seed, n=24, flip=0.0):
    """Random sparse masks for n images of n // 2 subjects; `flip` degrades the prediction."""
    rng = np.random.default_rng(0)
    gts = [rng.random((16, 16)) > (0.9 if k % 3 else 1.1) for k in range(n)]
    noise = np.random.default_rng(seed)
    preds = [g ^ (noise.random(g.shape) < flip) for g in gts]
    ids = [f"img{k:02d}" for k in range(n)]
    subjects = [f"s{k // 2:02d}" for k in range(n)]
    scores = [float(p.mean()) for p in preds]
    return score_images(ids, subjects, preds, gts, None, scores, [s > 0 for s in scores])[0]


def test_wilcoxon_p_value_equals_scipy_on_shared_reference_positive_images():
    ours, base = _per_image(1, flip=0.02), _per_image(2, flip=0.08)
    result = wilcoxon_dice(ours, base)
    positive = base["gt_pixels"].to_numpy() > 0
    expected = wilcoxon(ours["dice"][positive], base["dice"][positive]).pvalue
    assert result["wilcoxon_dice_p"] == pytest.approx(expected)
    assert result["wilcoxon_dice_n"] == int(positive.sum())
    assert result["median_dice_difference"] > 0


def test_a_run_compared_with_itself_has_zero_deltas_and_an_undefined_p_value():
    table = _per_image(1, flip=0.05)
    result = paired_comparison(table, table, {"n_resamples": 50})
    assert result["paired_delta_dice_pos"] == 0
    assert result["paired_delta_dice_pos_ci_low"] == result["paired_delta_dice_pos_ci_high"] == 0
    assert np.isnan(result["wilcoxon_dice_p"]) and result["wilcoxon_dice_n"] > 0


def test_paired_interval_brackets_the_difference_and_uses_shared_images_only():
    ours, base = _per_image(1, flip=0.01), _per_image(2, flip=0.1)
    result = paired_comparison(ours.iloc[:20], base, {"n_resamples": 300})
    assert result["n_shared_images"] == 20
    assert result["paired_delta_dice_pos_ci_low"] <= result["paired_delta_dice_pos"]
    assert result["paired_delta_dice_pos"] <= result["paired_delta_dice_pos_ci_high"]
    assert result["paired_delta_dice_pos_ci_low"] > 0  # a clearly better run


def test_run_compare_adds_paired_columns_when_given_per_image_tables(tmp_path):
    summaries, per_image = {}, {}
    for name, flip in (("good", 0.01), ("base", 0.1)):
        summaries[name] = tmp_path / name / "summary.json"
        per_image[name] = tmp_path / name / "per_image_test.csv"
        write_json(summaries[name], _summary(1 - flip, 0.5, 0.9, 0.8))
        write_csv(_per_image(3, flip=flip), per_image[name])
    df = run_compare(summaries, "base", tmp_path / "compare", per_image, {"bootstrap": {"n_resamples": 40}})
    row = df.set_index("run").loc["good"]
    assert row["n_shared_images"] == 24 and row["wilcoxon_dice_p"] < 0.05
    assert df.columns[-1] == "source"
    written = pd.read_csv(tmp_path / "compare" / "leaderboard.csv")
    assert "paired_delta_presence_ap_ci_high" in written
