"""The compare stage for regression runs: ranks, run status and paired differences to a baseline.

Must never pick or drop runs by their test numbers, nor pair two runs on cases whose true scores differ.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.evaluation.bootstrap import Resampler, describe, difference
from lesionflow.evaluation.leaderboard import (
    check_baseline_is_run,
    check_baseline_not_excluded,
    check_settings,
    in_board_order,
    rank_runs,
    read_summaries,
    summary_number,
    tag_list,
    tagged_status,
)
from lesionflow.evaluation.leaderboard_columns import EXCLUDED
from lesionflow.evaluation.regression import regression_estimates
from lesionflow.evaluation.run_groups import failed_rows, group_summary, with_failed, with_groups
from lesionflow.pipeline.artifacts import write_csv
from lesionflow.pipeline.errors import LesionflowError

# Test metrics copied from each summary, in column order; p-values have no interval.
METRICS = ("srmse", "pearson_r", "pearson_p", "spearman_rho", "spearman_p", "mae", "rmse", "r2")
P_VALUES = ("pearson_p", "spearman_p")
# metric -> (rank column, lower is better)
RANK_COLUMNS = {
    "srmse": ("rank_srmse", True),
    "pearson_r": ("rank_pearson_r", False),
    "mae": ("rank_mae", True),
}
DELTA_METRICS = ("srmse", "pearson_r", "mae")
PER_CASE_REQUIRED = ("image_id", "subject", "true", "predicted")
# Leaderboard columns that hold text, read back as text (an empty note is '', not NaN).
TEXT_COLUMNS = ("run", "status", "status_reason", "tags", "paired_baseline", "paired_note", "source")
# Shared cases whose true scores differ by more than this are different data, not rounding.
TRUE_SCORE_TOLERANCE = 1e-9


def is_regression(summary: Mapping) -> bool:
    """Whether a summary.json is the evaluate_scores stage's (``"task": "regression"``)."""
    return summary.get("task") == "regression"


# ---------------------------------------------------------------- run status


def failure_reason(test: Mapping) -> str:
    """Why a run's overall test block is unusable for ranking, or '' when it is usable.

    Unusable: an undefined test sRMSE (no cases, constant true scores) or an undefined test Pearson r
    (constant predictions, the usual collapse of a regressor to one value, or fewer than 3 cases).
    """
    n = summary_number(test.get("n"))
    count = f" (n={int(n)})" if not math.isnan(n) else ""
    reasons = []
    if math.isnan(summary_number(test.get("srmse"))):
        reasons.append(f"test srmse is undefined{count}: no cases or constant true scores")
    if math.isnan(summary_number(test.get("pearson_r"))):
        reasons.append(f"test pearson_r is undefined{count}: constant predictions or fewer than 3 cases")
    return "; ".join(reasons)


def run_status(test: Mapping, tags: Sequence[str], exclude_tags: Sequence[str]) -> tuple[str, str]:
    """(status, reason) of one regression run: excluded by a tag, failed on test, or ranked (reason '')."""
    return tagged_status(failure_reason(test), tags, exclude_tags)


def _test_block(run: str, summary: Mapping, source: str) -> Mapping:
    test = summary.get("test")
    if not isinstance(test, Mapping) or not isinstance(test.get("overall"), Mapping):
        where = f" ({source})" if source else ""
        raise LesionflowError(
            f"summary of regression run {run!r}{where} lacks test.overall, which the evaluate_scores "
            "stage writes"
        )
    return test["overall"]


def _metric_row(test: Mapping) -> dict:
    row: dict = {}
    for metric in METRICS:
        row[metric] = summary_number(test.get(metric))
        if metric not in P_VALUES:
            row[f"{metric}_ci_low"] = summary_number(test.get(f"{metric}_ci_low"))
            row[f"{metric}_ci_high"] = summary_number(test.get(f"{metric}_ci_high"))
    row["n"] = summary_number(test.get("n"))
    return row


# ---------------------------------------------------------------- paired differences


def leaderboard_columns() -> tuple[str, ...]:
    """The columns of leaderboard_regression.csv, in order."""
    metrics = []
    for metric in METRICS:
        metrics += [metric] if metric in P_VALUES else [metric, f"{metric}_ci_low", f"{metric}_ci_high"]
    deltas = [f"delta_{m}{s}" for m in DELTA_METRICS for s in ("", "_ci_low", "_ci_high")]
    return (
        "run", "status", "status_reason", "is_baseline", "tags", *metrics, "n",
        *(column for column, _ in RANK_COLUMNS.values()), "mean_rank",
        *deltas, "n_paired", "paired_baseline", "paired_note", "source",
    )  # fmt: skip


