"""The leaderboards of a Snakemake run in which some jobs failed: finished runs ranked, the others
listed with the stage that failed and its log, in results/compare/partial/.

Must never write where the compare rule writes: a partial table must not pass for the finished one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lesionflow.evaluation.leaderboard import run_compare
from lesionflow.evaluation.score_leaderboard import run_regression_compare
from lesionflow.pipeline.failures import PARTIAL_FOLDER
from lesionflow.pipeline.plan import Plan
from lesionflow.reports.leaderboard_pages import write_leaderboard_pages


def surviving_baseline(plan: Plan, stage: str, failures: Mapping[str, Any]) -> str:
    """The baseline of the runs having ``stage`` when it has test results, else the first such run
    that has them ('' when none has)."""
    baseline = plan.baseline_of(stage)
    if baseline is not None and baseline not in failures:
        return baseline
    return next((run for run in plan.runs_of(stage) if run not in failures), "")


def _paths(plan: Plan, stage: str, filename: str, failures: Mapping[str, Any], workdir: Path) -> dict:
    return {
        run: workdir / "results" / stage / plan.runs[run][stage] / filename
        for run in plan.runs_of(stage)
        if run not in failures
    }


def _noted(failures: Mapping[str, dict], plan: Plan, stage: str, instead: str) -> dict:
    """The failures of the runs having ``stage``; the failed baseline's reason says which run
    replaces it."""
    baseline = plan.baseline_of(stage)
    noted = {run: dict(failures[run]) for run in plan.runs_of(stage) if run in failures}
    if baseline in noted and instead:
        noted[baseline]["reason"] += f" (it is the baseline: differences are to {instead} instead)"
    return noted


def write_partial_leaderboards(
    plan: Plan,
    settings: Mapping[str, Any],
    ranked_files: Mapping[str, str],
    failures: Mapping[str, dict[str, str]],
    workdir: str | os.PathLike,
) -> Path:
    """Write both leaderboards of the runs that have test results, with a row per failed run, into
    ``workdir``/results/compare/partial/, and return that folder.

    ``settings`` is what the compare rule passes (compare section, tags, groups, seeds, the
    settings that differ between runs);
    ``ranked_files`` the evaluate files it ranks by (``summary``, ``per_image``).
    """
    workdir = Path(workdir)
    out = workdir / PARTIAL_FOLDER
    segmentation = surviving_baseline(plan, "evaluate", failures)
    board = run_compare(
        _paths(plan, "evaluate", ranked_files["summary"], failures, workdir),
        segmentation,
        out,
        _paths(plan, "evaluate", ranked_files["per_image"], failures, workdir),
        {**settings, "baseline": segmentation},
        _noted(failures, plan, "evaluate", segmentation),
    )
    regression = surviving_baseline(plan, "evaluate_scores", failures)
    scores = run_regression_compare(
        _paths(plan, "evaluate_scores", "summary.json", failures, workdir),
        _paths(plan, "evaluate_scores", "per_case_test.csv", failures, workdir),
        regression,
        out,
        {**settings, "baseline": regression},
        _noted(failures, plan, "evaluate_scores", regression),
    )
    write_leaderboard_pages(board, scores, settings["settings"], out)
    return out
