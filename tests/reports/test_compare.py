"""Tests of lesionflow.reports.compare: ranks (NaN last), run status, deltas to the baseline, sources, errors,
the notebook's tables and figures, and the executed compare notebook."""

from html import unescape

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image
from scipy.stats import wilcoxon

from lesionflow.evaluation.bootstrap import Resampler
from lesionflow.evaluation.metrics import score_images
from lesionflow.evaluation.summary import summarise
from lesionflow.pipeline.artifacts import write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import compare
from lesionflow.reports.compare import (
    leaderboard,
    paired_comparison,
    plot_leaderboard,
    run_compare,
    wilcoxon_dice,
)
from lesionflow.reports.notebook import run_notebook


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


# --- run status: excluded, failed, ranked ----------------------------------------------------


def _test_section(dice, auc=0.8, n_pred=10, n_images=12, **extra):
    """A summary test section with lesion counts, as the evaluate stage writes it."""
    section = {
        "n_images": n_images,
        "n_ref_lesions": 9,
        "dice_pos": dice,
        "dice_pos_n": 8,
        "iou_pos": None if dice is None else dice * 0.8,
        "presence_roc_auc": auc,
        "presence_ap": auc,
        **extra,
    }
    if n_pred is not None:
        section["n_pred_lesions"] = n_pred
    return {"val": {}, "test": section}


STATUS_SUMMARIES = {
    "unet": _test_section(0.6),
    "segresnet": _test_section(0.7, auc=0.9),
    "quick": _test_section(0.95, auc=0.99),  # best numbers, but tagged smoke
    "empty": _test_section(0.0, auc=0.5, n_pred=0),
}
STATUS_TAGS = {"unet": [], "segresnet": ["ablation"], "quick": ["smoke"]}


def _status_board(**kwargs):
    options = {"tags": STATUS_TAGS, "exclude_tags": ["dev", "smoke"], **kwargs}
    return leaderboard(STATUS_SUMMARIES, "unet", **options)


def test_status_and_reason_of_a_tagged_run_a_run_without_lesions_and_a_normal_run():
    df = _status_board().set_index("run")
    assert df.loc["quick", "status"] == "excluded"
    assert df.loc["quick", "status_reason"] == "tag 'smoke' is in compare.exclude_tags"
    assert df.loc["empty", "status"] == "failed"
    assert df.loc["empty", "status_reason"].startswith("no lesion predicted on any of 12 test images")
    assert df.loc["segresnet", "status"] == "ranked" and df.loc["segresnet", "status_reason"] == ""
    assert df.loc["quick", "tags"] == "smoke" and df.loc["segresnet", "tags"] == "ablation"


def test_ranks_are_among_ranked_runs_only_and_the_others_sort_after_them():
    df = _status_board()
    assert df["run"].tolist() == ["segresnet", "unet", "quick", "empty"]
    ranked = df.set_index("run")
    assert ranked.loc["segresnet", "rank_dice_pos"] == 1 and ranked.loc["unet", "rank_dice_pos"] == 2
    assert ranked.loc["segresnet", "mean_rank"] == 1
    for run in ("quick", "empty"):
        assert ranked.loc[run, list(compare.METRICS.values()) + ["mean_rank"]].isna().all()


def test_every_run_is_kept_whatever_its_status():
    assert sorted(_status_board()["run"]) == sorted(STATUS_SUMMARIES)


def test_undefined_dice_with_a_missing_lesion_count_fails_with_both_reasons():
    summaries = {"a": _test_section(0.5), "b": _test_section(None, n_pred=None)}
    row = leaderboard(summaries, "a").set_index("run").loc["b"]
    assert row["status"] == "failed"
    assert "test dice_pos is undefined (dice_pos_n=8)" in row["status_reason"]
    assert "n_pred_lesions" in row["status_reason"] and np.isnan(row["mean_rank"])