def _nan_deltas() -> dict:
    return {f"delta_{m}{s}": math.nan for m in DELTA_METRICS for s in ("", "_ci_low", "_ci_high")}


def paired_deltas(per_case: pd.DataFrame, baseline: pd.DataFrame, bootstrap: Mapping) -> dict:
    """Run minus baseline on the test cases both scored: delta_<metric> with a paired interval.

    Both runs are scored on the same subject resamples of the shared cases (``compare.bootstrap``),
    so the interval is that of the difference. Cases whose true score or subject differ between the
    two tables are different data: then nothing is paired, the deltas are NaN and
    ``paired_note`` says why. Returns the deltas, ``n_paired`` and ``paired_note``.
    """
    shared = sorted(set(per_case["image_id"]) & set(baseline["image_id"]))
    ours = per_case.set_index("image_id").loc[shared]
    theirs = baseline.set_index("image_id").loc[shared]
    out = {**_nan_deltas(), "n_paired": 0, "paired_note": ""}
    if not shared:
        out["paired_note"] = "no test case shared with the baseline"
        return out
    true = ours["true"].to_numpy(dtype=float)
    differs = ~np.isclose(true, theirs["true"].to_numpy(dtype=float), rtol=0.0, atol=TRUE_SCORE_TOLERANCE)
    differs |= ours["subject"].astype(str).to_numpy() != theirs["subject"].astype(str).to_numpy()
    if differs.any():
        out["paired_note"] = (
            f"{int(differs.sum())} of {len(shared)} shared test cases differ from the baseline's in true "
            f"score or subject (e.g. {np.asarray(shared)[differs][0]!r}): the runs scored different data"
        )
        return out
    subjects = ours["subject"].astype(str).tolist()
    resampler = Resampler.from_subjects(
        subjects, bootstrap["n_resamples"], bootstrap["seed"], bootstrap["confidence"], "compare.bootstrap"
    )
    a = regression_estimates(true, ours["predicted"].to_numpy(dtype=float), subjects, resampler)
    b = regression_estimates(true, theirs["predicted"].to_numpy(dtype=float), subjects, resampler)
    for metric in DELTA_METRICS:
        described = describe(difference(a[metric], b[metric]), "d")
        for suffix in ("", "_ci_low", "_ci_high"):
            out[f"delta_{metric}{suffix}"] = described[f"d{suffix}"]
    out["n_paired"] = len(shared)
    return out


# ---------------------------------------------------------------- leaderboard


def _paired_baseline(
    summaries: Mapping[str, Mapping], statuses: Mapping[str, tuple[str, str]], baseline: str
) -> tuple[str, str]:
    """(run the deltas are taken against, why it is not ``baseline`` or '')."""
    check_baseline_is_run(baseline, summaries)
    if baseline in statuses:
        check_baseline_not_excluded(baseline, *statuses[baseline])
        return baseline, ""
    usable = [run for run, (status, _) in statuses.items() if status != EXCLUDED]
    if not usable:
        raise LesionflowError(
            f"compare.baseline {baseline!r} is not a regression run and every regression run is "
            "excluded by compare.exclude_tags; there is no run to take differences against"
        )
    return usable[0], (
        f"compare.baseline {baseline!r} is not a regression run; deltas are to the first "
        f"regression run not excluded, {usable[0]!r}"
    )


