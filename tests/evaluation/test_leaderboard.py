"""Tests of lesionflow.evaluation.leaderboard: ranks (NaN last), run status, deltas to the baseline,
paired comparisons, sources, settings and errors of the compare stage."""

import numpy as np
import pandas as pd
import pytest
from leaderboards import (
    STATUS_SUMMARIES,
    STATUS_TAGS,
    SUMMARIES,
    board,
    compare_settings,
    counted_summary,
    ranked_summary,
    status_board,
)
from schema_settings import lesion_matching, size_bins
from scipy.stats import wilcoxon

from lesionflow.evaluation.leaderboard import (
    leaderboard,
    paired_comparison,
    run_compare,
    wilcoxon_dice,
)
from lesionflow.evaluation.leaderboard_columns import RANK_COLUMNS
from lesionflow.evaluation.metrics import score_images
from lesionflow.pipeline.artifacts import write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.comparison import read_leaderboard


def test_ranks_put_best_first_and_undefined_last():
    df = board(SUMMARIES, "nnunet").set_index("run")
    assert df.loc["ours", "rank_dice_pos"] == 1 and df.loc["nnunet", "rank_dice_pos"] == 3
    assert df.loc["one_class", "rank_roc_auc"] == 3 and df.loc["one_class", "rank_ap"] == 3
    assert df.loc["ours", "mean_rank"] == 1
    assert df.loc["nnunet", "mean_rank"] == pytest.approx((3 + 3 + 2 + 2) / 4)


def test_leaderboard_is_sorted_by_mean_rank_with_contract_columns():
    df = board(SUMMARIES, "nnunet")
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
    df = board(SUMMARIES, "nnunet").set_index("run")
    assert df.loc["ours", "delta_dice_pos_vs_baseline"] == pytest.approx(0.3)
    assert df.loc["ours", "delta_dice_pos_pct_vs_baseline"] == pytest.approx(300.0)
    assert df.loc["nnunet", "delta_iou_pos_vs_baseline"] == 0
    assert np.isnan(df.loc["one_class", "delta_presence_roc_auc_vs_baseline"])


def test_percent_delta_to_a_zero_baseline_is_nan_not_infinite():
    summaries = {"a": ranked_summary(0.0, 0.0, 0.5, 0.5), "b": ranked_summary(0.2, 0.1, 0.6, 0.6)}
    df = board(summaries, "a").set_index("run")
    assert np.isnan(df.loc["b", "delta_dice_pos_pct_vs_baseline"])
    assert df.loc["b", "delta_dice_pos_vs_baseline"] == pytest.approx(0.2)


def test_unknown_baseline_names_the_key_and_the_valid_runs():
    with pytest.raises(LesionflowError, match=r"compare\.baseline.*'nnunet', 'one_class', 'ours'"):
        board(SUMMARIES, "nnU-Net")


def test_run_compare_writes_the_leaderboard_with_each_source(tmp_path):
    paths = {}
    for name, summary in SUMMARIES.items():
        paths[name] = tmp_path / name / "summary.json"
        write_json(paths[name], summary)
    run_compare(paths, "nnunet", tmp_path / "compare", None, compare_settings(baseline="nnunet"))
    df = pd.read_csv(tmp_path / "compare" / "leaderboard.csv")
    assert df.set_index("run").loc["ours", "source"] == str(paths["ours"])
    assert (tmp_path / "compare" / "leaderboard.png").stat().st_size > 0


def test_run_compare_names_a_missing_summary(tmp_path):
    with pytest.raises(LesionflowError, match="missing.json"):
        run_compare({"a": tmp_path / "missing.json"}, "a", tmp_path, None, compare_settings())


def test_run_compare_without_the_schema_defaults_names_each_missing_setting(tmp_path):
    # No restated default: settings the Snakefile did not fill are an error, not a guess.
    with pytest.raises(LesionflowError, match="compare settings lack exclude_tags, bootstrap.seed"):
        settings = {"bootstrap": {"n_resamples": 10, "confidence": 0.9}, "tags": {}}
        run_compare({"a": tmp_path / "a.json"}, "a", tmp_path, None, settings)


