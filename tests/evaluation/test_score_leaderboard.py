"""Tests of lesionflow.evaluation.score_leaderboard: ranks, statuses and paired differences to the
baseline of regression runs."""

import json

import numpy as np
import pandas as pd
import pytest
from leaderboards import compare_settings

from lesionflow.evaluation.regression import regression_metrics, regression_summary
from lesionflow.evaluation.run_groups import group_columns
from lesionflow.evaluation.score_leaderboard import (
    RANK_COLUMNS,
    leaderboard_columns,
    regression_leaderboard,
    run_regression_compare,
)
from lesionflow.pipeline.errors import LesionflowError


def settings(tags=None) -> dict:
    """The compare section (schema defaults, fewer resamples) plus the runs' tags."""
    return {**compare_settings(bootstrap={"n_resamples": 300}), "tags": tags or {}}


def cases(noise, seed, n=30, bias=0.0) -> pd.DataFrame:
    """A per_case_test table of ``n`` cases (two per subject) whose predictions are true + noise."""
    rng = np.random.default_rng(100)
    true = rng.uniform(0, 30, n).round(1)
    predicted = true + bias + np.random.default_rng(seed).normal(0, noise, n)
    return pd.DataFrame(
        {
            "image_id": [f"c{i:02d}" for i in range(n)],
            "subject": [f"s{i // 2}" for i in range(n)],
            "true": true,
            "predicted": predicted,
        }
    )


def summary_of(table: pd.DataFrame) -> dict:
    """The summary.json of evaluate_scores for a per-case test table (val left out)."""
    test = regression_summary(
        table["true"], table["predicted"], table["subject"].tolist(), None,
        n_resamples=50, seed=0, confidence=0.95, config_key="evaluate.bootstrap",
    )  # fmt: skip
    return {"task": "regression", "val": {}, "test": test}


def hand_summary(srmse, pearson_r, mae) -> dict:
    """A summary with the three ranked test metrics only."""
    return {
        "task": "regression",
        "test": {"overall": {"n": 30, "srmse": srmse, "pearson_r": pearson_r, "mae": mae}},
    }


def by_run(df: pd.DataFrame) -> pd.DataFrame:
    return df.set_index("run")


def test_ranks_and_mean_rank_on_a_hand_example_with_excluded_runs_unranked():
    summaries = {
        "a": hand_summary(0.5, 0.8, 2.0),
        "b": hand_summary(0.4, 0.7, 2.5),
        "c": hand_summary(0.6, 0.9, 1.5),
        "quick": hand_summary(0.1, 0.99, 0.5),  # best numbers, but tagged smoke
    }
    tables = {run: cases(1.0, i) for i, run in enumerate(summaries)}
    df = regression_leaderboard(summaries, tables, "a", settings({"quick": ["smoke"]}))
    assert df["run"].tolist() == ["c", "a", "b", "quick"]
    rows = by_run(df)
    assert rows.loc["b", ["rank_srmse", "rank_pearson_r", "rank_mae"]].tolist() == [1, 3, 3]
    assert rows.loc["c", ["rank_srmse", "rank_pearson_r", "rank_mae"]].tolist() == [3, 1, 1]
    assert rows.loc["a", "mean_rank"] == 2
    assert rows.loc["b", "mean_rank"] == pytest.approx(7 / 3)
    assert rows.loc["c", "mean_rank"] == pytest.approx(5 / 3)
    assert rows.loc["quick", "status"] == "excluded"
    assert "'smoke' is in compare.exclude_tags" in rows.loc["quick", "status_reason"]
    assert rows.loc["quick", ["rank_srmse", "rank_pearson_r", "rank_mae", "mean_rank"]].isna().all()
    assert tuple(df.columns) == leaderboard_columns()


def test_undefined_pearson_fails_a_run_which_is_not_ranked():
    summaries = {"a": hand_summary(0.5, 0.8, 2.0), "flat": hand_summary(1.0, None, 5.0)}
    tables = {run: cases(1.0, i) for i, run in enumerate(summaries)}
    rows = by_run(regression_leaderboard(summaries, tables, "a", settings()))
    assert rows.loc["flat", "status"] == "failed"
    assert "pearson_r is undefined (n=30)" in rows.loc["flat", "status_reason"]
    assert np.isnan(rows.loc["flat", "mean_rank"])
    assert rows.loc["a", "mean_rank"] == 1


def test_paired_deltas_are_the_difference_of_the_two_runs_point_metrics_inside_their_interval():
    tables = {"base": cases(3.0, 1), "better": cases(1.0, 2), "biased": cases(1.0, 3, bias=2.0)}
    summaries = {run: summary_of(table) for run, table in tables.items()}
    rows = by_run(regression_leaderboard(summaries, tables, "base", settings()))
    base = regression_metrics(tables["base"]["true"], tables["base"]["predicted"])
    for run in ("better", "biased"):
        own = regression_metrics(tables[run]["true"], tables[run]["predicted"])
        for metric in ("srmse", "pearson_r", "mae"):
            delta = rows.loc[run, f"delta_{metric}"]
            assert delta == pytest.approx(own[metric] - base[metric])
            assert delta == pytest.approx(rows.loc[run, metric] - rows.loc["base", metric])
            assert (
                rows.loc[run, f"delta_{metric}_ci_low"] <= delta <= rows.loc[run, f"delta_{metric}_ci_high"]
            )
        assert rows.loc[run, "n_paired"] == 30
    assert rows.loc["better", "delta_mae_ci_high"] < 0  # clearly better: the whole interval below 0


