"""Tests of lesionflow.reports.score_comparison: leaderboard_regression.csv read back, the regression
ranking and differences to the baseline, the baseline check, and the compare notebook run on configs
with segmentation runs only, regression runs only, and both."""

import re
from html import unescape

import numpy as np
import pandas as pd
import pytest
from figure_files import not_blank
from leaderboards import board_with_intervals

from lesionflow.evaluation.out_of_fold import write_out_of_fold
from lesionflow.pipeline.artifacts import write_csv
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import score_comparison
from lesionflow.reports.comparison import read_leaderboard
from lesionflow.reports.leaderboard_pages import write_leaderboard_pages
from lesionflow.reports.notebook import run_notebook

NAN = np.nan
# leaderboard_regression.csv's columns as the regression spec lists them, in order.
INTERVAL_METRICS = ("srmse", "pearson_r", "spearman_rho", "mae", "rmse", "r2")
SPEC_COLUMNS = [
    "run", "status", "reason", "n",
    "srmse", "srmse_ci_low", "srmse_ci_high",
    "pearson_r", "pearson_r_ci_low", "pearson_r_ci_high", "pearson_p",
    "spearman_rho", "spearman_rho_ci_low", "spearman_rho_ci_high", "spearman_p",
    "mae", "mae_ci_low", "mae_ci_high", "rmse", "rmse_ci_low", "rmse_ci_high",
    "r2", "r2_ci_low", "r2_ci_high",
    "rank_srmse", "rank_pearson_r", "rank_mae", "mean_rank",
    "delta_srmse", "delta_srmse_ci_low", "delta_srmse_ci_high",
    "delta_pearson_r", "delta_pearson_r_ci_low", "delta_pearson_r_ci_high",
    "delta_mae", "delta_mae_ci_low", "delta_mae_ci_high",
    "n_paired", "baseline",
]  # fmt: skip
FIGURES = ("forest", "paired_deltas", "forest_regression", "paired_deltas_regression")


def _row(run, status, reason, point, ranks, deltas):
    """One leaderboard_regression.csv row: ``point`` maps metric -> value (intervals +-10 %),
    ``deltas`` maps metric -> (delta, low, high)."""
    row = {"run": run, "status": status, "reason": reason, "n": 20, "n_paired": 20, "baseline": "resnet"}
    for metric in INTERVAL_METRICS:
        value = point.get(metric, NAN)
        row |= {metric: value, f"{metric}_ci_low": value * 0.9, f"{metric}_ci_high": value * 1.1}
    row |= {"pearson_p": point.get("pearson_p", NAN), "spearman_p": point.get("spearman_p", NAN)}
    row |= dict(zip(("rank_srmse", "rank_pearson_r", "rank_mae"), ranks, strict=True))
    row["mean_rank"] = np.mean(ranks)
    for metric, (delta, low, high) in deltas.items():
        row |= {f"delta_{metric}": delta, f"delta_{metric}_ci_low": low, f"delta_{metric}_ci_high": high}
    return row


def regression_board() -> pd.DataFrame:
    """Four regression runs against 'resnet': two ranked, one excluded by a tag, one failed
    (constant predictions: undefined Pearson r)."""
    good = {"srmse": 0.4, "pearson_r": 0.8, "pearson_p": 2e-5, "spearman_rho": 0.7, "spearman_p": 0.004,
            "mae": 1.5, "rmse": 2.0, "r2": 0.8}  # fmt: skip
    rows = [
        _row("densenet", "ranked", "", good, (1, 2, 1),
             {"srmse": (-0.1, -0.15, -0.05), "pearson_r": (-0.05, -0.12, 0.02), "mae": (-0.5, -0.8, -0.2)}),
        _row("resnet", "ranked", "", good | {"srmse": 0.5, "pearson_r": 0.85, "mae": 2.0}, (2, 1, 2),
             {"srmse": (0, 0, 0), "pearson_r": (0, 0, 0), "mae": (0, 0, 0)}),
        _row("quick", "excluded", "tag 'smoke' is in compare.exclude_tags", good | {"srmse": 0.3},
             (NAN, NAN, NAN), {"srmse": (-0.2, -0.3, -0.1), "pearson_r": (0.02, -0.03, 0.07),
                               "mae": (0.4, 0.1, 0.7)}),
        _row("flat", "failed",
             "test pearson_r is undefined (n=20): constant predictions or fewer than 3 cases",
             {"srmse": 1.0, "mae": 5.0, "rmse": 6.0, "r2": 0.0}, (NAN, NAN, NAN),
             {"srmse": (0.5, 0.4, 0.6), "pearson_r": (NAN, NAN, NAN), "mae": (3.0, 2.6, 3.4)}),
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=SPEC_COLUMNS)


