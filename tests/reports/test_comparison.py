"""Tests of lesionflow.reports.comparison: reading the leaderboard back, the compare notebook's
rankings, differences to the baseline and runs not ranked, and the executed compare notebook."""

from html import unescape

import numpy as np
import pandas as pd
import pytest
from figure_files import not_blank
from leaderboards import (
    SUMMARIES,
    board,
    board_with_intervals,
    compare_settings,
    counted_summary,
    status_board,
)
from schema_settings import evaluate_resampler, lesion_matching, size_bins

from lesionflow.evaluation.leaderboard import run_compare
from lesionflow.evaluation.metrics import LESION_COLUMNS, score_images
from lesionflow.evaluation.out_of_fold import write_out_of_fold
from lesionflow.evaluation.summary import summarise
from lesionflow.pipeline.artifacts import write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import comparison
from lesionflow.reports.labels import COMPARISON_NAMES
from lesionflow.reports.leaderboard_pages import write_leaderboard_pages
from lesionflow.reports.notebook import run_notebook

# --- reading the leaderboard back ------------------------------------------------------------


def test_read_leaderboard_rejects_a_baseline_other_than_the_one_it_was_built_with(tmp_path):
    write_csv(status_board(), tmp_path / "leaderboard.csv")
    with pytest.raises(LesionflowError, match="baseline='segresnet'.*'unet'"):
        comparison.read_leaderboard(tmp_path / "leaderboard.csv", "segresnet")


def test_read_leaderboard_keeps_a_run_named_na_as_text(tmp_path):
    summaries = {"NA": counted_summary(0.5), "b": counted_summary(0.4)}
    write_csv(board(summaries, "NA"), tmp_path / "leaderboard.csv")
    df = comparison.read_leaderboard(tmp_path / "leaderboard.csv", "NA")
    assert df["run"].tolist() == ["NA", "b"] and comparison.baseline_name(df) == "NA"


@pytest.mark.parametrize("content", ["", "run,status,status_reason,is_baseline,mean_rank\n"])
def test_leaderboard_without_segmentation_runs_reads_empty_whatever_the_baseline(tmp_path, content):
    (tmp_path / "leaderboard.csv").write_text(content)
    df = comparison.read_leaderboard(tmp_path / "leaderboard.csv", "a_regression_run")
    assert df.empty and comparison.status_counts(df).startswith("No segmentation runs in this config")
    assert comparison.ranking_table(df, "dice_pos").empty and comparison.baseline_differences(df).empty


def test_level_text_names_the_ranked_level_and_its_resolution():
    summaries = {name: {**s, "level": "tile", "resolution": "preprocessed"} for name, s in SUMMARIES.items()}
    text = comparison.level_text(board(summaries, "nnunet"))
    assert "tiles" in text and "compare.level: tile" in text and "preprocessed" in text


# --- tables of the notebook ------------------------------------------------------------------


def test_ranking_tables_list_ranked_runs_with_value_interval_and_n():
    tables = comparison.rankings(board_with_intervals())
    assert list(tables) == [COMPARISON_NAMES[key] for key in comparison.RANKINGS]
    dice = comparison.ranking_table(board_with_intervals(), "dice_pos")
    assert dice.columns.tolist() == ["rank", "run", "value", "n"]
    assert dice["run"].tolist() == ["segresnet", "unet"]
    assert dice.loc[0, "value"] == "0.700 [0.650, 0.750]" and dice.loc[0, "n"] == "8"
    auc = comparison.ranking_table(board_with_intervals(), "presence_roc_auc")
    assert auc.loc[0, "value"] == "0.900 (no interval)" and auc.loc[0, "n"] == "n/a"


def test_mean_rank_table_shows_the_ranks_it_averages():
    table = comparison.ranking_table(board_with_intervals(), "mean_rank")
    assert table.loc[0, "run"] == "segresnet" and table.loc[0, "rank"] == 1
    assert table.loc[0, "value"] == "1.00 (Dice 1, IoU 1, ROC-AUC 1, AP 1)" and table.loc[0, "n"] == "4"


def test_unknown_ranking_is_an_error_naming_the_choices():
    with pytest.raises(LesionflowError, match="'dice_pos'"):
        comparison.ranking_table(board_with_intervals(), "hd95")


def test_baseline_differences_cover_every_other_run_with_paired_interval_and_wilcoxon():
    table = comparison.baseline_differences(board_with_intervals()).set_index("run")
    assert sorted(table.index) == ["empty", "quick", "segresnet"]
    assert table.loc["segresnet", "Δ dice_pos"] == "+0.100 [+0.080, +0.120]"
    assert table.loc["segresnet", "Wilcoxon p"] == "<0.001" and table.loc["segresnet", "Wilcoxon n"] == "8"
    assert table.loc["segresnet", "median Δ Dice per image"] == "+0.050"
    assert table.loc["quick", "Wilcoxon p"] == "0.200"
    assert table.loc["empty", "Δ dice_pos"] == "-0.600 (no interval)"
    assert table.loc["empty", "Wilcoxon p"] == "undefined"


def test_baseline_differences_without_paired_columns_read_undefined():
    table = comparison.baseline_differences(status_board())
    assert (table["Δ lesion_f1"] == "undefined").all() and (table["Wilcoxon n"] == "n/a").all()
    assert (table["median Δ Dice per image"] == "undefined").all()