def test_a_run_identical_to_the_baseline_has_delta_0_with_a_zero_width_interval():
    tables = {"base": cases(2.0, 1), "copy": cases(2.0, 1), "other": cases(1.0, 2)}
    summaries = {run: summary_of(table) for run, table in tables.items()}
    rows = by_run(regression_leaderboard(summaries, tables, "base", settings()))
    for run in ("base", "copy"):
        for metric in ("srmse", "pearson_r", "mae"):
            values = rows.loc[run, [f"delta_{metric}{s}" for s in ("", "_ci_low", "_ci_high")]]
            assert values.tolist() == [0.0, 0.0, 0.0]
    assert rows.loc["base", "is_baseline"]
    assert "deltas are 0 by construction" in rows.loc["base", "paired_note"]
    assert set(rows["paired_baseline"]) == {"base"}


def test_paired_deltas_use_the_shared_cases_only():
    base, run = cases(2.0, 1), cases(1.0, 2)
    run = run.iloc[:20]
    tables = {"base": base, "run": run}
    summaries = {name: summary_of(table) for name, table in tables.items()}
    rows = by_run(regression_leaderboard(summaries, tables, "base", settings()))
    own = regression_metrics(run["true"], run["predicted"])
    theirs = regression_metrics(base["true"][:20], base["predicted"][:20])
    assert rows.loc["run", "n_paired"] == 20
    assert rows.loc["run", "delta_mae"] == pytest.approx(own["mae"] - theirs["mae"])


def test_runs_on_different_true_scores_are_not_paired_and_say_why():
    other = cases(1.0, 2).assign(true=lambda t: t["true"] + 1)
    tables = {"base": cases(2.0, 1), "other": other}
    summaries = {run: summary_of(table) for run, table in tables.items()}
    rows = by_run(regression_leaderboard(summaries, tables, "base", settings()))
    assert rows.loc["other", "n_paired"] == 0
    assert np.isnan(rows.loc["other", "delta_srmse"])
    assert "different data" in rows.loc["other", "paired_note"]


def test_a_segmentation_baseline_pairs_against_the_first_regression_run_and_says_so():
    tables = {"r1": cases(2.0, 1), "r2": cases(1.0, 2)}
    summaries = {"unet": {"level": "image", "test": {}}, **{r: summary_of(t) for r, t in tables.items()}}
    df = regression_leaderboard(summaries, tables, "unet", settings())
    assert sorted(df["run"]) == ["r1", "r2"]
    rows = by_run(df)
    assert set(rows["paired_baseline"]) == {"r1"}
    assert rows.loc["r1", "is_baseline"] and not rows.loc["r2", "is_baseline"]
    assert "'unet' is not a regression run" in rows.loc["r2", "paired_note"]


def test_an_excluded_baseline_is_an_error_naming_compare_baseline():
    tables = {"r1": cases(2.0, 1), "r2": cases(1.0, 2)}
    summaries = {r: summary_of(t) for r, t in tables.items()}
    with pytest.raises(LesionflowError, match=r"compare\.baseline 'r1' is excluded"):
        regression_leaderboard(summaries, tables, "r1", settings({"r1": ["smoke"]}))


def test_run_regression_compare_writes_the_leaderboard_csv(tmp_path):
    tables = {"base": cases(2.0, 1), "run": cases(1.0, 2)}
    summaries, per_case = {}, {}
    for run, table in tables.items():
        summaries[run] = tmp_path / run / "summary.json"
        per_case[run] = tmp_path / run / "per_case_test.csv"
        summaries[run].parent.mkdir()
        summaries[run].write_text(json.dumps(summary_of(table)))
        table.to_csv(per_case[run], index=False)
    df = run_regression_compare(summaries, per_case, "base", tmp_path / "out", settings())
    written = pd.read_csv(tmp_path / "out" / "leaderboard_regression.csv")
    own = [column for column in leaderboard_columns() if column != "source"]
    assert list(written.columns) == [*own, *group_columns(RANK_COLUMNS), "source"]
    assert written["run"].tolist() == df["run"].tolist()
    assert written["delta_mae"].to_numpy() == pytest.approx(df["delta_mae"].to_numpy())
    assert by_run(written).loc["run", "source"] == str(summaries["run"])


def test_run_regression_compare_names_a_missing_per_case_table(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary_of(cases(1.0, 1))))
    with pytest.raises(
        LesionflowError, match=r"no per-case test table given for the regression runs \['a'\]"
    ):
        run_regression_compare({"a": path}, {}, "a", tmp_path, settings())