def test_run_compare_rejects_a_baseline_other_than_the_settings_one(tmp_path):
    with pytest.raises(LesionflowError, match="baseline 'a' differs from compare.baseline 'b'"):
        run_compare({"a": tmp_path / "a.json"}, "a", tmp_path, None, compare_settings(baseline="b"))


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
    return score_images(
        ids, subjects, preds, gts, None, scores, [s > 0 for s in scores],
        matching=lesion_matching(), size_bins=size_bins(),
    )[0]


def _bootstrap(n_resamples):
    return compare_settings(bootstrap={"n_resamples": n_resamples})["bootstrap"]


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
    result = paired_comparison(table, table, _bootstrap(50))
    assert result["paired_delta_dice_pos"] == 0
    assert result["paired_delta_dice_pos_ci_low"] == result["paired_delta_dice_pos_ci_high"] == 0
    assert np.isnan(result["wilcoxon_dice_p"]) and result["wilcoxon_dice_n"] > 0


def test_paired_interval_brackets_the_difference_and_uses_shared_images_only():
    ours, base = _per_image(1, flip=0.01), _per_image(2, flip=0.1)
    result = paired_comparison(ours.iloc[:20], base, _bootstrap(300))
    assert result["n_shared_images"] == 20
    assert result["paired_delta_dice_pos_ci_low"] <= result["paired_delta_dice_pos"]
    assert result["paired_delta_dice_pos"] <= result["paired_delta_dice_pos_ci_high"]
    assert result["paired_delta_dice_pos_ci_low"] > 0  # a clearly better run


def test_run_compare_adds_paired_columns_when_given_per_image_tables(tmp_path):
    summaries, per_image = {}, {}
    for name, flip in (("good", 0.01), ("base", 0.1)):
        summaries[name] = tmp_path / name / "summary.json"
        per_image[name] = tmp_path / name / "per_image_test.csv"
        write_json(summaries[name], ranked_summary(1 - flip, 0.5, 0.9, 0.8))
        write_csv(_per_image(3, flip=flip), per_image[name])
    settings = compare_settings(bootstrap={"n_resamples": 40})
    df = run_compare(summaries, "base", tmp_path / "compare", per_image, settings)
    row = df.set_index("run").loc["good"]
    assert row["n_shared_images"] == 24 and row["wilcoxon_dice_p"] < 0.05
    assert df.columns[-1] == "source"
    written = pd.read_csv(tmp_path / "compare" / "leaderboard.csv")
    assert "paired_delta_presence_ap_ci_high" in written


# --- run status: excluded, failed, ranked ----------------------------------------------------


def test_status_and_reason_of_a_tagged_run_a_run_without_lesions_and_a_normal_run():
    df = status_board().set_index("run")
    assert df.loc["quick", "status"] == "excluded"
    assert df.loc["quick", "status_reason"] == "tag 'smoke' is in compare.exclude_tags"
    assert df.loc["empty", "status"] == "failed"
    assert df.loc["empty", "status_reason"].startswith("no lesion predicted on any of 12 test images")
    assert df.loc["segresnet", "status"] == "ranked" and df.loc["segresnet", "status_reason"] == ""
    assert df.loc["quick", "tags"] == "smoke" and df.loc["segresnet", "tags"] == "ablation"


def test_ranks_are_among_ranked_runs_only_and_the_others_sort_after_them():
    df = status_board()
    assert df["run"].tolist() == ["segresnet", "unet", "quick", "empty"]
    ranked = df.set_index("run")
    assert ranked.loc["segresnet", "rank_dice_pos"] == 1 and ranked.loc["unet", "rank_dice_pos"] == 2
    assert ranked.loc["segresnet", "mean_rank"] == 1
    for run in ("quick", "empty"):
        assert ranked.loc[run, list(RANK_COLUMNS.values()) + ["mean_rank"]].isna().all()


def test_every_run_is_kept_whatever_its_status():
    assert sorted(status_board()["run"]) == sorted(STATUS_SUMMARIES)