def test_excluded_run_that_also_failed_says_both():
    summaries = {"a": _test_section(0.5), "b": _test_section(0.0, n_pred=0)}
    row = leaderboard(summaries, "a", tags={"b": ["dev"]}, exclude_tags=["dev"]).set_index("run").loc["b"]
    assert row["status"] == "excluded"
    assert "'dev'" in row["status_reason"] and "no lesion predicted" in row["status_reason"]


def test_excluded_baseline_is_an_error_naming_compare_baseline_and_the_tag():
    with pytest.raises(LesionflowError, match=r"compare\.baseline 'quick'.*'smoke'"):
        leaderboard(STATUS_SUMMARIES, "quick", tags=STATUS_TAGS, exclude_tags=["smoke"])


def test_failed_baseline_is_allowed_and_its_undefined_dice_gives_nan_deltas():
    summaries = {"base": _test_section(None, n_pred=0), "b": _test_section(0.5)}
    df = leaderboard(summaries, "base").set_index("run")
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
    settings = {"baseline": "unet", "exclude_tags": ["dev", "smoke"], "tags": STATUS_TAGS}
    run_compare(paths, "unet", tmp_path / "compare", settings=settings)
    written = compare.read_leaderboard(tmp_path / "compare" / "leaderboard.csv", "unet").set_index("run")
    assert written.loc["quick", "status"] == "excluded" and written.loc["empty", "status"] == "failed"
    assert written.loc["unet", "is_baseline"] and not written.loc["quick", "is_baseline"]
    assert written.loc["segresnet", "status_reason"] == ""


# --- reading the leaderboard back ------------------------------------------------------------


def test_read_leaderboard_rejects_a_baseline_other_than_the_one_it_was_built_with(tmp_path):
    write_csv(_status_board(), tmp_path / "leaderboard.csv")
    with pytest.raises(LesionflowError, match="baseline='segresnet'.*'unet'"):
        compare.read_leaderboard(tmp_path / "leaderboard.csv", "segresnet")


def test_read_leaderboard_keeps_a_run_named_na_as_text(tmp_path):
    summaries = {"NA": _test_section(0.5), "b": _test_section(0.4)}
    write_csv(leaderboard(summaries, "NA"), tmp_path / "leaderboard.csv")
    df = compare.read_leaderboard(tmp_path / "leaderboard.csv", "NA")
    assert df["run"].tolist() == ["NA", "b"] and compare.baseline_name(df) == "NA"


# --- tables of the notebook ------------------------------------------------------------------


def _board_with_intervals():
    """The status leaderboard with dice intervals and paired columns (NaN for the failed run)."""
    df = _status_board()
    df["dice_pos_ci_low"], df["dice_pos_ci_high"] = df["dice_pos"] - 0.05, df["dice_pos"] + 0.05
    for metric in compare.DELTA_METRICS:
        delta = df[metric] - 0.6
        df[f"paired_delta_{metric}"] = delta
        df[f"paired_delta_{metric}_ci_low"] = delta - 0.02
        df[f"paired_delta_{metric}_ci_high"] = delta.where(df["run"] != "empty") + 0.02
    df["wilcoxon_dice_p"] = [0.0004, np.nan, 0.2, np.nan]
    df["wilcoxon_dice_n"], df["median_dice_difference"], df["n_shared_images"] = 8, 0.05, 12
    return df


def test_ranking_tables_list_ranked_runs_with_value_interval_and_n():
    tables = compare.rankings(_board_with_intervals())
    assert list(tables) == [compare.LABELS[key] for key in compare.RANKINGS]
    dice = compare.ranking_table(_board_with_intervals(), "dice_pos")
    assert dice.columns.tolist() == ["rank", "run", "value", "n"]
    assert dice["run"].tolist() == ["segresnet", "unet"]
    assert dice.loc[0, "value"] == "0.700 [0.650, 0.750]" and dice.loc[0, "n"] == "8"
    auc = compare.ranking_table(_board_with_intervals(), "presence_roc_auc")
    assert auc.loc[0, "value"] == "0.900 (no interval)" and auc.loc[0, "n"] == "n/a"