def _read(tmp_path, frame=None):
    write_csv(regression_board() if frame is None else frame, tmp_path / "leaderboard_regression.csv")
    return score_comparison.read_regression_leaderboard(tmp_path / "leaderboard_regression.csv")


# --- reading the regression leaderboard back -------------------------------------------------


def test_regression_leaderboard_reads_its_reason_and_baseline_in_either_spelling(tmp_path):
    spec = _read(tmp_path)
    assert spec["is_baseline"].tolist() == [False, True, False, False]
    assert spec.loc[3, "status_reason"].startswith("test pearson_r is undefined")
    assert spec.loc[0, "status_reason"] == ""  # an empty reason is text, not NaN
    # The compare stage's own spelling: status_reason, an is_baseline flag, paired_baseline.
    written = regression_board().rename(columns={"reason": "status_reason", "baseline": "paired_baseline"})
    written["is_baseline"] = written["run"] == "resnet"
    again = _read(tmp_path, written)
    assert again["is_baseline"].tolist() == spec["is_baseline"].tolist()
    assert score_comparison.regression_baseline(again) == "resnet"


@pytest.mark.parametrize("content", ["", ",".join(SPEC_COLUMNS) + "\n"])
def test_regression_leaderboard_without_rows_reads_empty_and_says_there_are_no_runs(tmp_path, content):
    (tmp_path / "leaderboard_regression.csv").write_text(content)
    df = score_comparison.read_regression_leaderboard(tmp_path / "leaderboard_regression.csv")
    assert df.empty
    assert score_comparison.regression_status_counts(df).startswith("No regression runs in this config")
    assert score_comparison.regression_ranking(df).empty
    assert score_comparison.regression_differences(df).empty


def test_regression_leaderboard_lacking_a_column_or_absent_is_an_error_naming_the_file(tmp_path):
    write_csv(regression_board().drop(columns="mean_rank"), tmp_path / "board.csv")
    with pytest.raises(LesionflowError, match="board.csv: not a regression leaderboard.*mean_rank"):
        score_comparison.read_regression_leaderboard(tmp_path / "board.csv")
    with pytest.raises(LesionflowError, match="regression leaderboard .*nowhere.csv not found"):
        score_comparison.read_regression_leaderboard(tmp_path / "nowhere.csv")


# --- tables ----------------------------------------------------------------------------------


def test_regression_ranking_lists_ranked_runs_by_mean_rank_with_intervals_and_ranks(tmp_path):
    table = score_comparison.regression_ranking(_read(tmp_path))
    assert table["run"].tolist() == ["densenet", "resnet"] and table["rank"].tolist() == [1, 2]
    first = table.iloc[0]
    assert first["sRMSE (RMSE / SD of true scores)"] == "0.400 [0.360, 0.440]"
    assert first["Pearson r (predicted vs true)"] == "0.800 [0.720, 0.880]"
    assert first["MAE (score points)"] == "1.500 [1.350, 1.650]"
    assert first["ranks (sRMSE, r, MAE)"] == "1, 2, 1" and first["mean rank"] == "1.33"
    assert first["n"] == "20"


def test_other_regression_metrics_show_p_values_and_undefined_correlations(tmp_path):
    table = score_comparison.regression_other_metrics(_read(tmp_path)).set_index("run")
    assert table.loc["densenet", "Pearson p"] == "<0.001" and table.loc["densenet", "Spearman p"] == "0.004"
    assert table.loc["flat", "Pearson p"] == "undefined" and table.loc["flat", "Spearman ρ"] == "undefined"
    assert table.loc["flat", "R²"] == "0.000 [0.000, 0.000]"


def test_regression_differences_cover_every_run_but_the_baseline_with_signed_intervals(tmp_path):
    table = score_comparison.regression_differences(_read(tmp_path)).set_index("run")
    assert sorted(table.index) == ["densenet", "flat", "quick"]
    assert table.loc["densenet", "Δ srmse"] == "-0.100 [-0.150, -0.050]"
    assert table.loc["densenet", "Δ pearson_r"] == "-0.050 [-0.120, +0.020]"
    assert table.loc["flat", "Δ pearson_r"] == "undefined" and table.loc["flat", "paired cases"] == "20"


