"""Groups of runs in a leaderboard (the seeds of one recipe) and the rows of runs that never finished.

Must never rank or drop a run by its numbers: a failed run is listed with the stage that failed and
its log, and a group's spread is a noise floor, not a filter.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.evaluation.leaderboard_columns import FAILED, RANKED
from lesionflow.pipeline.artifacts import read_json
from lesionflow.pipeline.errors import LesionflowError


def failed_rows(
    failures: Mapping[str, Mapping[str, str]], tags: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """One leaderboard row per run without test results: status failed, the reason, the stage that
    failed and the path of its log (``failures``: run -> {stage, log, reason})."""
    rows = [
        {
            "run": run,
            "status": FAILED,
            "status_reason": failure["reason"],
            "is_baseline": False,
            "tags": ", ".join(tags.get(run) or []),
            "failed_stage": failure["stage"],
            "log": failure["log"],
        }
        for run, failure in failures.items()
    ]
    return pd.DataFrame(rows, columns=["run", "status", "status_reason", "is_baseline", "tags",
                                       "failed_stage", "log"])  # fmt: skip


def with_failed(board: pd.DataFrame, failed: pd.DataFrame) -> pd.DataFrame:
    """``board`` with the failed runs' rows appended (their metrics NaN, never 0)."""
    if failed.empty:
        return board
    if board.empty:
        return failed.reindex(columns=list(dict.fromkeys([*board.columns, *failed.columns])))
    return pd.concat([board, failed], ignore_index=True)


def _pooled_sd(groups: pd.core.groupby.DataFrameGroupBy, metric: str) -> tuple[float, int, list[str]]:
    """The within-group sd pooled over groups of two or more defined values, its degrees of freedom
    and the groups it comes from."""
    sum_squares, dof, names = 0.0, 0, []
    for name, values in groups[metric]:
        values = values.dropna().to_numpy(dtype=float)
        if values.size >= 2:
            sum_squares += float(np.sum((values - values.mean()) ** 2))
            dof += values.size - 1
            names.append(str(name))
    return (math.sqrt(sum_squares / dof) if dof else float("nan")), dof, names


def with_groups(board: pd.DataFrame, settings: Mapping, metrics: Sequence[str]) -> pd.DataFrame:
    """``board`` with each run's group and seed (``settings`` groups: run -> recipe, seeds: run ->
    seed; a run not listed is its own group, without seed), and per metric its noise floor (and the columns
    failed_stage and log, empty for a run that did not fail), in the order of :func:`group_columns`.

    The noise floor of a metric is the sd (ddof 1) of its test values across the ranked runs of the
    run's group (the seeds of one recipe). A run whose group has fewer than two defined values gets
    the sd pooled over every group that has two or more, and ``noise_floor_source`` says which;
    with no such group the floor is NaN. ``noise_floor_<metric>_n`` is the number of values it is from.
    """
    groups, seeds = settings.get("groups", {}), settings.get("seeds", {})
    imports = settings.get("imports", {})
    board = board.copy()
    for column in ("failed_stage", "log"):
        board[column] = board[column].fillna("") if column in board else ""
    board["group"] = [groups.get(run, run) for run in board["run"]]
    board["seed"] = pd.array([seeds.get(run) for run in board["run"]], dtype="Int64")
    board["predictions"] = [prediction_source(imports.get(run)) for run in board["run"]]
    ranked = board[board["status"] == RANKED].groupby("group")
    sources = []
    for metric in metrics:
        pooled, pooled_dof, pooled_from = _pooled_sd(ranked, metric)
        own = ranked[metric].agg(lambda v: v.dropna().std(ddof=1) if v.notna().sum() >= 2 else np.nan)
        counts = ranked[metric].agg(lambda v: int(v.notna().sum()))
        floors, numbers = [], []
        for group in board["group"]:
            if group in own.index and not math.isnan(own[group]):
                floors.append(float(own[group]))
                numbers.append(int(counts[group]))
            else:
                floors.append(pooled)
                numbers.append(pooled_dof + len(pooled_from) if pooled_from else 0)
        board[f"noise_floor_{metric}"] = floors
        board[f"noise_floor_{metric}_n"] = numbers
        if not sources:
            sources = [
                "own seeds" if group in own.index and not math.isnan(own[group])
                else f"pooled over the seeds of {', '.join(pooled_from)}" if pooled_from
                else "no recipe has two seeds"
                for group in board["group"]
            ]  # fmt: skip
    board["noise_floor_source"] = sources
    # The run's own source file stays the last column, as readers of the table expect.
    tail = [column for column in ("source",) if column in board]
    return board[[c for c in board.columns if c not in tail] + tail]


def group_columns(metrics: Sequence[str]) -> list[str]:
    """The columns :func:`with_groups` adds for ``metrics``, in order."""
    floors = [f"noise_floor_{metric}{part}" for metric in metrics for part in ("", "_n")]
    return ["failed_stage", "log", "group", "seed", "predictions", *floors, "noise_floor_source"]


def read_import_records(paths: Mapping[str, str | os.PathLike]) -> dict[str, dict]:
    """Each external run's import record (its test_infer.json), by run; skips none silently."""
    records = {}
    for run, path in paths.items():
        if not Path(path).is_file():
            raise LesionflowError(f"import record of run {run!r} not found: {path}")
        records[run] = read_json(path)
    return records


def prediction_source(record: Mapping | None) -> str:
    """Where a run's predictions came from, as the leaderboard says it: model, or the external
    folder's kind (``masks only`` when no probability could be tuned)."""
    if record is None:
        return "model"
    if record.get("source") == "ensemble":
        return f"ensemble (mean of {len(record.get('members', []))} runs)"
    kind = "masks only: thresholds not tunable" if record.get("kind") == "masks" else "probabilities"
    return f"external ({kind})"


def group_summary(board: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per group of two or more runs: its number of ranked runs and, per metric, the mean and sd
    (ddof 1) of their test values; NaN where fewer than one (mean) or two (sd) values are defined."""
    rows = []
    for group, members in board.groupby("group", sort=False):
        if len(members) < 2:
            continue
        ranked = members[members["status"] == RANKED]
        row: dict = {"group": group, "n_runs": len(members), "n_ranked": len(ranked),
                     "runs": ", ".join(members["run"])}  # fmt: skip
        for metric in metrics:
            values = ranked[metric].dropna().to_numpy(dtype=float)
            row[f"{metric}_mean"] = float(values.mean()) if values.size else float("nan")
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if values.size >= 2 else float("nan")
            row[f"{metric}_n"] = int(values.size)
        rows.append(row)
    columns = ["group", "n_runs", "n_ranked", "runs"] + [
        f"{metric}{part}" for metric in metrics for part in ("_mean", "_sd", "_n")
    ]
    return pd.DataFrame(rows, columns=columns)