def test_mean_rank_table_shows_the_ranks_it_averages():
    table = compare.ranking_table(_board_with_intervals(), "mean_rank")
    assert table.loc[0, "run"] == "segresnet" and table.loc[0, "rank"] == 1
    assert table.loc[0, "value"] == "1.00 (Dice 1, IoU 1, ROC-AUC 1, AP 1)" and table.loc[0, "n"] == "4"


def test_unknown_ranking_is_an_error_naming_the_choices():
    with pytest.raises(LesionflowError, match="'dice_pos'"):
        compare.ranking_table(_board_with_intervals(), "hd95")


def test_baseline_differences_cover_every_other_run_with_paired_interval_and_wilcoxon():
    table = compare.baseline_differences(_board_with_intervals()).set_index("run")
    assert sorted(table.index) == ["empty", "quick", "segresnet"]
    assert table.loc["segresnet", "Δ dice_pos"] == "+0.100 [+0.080, +0.120]"
    assert table.loc["segresnet", "Wilcoxon p"] == "<0.001" and table.loc["segresnet", "Wilcoxon n"] == "8"
    assert table.loc["quick", "Wilcoxon p"] == "0.200"
    assert table.loc["empty", "Δ dice_pos"] == "-0.600 (no interval)"
    assert table.loc["empty", "Wilcoxon p"] == "undefined"


def test_baseline_differences_without_paired_columns_read_undefined():
    table = compare.baseline_differences(_status_board())
    assert (table["Δ lesion_f1"] == "undefined").all() and (table["Wilcoxon n"] == "n/a").all()


def test_not_ranked_table_lists_excluded_and_failed_runs_with_reasons():
    table = compare.not_ranked(_status_board()).set_index("run")
    assert table["status"].to_dict() == {"quick": "excluded", "empty": "failed"}
    assert "compare.exclude_tags" in table.loc["quick", "reason"]
    assert compare.not_ranked(leaderboard(SUMMARIES, "nnunet")).empty


def test_status_counts_name_each_status_and_the_baseline():
    assert (
        compare.status_counts(_status_board()) == "4 runs: 2 ranked, 1 excluded, 1 failed; baseline: 'unet'."
    )


# --- figures of the notebook -----------------------------------------------------------------


def _texts(fig):
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def test_forest_plot_has_two_panels_and_writes_n_a_for_undefined_values():
    board = _board_with_intervals()
    board.loc[board["run"] == "segresnet", "presence_roc_auc"] = np.nan
    fig = compare.plot_forest(board)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert _texts(fig).count("n/a") == 1
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert labels == ["segresnet", "unet (baseline)", "quick (excluded)", "empty (failed)"]


def test_paired_delta_plot_has_four_panels_for_the_runs_but_the_baseline():
    fig = compare.plot_paired_deltas(_board_with_intervals())
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "segresnet",
        "quick (excluded)",
        "empty (failed)",
    ]
    assert all(ax.get_xlabel().startswith("Δ") for ax in fig.axes)


def test_figures_survive_nan_intervals_and_a_single_run():
    board = _status_board()  # no intervals and no paired columns at all
    assert len(compare.plot_forest(board).axes) == 2
    assert len(compare.plot_paired_deltas(board).axes) == 4
    single = leaderboard({"only": _test_section(None, auc=None)}, "only")
    assert (
        len(compare.plot_forest(single).axes) == 2 and _texts(compare.plot_forest(single)).count("n/a") == 2
    )
    assert "no run besides\nthe baseline" in _texts(compare.plot_paired_deltas(single))


def test_paired_delta_far_off_the_ranked_scale_is_drawn_at_the_edge_with_its_value():
    board = _board_with_intervals()
    fig = compare.plot_paired_deltas(board)
    # The failed run's dice difference (-0.6) dwarfs the ranked run's (+0.1).
    assert "-0.600 (off scale)" in _texts(fig)
    assert fig.axes[0].get_xlim()[1] < 0.6