def test_not_ranked_table_lists_excluded_and_failed_runs_with_reasons():
    table = comparison.not_ranked(status_board()).set_index("run")
    assert table["status"].to_dict() == {"quick": "excluded", "empty": "failed"}
    assert "compare.exclude_tags" in table.loc["quick", "reason"]
    assert comparison.not_ranked(board(SUMMARIES, "nnunet")).empty


def test_status_counts_name_each_status_and_the_baseline():
    assert (
        comparison.status_counts(status_board())
        == "4 runs: 2 ranked, 1 excluded, 1 failed; baseline: 'unet'."
    )


# --- the executed compare notebook -----------------------------------------------------------


def _evaluated(seed, flip, empty=False):
    """(per-image table, summary) of a run scored on the shared 24 images, as evaluate makes them."""
    rng = np.random.default_rng(0)
    gts = [rng.random((16, 16)) > (0.9 if k % 3 else 1.1) for k in range(24)]
    noise = np.random.default_rng(seed)
    preds = [np.zeros_like(g) if empty else g ^ (noise.random(g.shape) < flip) for g in gts]
    ids, subjects = [f"img{k:02d}" for k in range(24)], [f"s{k // 2:02d}" for k in range(24)]
    scores = [float(p.mean()) + 0.01 * k for k, p in enumerate(preds)]
    per_image, lesions = score_images(
        ids, subjects, preds, gts, None, scores, [p.any() for p in preds],
        matching=lesion_matching(), size_bins=size_bins(),
    )
    summary = summarise(per_image, lesions, evaluate_resampler(subjects, n_resamples=50), size_bins())
    return per_image, {"level": "image", "resolution": "original", "val": {}, "test": summary}


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
    settings = compare_settings(exclude_tags=["smoke"], bootstrap={"n_resamples": 50})
    settings |= {"tags": {"quick": ["smoke"]}}
    board = run_compare(summaries, "base", tmp_path / "compare", per_image, settings)
    figures = tmp_path / "figures"
    # A config without regression runs: the regression table has its header and no rows.
    (tmp_path / "compare" / "leaderboard_regression.csv").write_text(
        "run,status,status_reason,is_baseline,srmse,pearson_r,mae,mean_rank\n"
    )
    scores = comparison.read_leaderboard(tmp_path / "compare" / "leaderboard_regression.csv")
    write_leaderboard_pages(board, scores, {"base": {"train.seed": 1}}, tmp_path / "compare")
    # Two folds of one recipe: their val tables pooled out of fold.
    folds = {"base.fold0": "base", "base.fold1": "base"}
    val = {run: tmp_path / f"{run}_val.csv" for run in folds}
    lesions = {run: tmp_path / f"{run}_lesions.csv" for run in folds}
    for i, run in enumerate(folds):
        table, summary = _evaluated(10 + i, 0.05, False)
        write_csv(table.assign(image_id=table["image_id"] + f"_f{i}"), val[run])
        write_csv(pd.DataFrame(columns=LESION_COLUMNS), lesions[run])
        write_json(tmp_path / f"{run}.json", {**summary, "settings": {"size_bins": size_bins()}})
    summaries = {run: tmp_path / f"{run}.json" for run in folds}
    write_out_of_fold(folds, val, lesions, summaries, settings["bootstrap"], tmp_path / "compare")
    params = {
        "title": "Comparison",
        "leaderboard": "compare/leaderboard.csv",  # relative: resolved from cwd
        "leaderboard_regression": "compare/leaderboard_regression.csv",
        "figures_dir": str(figures),
        "baseline": "base",
        "leaderboard_html": "compare/leaderboard.html",
        "leaderboard_regression_html": "compare/leaderboard_regression.html",
        "leaderboard_folds": "compare/leaderboard_folds.csv",
    }
    out = run_notebook(repo_root / "notebooks" / "compare.ipynb", params, tmp_path / "report", cwd=tmp_path)
    html = unescape((tmp_path / "report" / "compare.html").read_text(encoding="utf-8"))
    assert out["html"] == tmp_path / "report" / "compare.html"
    assert "By mean rank" in html and "Wilcoxon p" in html
    assert "quick" in html and "tag 'smoke' is in compare.exclude_tags" in html
    assert "no lesion predicted on any of 24 test images" in html
    assert "No regression runs in this config" in html
    # The sortable table of every run, with the settings that differ as columns.
    assert "noise floor" in html and "train.seed" in html and "lesionflowSort" in html
    assert "pooled out-of-fold validation metrics" in html and "base.fold0, base.fold1" in html
    for name in ("forest", "paired_deltas", "forest_regression", "paired_deltas_regression"):
        assert (figures / f"{name}.svg").stat().st_size > 0
        assert not_blank(figures / f"{name}.png")


def test_compare_notebook_without_a_parameter_names_it(repo_root, tmp_path):
    params = {
        "leaderboard": str(tmp_path / "leaderboard.csv"),
        "leaderboard_regression": str(tmp_path / "leaderboard_regression.csv"),
        "figures_dir": str(tmp_path),
        "leaderboard_html": str(tmp_path / "leaderboard.html"),
        "leaderboard_regression_html": str(tmp_path / "leaderboard_regression.html"),
        "leaderboard_folds": str(tmp_path / "leaderboard_folds.csv"),
    }
    with pytest.raises(LesionflowError, match="compare notebook: parameter\\(s\\) not set: baseline"):
        run_notebook(repo_root / "notebooks" / "compare.ipynb", params, tmp_path / "report")