def test_regression_not_ranked_lists_excluded_and_failed_runs_with_reasons(tmp_path):
    table = score_comparison.regression_not_ranked(_read(tmp_path)).set_index("run")
    assert table["status"].to_dict() == {"quick": "excluded", "flat": "failed"}
    assert "compare.exclude_tags" in table.loc["quick", "reason"]
    expected = "4 regression runs: 2 ranked, 1 excluded, 1 failed; baseline: 'resnet'."
    assert score_comparison.regression_status_counts(_read(tmp_path)) == expected


def test_baseline_must_be_the_baseline_of_the_leaderboard_holding_it(tmp_path):
    segmentation, regression = board_with_intervals(), _read(tmp_path)  # baselines 'unet', 'resnet'
    empty = regression.iloc[:0]
    score_comparison.check_baseline(segmentation, regression, "unet")
    score_comparison.check_baseline(segmentation, regression, "resnet")
    score_comparison.check_baseline(segmentation.iloc[:0], regression, "resnet")
    wrong = "baseline='densenet' but leaderboard_regression.csv .*'resnet'"
    with pytest.raises(LesionflowError, match=wrong):
        score_comparison.check_baseline(segmentation, regression, "densenet")
    with pytest.raises(LesionflowError, match="baseline='segresnet' but leaderboard.csv .*'unet'"):
        score_comparison.check_baseline(segmentation, empty, "segresnet")
    with pytest.raises(LesionflowError, match="'typo' is not a run of leaderboard.csv nor"):
        score_comparison.check_baseline(segmentation, regression, "typo")


# --- the compare notebook with either task or both -------------------------------------------


@pytest.mark.parametrize("runs", ["segmentation", "regression", "both"])
def test_compare_notebook_serves_segmentation_regression_or_both_and_writes_all_four_figures(
    repo_root, tmp_path, runs
):
    segmentation = board_with_intervals() if runs != "regression" else board_with_intervals().iloc[:0]
    regression = regression_board() if runs != "segmentation" else regression_board().iloc[:0]
    write_csv(segmentation, tmp_path / "leaderboard.csv")
    write_csv(regression, tmp_path / "leaderboard_regression.csv")
    write_leaderboard_pages(segmentation, regression, {}, tmp_path)
    write_out_of_fold({}, {}, {}, {}, {}, tmp_path)  # a config without folds: the header only
    assert read_leaderboard(tmp_path / "leaderboard.csv").empty == (runs == "regression")
    figures = tmp_path / "figures"
    params = {
        "title": f"Comparison, {runs}",
        "leaderboard": str(tmp_path / "leaderboard.csv"),
        "leaderboard_regression": str(tmp_path / "leaderboard_regression.csv"),
        "figures_dir": str(figures),
        "baseline": "resnet" if runs == "regression" else "unet",
        "leaderboard_html": str(tmp_path / "leaderboard.html"),
        "leaderboard_regression_html": str(tmp_path / "leaderboard_regression.html"),
        "leaderboard_folds": str(tmp_path / "leaderboard_folds.csv"),
    }
    out = run_notebook(repo_root / "notebooks" / "compare.ipynb", params, tmp_path / "report", cwd=tmp_path)
    # Without tags: the notes set file names in code spans.
    html = unescape(re.sub(r"<[^>]+>", "", out["html"].read_text(encoding="utf-8")))
    no_segmentation = "No segmentation runs in this config: leaderboard.csv has no rows"
    no_regression = "No regression runs in this config: leaderboard_regression.csv has no rows"
    assert (no_segmentation in html) == (runs == "regression")
    assert (no_regression in html) == (runs == "segmentation")
    assert ("By mean rank of sRMSE, Pearson r and MAE" in html) == (runs != "segmentation")
    assert ("Wilcoxon p" in html) == (runs != "regression")
    if runs != "segmentation":
        assert "0.400 [0.360, 0.440]" in html and "-0.100 [-0.150, -0.050]" in html
        assert "4 regression runs: 2 ranked, 1 excluded, 1 failed; baseline: 'resnet'." in html
    for name in FIGURES:
        assert (figures / f"{name}.svg").stat().st_size > 0
        assert not_blank(figures / f"{name}.png")