def test_leaderboard_plot_labels_runs_that_are_not_ranked():
    fig = plot_leaderboard(_status_board())
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert "quick (excluded)" in labels and "empty (failed)" in labels


# --- the executed compare notebook -----------------------------------------------------------


def _evaluated(seed, flip, empty=False):
    """(per-image table, summary) of a run scored on the shared 24 images, as evaluate makes them."""
    rng = np.random.default_rng(0)
    gts = [rng.random((16, 16)) > (0.9 if k % 3 else 1.1) for k in range(24)]
    noise = np.random.default_rng(seed)
    preds = [np.zeros_like(g) if empty else g ^ (noise.random(g.shape) < flip) for g in gts]
    ids, subjects = [f"img{k:02d}" for k in range(24)], [f"s{k // 2:02d}" for k in range(24)]
    scores = [float(p.mean()) + 0.01 * k for k, p in enumerate(preds)]
    per_image, lesions = score_images(ids, subjects, preds, gts, None, scores, [p.any() for p in preds])
    summary = summarise(per_image, lesions, Resampler.from_subjects(subjects, 50, 0, 0.95))
    return per_image, {"val": {}, "test": summary}


def _distinct_colours(path):
    with Image.open(path) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24))


def test_compare_notebook_shows_rankings_figures_and_the_excluded_run(repo_root, tmp_path):
    runs = {
        "base": (1, 0.08, False),
        "better": (2, 0.02, False),
        "quick": (3, 0.1, False),
        "broken": (4, 0, True),
    }
    summaries, per_image = {}, {}
    for name, (seed, flip, empty) in runs.items():
        table, summary = _evaluated(seed, flip, empty)
        summaries[name] = tmp_path / name / "summary.json"
        per_image[name] = tmp_path / name / "per_image_test.csv"
        write_json(summaries[name], summary)
        write_csv(table, per_image[name])
    settings = {"exclude_tags": ["smoke"], "bootstrap": {"n_resamples": 50}, "tags": {"quick": ["smoke"]}}
    run_compare(summaries, "base", tmp_path / "compare", per_image, settings)
    figures = tmp_path / "figures"
    params = {
        "title": "Comparison",
        "leaderboard": "compare/leaderboard.csv",  # relative: resolved from cwd
        "figures_dir": str(figures),
        "baseline": "base",
    }
    out = run_notebook(repo_root / "notebooks" / "compare.ipynb", params, tmp_path / "report", cwd=tmp_path)
    html = unescape((tmp_path / "report" / "compare.html").read_text(encoding="utf-8"))
    assert out["html"] == tmp_path / "report" / "compare.html"
    assert "By mean rank" in html and "Wilcoxon p" in html
    assert "quick" in html and "tag 'smoke' is in compare.exclude_tags" in html
    assert "no lesion predicted on any of 24 test images" in html
    for name in ("forest", "paired_deltas"):
        assert (figures / f"{name}.svg").stat().st_size > 0
        assert _distinct_colours(figures / f"{name}.png") > 1


def test_leaderboard_says_which_level_and_resolution_it_ranks():
    summaries = {
        name: {**summary, "level": "tile", "resolution": "preprocessed (scale 0.29)"}
        for name, summary in SUMMARIES.items()
    }
    df = leaderboard(summaries, "nnunet")
    assert set(df["level"]) == {"tile"} and set(df["resolution"]) == {"preprocessed (scale 0.29)"}
    # summaries written before levels existed are whole-image summaries
    assert set(leaderboard(SUMMARIES, "nnunet")["level"]) == {"image"}


def test_level_text_names_the_ranked_level_and_its_resolution():
    summaries = {name: {**s, "level": "tile", "resolution": "preprocessed"} for name, s in SUMMARIES.items()}
    text = compare.level_text(leaderboard(summaries, "nnunet"))
    assert "tiles" in text and "compare.level: tile" in text and "preprocessed" in text