def regression_leaderboard(
    summaries: Mapping[str, Mapping],
    per_case: Mapping[str, pd.DataFrame],
    baseline: str,
    settings: Mapping,
    sources: Mapping[str, str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """One row per regression run of ``summaries``: test metrics, ranks, status and paired deltas.

    Runs of other tasks are left out. ``per_case`` holds each regression run's per_case_test table.
    ``settings`` is the compare section (exclude_tags, bootstrap) plus ``tags`` (run -> list).
    Ranks (1 = best, NaN last) and mean_rank are among ranked runs only. Deltas are run minus the
    paired baseline (``paired_baseline``: ``baseline``, or the first regression run not excluded when
    ``baseline`` is not a regression run, with the reason in ``paired_note``); the baseline's own
    deltas are computed like any other run's, so they are 0 with a zero-width interval (NaN where
    the metric itself is undefined). Ranked runs first by mean_rank, then the others by status, name.
    """
    check_settings(settings, baseline)
    sources = sources or {}
    exclude_tags = tag_list(settings["exclude_tags"], "compare.exclude_tags")
    runs = [run for run, summary in summaries.items() if is_regression(summary)]
    if not runs:
        raise LesionflowError(f"compare: none of the runs {sorted(summaries)} is a regression run")
    missing = [run for run in runs if run not in per_case]
    if missing:
        raise LesionflowError(f"compare: no per-case test table given for the regression runs {missing}")
    tests = {run: _test_block(run, summaries[run], str(sources.get(run, ""))) for run in runs}
    tags = {run: tag_list(settings["tags"].get(run), f"tags of run {run!r}") for run in runs}
    statuses = {run: run_status(tests[run], tags[run], exclude_tags) for run in runs}
    paired_to, fallback = _paired_baseline(summaries, statuses, baseline)
    rows = []
    for run in runs:
        paired = paired_deltas(per_case[run], per_case[paired_to], settings["bootstrap"])
        own = "the baseline itself: deltas are 0 by construction" if run == paired_to else ""
        note = "; ".join(part for part in (fallback, own, paired["paired_note"]) if part)
        rows.append(
            {
                "run": run,
                "status": statuses[run][0],
                "status_reason": statuses[run][1],
                "is_baseline": run == paired_to,
                "tags": ", ".join(tags[run]),
                **_metric_row(tests[run]),
                **paired,
                "paired_baseline": paired_to,
                "paired_note": note,
                "source": str(sources.get(run, "")),
            }
        )
    return in_board_order(rank_runs(pd.DataFrame(rows), RANK_COLUMNS)[list(leaderboard_columns())])


# ---------------------------------------------------------------- the stage


def read_per_case(run: str, path: str | os.PathLike) -> pd.DataFrame:
    """A run's per_case_test.csv with text ids; an error naming the run and file if absent or malformed."""
    if not Path(path).is_file():
        raise LesionflowError(f"per-case test table of run {run!r} not found: {path}")
    frame = pd.read_csv(path, dtype={"image_id": str, "subject": str, "visit": str})
    missing = [column for column in PER_CASE_REQUIRED if column not in frame.columns]
    if missing:
        raise LesionflowError(f"per-case test table {path} of run {run!r} lacks the columns {missing}")
    repeated = sorted(set(frame.loc[frame["image_id"].duplicated(), "image_id"]))
    if repeated:
        raise LesionflowError(
            f"per-case test table {path} of run {run!r} repeats the image ids {repeated[:5]}"
        )
    return frame


def run_regression_compare(
    summaries_paths: Mapping[str, str | os.PathLike],
    per_case_paths: Mapping[str, str | os.PathLike],
    baseline: str,
    out_dir: str | os.PathLike,
    settings: Mapping,
    failures: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Write ``leaderboard_regression.csv`` and ``leaderboard_regression_groups.csv`` from the runs'
    summary.json and per_case_test.csv, with a row for each run of ``failures`` (see run_compare).

    ``summaries_paths`` may hold runs of every task; only regression runs get a row and need a
    per-case table. ``settings``: the compare section with the schema's defaults filled plus ``tags``.
    """
    out = Path(out_dir)
    failed = failed_rows(failures or {}, settings.get("tags", {}))
    if not summaries_paths:
        # No regression run has test results (a config of segmentation runs only, or every one
        # failed): the table is written with its header and the failed runs' rows.
        empty = pd.DataFrame(columns=list(leaderboard_columns()))
        return _write_board(with_failed(empty, failed), settings, out)
    check_settings(settings, baseline)
    summaries = read_summaries(summaries_paths)
    tables = {
        run: read_per_case(run, path)
        for run, path in per_case_paths.items()
        if run in summaries and is_regression(summaries[run])
    }
    df = regression_leaderboard(summaries, tables, baseline, settings, sources=summaries_paths)
    return _write_board(in_board_order(with_failed(df, failed)), settings, out)


def _write_board(board: pd.DataFrame, settings: Mapping, out: Path) -> pd.DataFrame:
    board = with_groups(board, settings, RANK_COLUMNS)
    write_csv(board, out / "leaderboard_regression.csv")
    write_csv(group_summary(board, DELTA_METRICS), out / "leaderboard_regression_groups.csv")
    return board