def test_undefined_dice_with_a_missing_lesion_count_fails_with_both_reasons():
    summaries = {"a": counted_summary(0.5), "b": counted_summary(None, n_pred=None)}
    row = board(summaries, "a").set_index("run").loc["b"]
    assert row["status"] == "failed"
    assert "test dice_pos is undefined (dice_pos_n=8)" in row["status_reason"]
    assert "n_pred_lesions" in row["status_reason"] and np.isnan(row["mean_rank"])


def test_excluded_run_that_also_failed_says_both():
    summaries = {"a": counted_summary(0.5), "b": counted_summary(0.0, n_pred=0)}
    row = leaderboard(summaries, "a", tags={"b": ["dev"]}, exclude_tags=["dev"]).set_index("run").loc["b"]
    assert row["status"] == "excluded"
    assert "'dev'" in row["status_reason"] and "no lesion predicted" in row["status_reason"]


def test_excluded_baseline_is_an_error_naming_compare_baseline_and_the_tag():
    with pytest.raises(LesionflowError, match=r"compare\.baseline 'quick'.*'smoke'"):
        leaderboard(STATUS_SUMMARIES, "quick", tags=STATUS_TAGS, exclude_tags=["smoke"])


def test_failed_baseline_is_allowed_and_its_undefined_dice_gives_nan_deltas():
    summaries = {"base": counted_summary(None, n_pred=0), "b": counted_summary(0.5)}
    df = board(summaries, "base").set_index("run")
    assert df.loc["base", "status"] == "failed" and df.loc["b", "rank_dice_pos"] == 1
    assert np.isnan(df.loc["b", "delta_dice_pos_vs_baseline"])


def test_tags_given_as_a_bare_string_are_an_error():
    with pytest.raises(LesionflowError, match="tags of run 'quick'"):
        leaderboard(STATUS_SUMMARIES, "unet", tags={"quick": "smoke"}, exclude_tags=["smoke"])


def test_run_compare_takes_tags_and_exclude_tags_from_settings(tmp_path):
    paths = {}
    for name, summary in STATUS_SUMMARIES.items():
        paths[name] = tmp_path / name / "summary.json"
        write_json(paths[name], summary)
    settings = compare_settings(baseline="unet", exclude_tags=["dev", "smoke"]) | {"tags": STATUS_TAGS}
    run_compare(paths, "unet", tmp_path / "compare", None, settings)
    written = read_leaderboard(tmp_path / "compare" / "leaderboard.csv", "unet").set_index("run")
    assert written.loc["quick", "status"] == "excluded" and written.loc["empty", "status"] == "failed"
    assert written.loc["unet", "is_baseline"] and not written.loc["quick", "is_baseline"]
    assert written.loc["segresnet", "status_reason"] == ""


def test_run_compare_excludes_the_schemas_default_tags(tmp_path):
    # compare.exclude_tags comes from the schema's default (dev, smoke), not from the code.
    paths = {}
    for name, summary in STATUS_SUMMARIES.items():
        paths[name] = tmp_path / name / "summary.json"
        write_json(paths[name], summary)
    settings = compare_settings() | {"tags": STATUS_TAGS}
    df = run_compare(paths, "unet", tmp_path / "compare", None, settings).set_index("run")
    assert df.loc["quick", "status"] == "excluded"


def test_leaderboard_says_which_level_and_resolution_it_ranks():
    summaries = {
        name: {**summary, "level": "tile", "resolution": "preprocessed (scale 0.29)"}
        for name, summary in SUMMARIES.items()
    }
    df = board(summaries, "nnunet")
    assert set(df["level"]) == {"tile"} and set(df["resolution"]) == {"preprocessed (scale 0.29)"}
    assert set(board(SUMMARIES, "nnunet")["level"]) == {"image"}


def test_a_summary_without_a_level_is_an_error_naming_its_file(tmp_path):
    # No guessed level: the evaluate stage always writes one.
    paths = {"ours": tmp_path / "ours" / "summary.json"}
    write_json(paths["ours"], {key: value for key, value in SUMMARIES["ours"].items() if key != "level"})
    with pytest.raises(LesionflowError, match=r"run 'ours' \(.*ours.summary\.json\) lacks 'level'"):
        run_compare(paths, "ours", tmp_path / "compare", None, compare_settings(baseline="ours"))
