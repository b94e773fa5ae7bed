"""`lesionflow runs`: every run of a config with its keys, whether its branch is built, and its
headline test metrics.

Never reads more than records, logs and the evaluation summaries; never computes a metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from lesionflow.evaluation.artifact_names import is_class_summary
from lesionflow.review.project import Project
from lesionflow.review.records import DONE, FAILED, job_records, other_versions, run_job

# A run is done (every job finished), failed (a job's log without its record), stale (its view was
# built from other keys: other code or settings since) or missing (not built yet, or in part).
STALE = "stale"
# The test metrics each task's summary is shown by: (path in summary.json, column).
HEADLINES = {
    "evaluate": (
        (("test", "dice_pos"), "dice_pos"),
        (("test", "lesion_f1"), "lesion_f1"),
        (("test", "presence_roc_auc"), "presence_auc"),
    ),
    "evaluate_scores": (
        (("test", "overall", "mae"), "mae"),
        (("test", "overall", "r2"), "r2"),
    ),
}


@dataclass
class RunStatus:
    """One run of the config: its keys, status, jobs built, libraries moved and headline metrics."""

    name: str
    task: str
    status: str
    built: int
    jobs: int
    keys: dict[str, str]
    failed_stages: list[str] = field(default_factory=list)
    other_versions: dict[str, tuple] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)


def headline_metrics(project: Project, keys: dict[str, str]) -> dict[str, float | None]:
    """The run's headline test metrics from its evaluation summary (None where undefined or absent);
    for a run of several lesion classes, their macro means."""
    for stage, headlines in HEADLINES.items():
        if stage not in keys:
            continue
        path = project.path(f"results/{stage}/{keys[stage]}/summary.json")
        summary = json.loads(path.read_text()) if path.is_file() else {}
        if is_class_summary(summary):  # several lesion classes: their macro means
            summary = {"test": summary["test"]["macro"]}
        return {column: _lookup(summary, steps) for steps, column in headlines}
    return {}


def _lookup(summary: dict[str, Any], steps: tuple[str, ...]) -> float | None:
    value: Any = summary
    for step in steps:
        value = value.get(step) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) and math.isfinite(value) else None


def _view_keys(project: Project, name: str) -> dict[str, str] | None:
    index = project.path(f"results/runs/{name}/index.json")
    try:
        return json.loads(index.read_text()).get("keys")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def run_status(project: Project, name: str, installed: dict[str, str | None]) -> RunStatus:
    """Where the run ``name`` stands under the installed code and the current config."""
    keys = project.plan.runs[name]
    states, moved = {}, {}
    for stage, key in keys.items():
        found = job_records(project.workdir, run_job(project.plan, stage, key))
        states[stage] = found.state
        for record in found.records.values():
            moved.update(other_versions(record or {}, installed))
    built = sum(state == DONE for state in states.values())
    failed = [stage for stage, state in states.items() if state == FAILED]
    if built == len(keys):
        status = DONE
    elif failed:
        status = FAILED
    elif _view_keys(project, name) not in (None, keys):
        status = STALE
    else:
        status = "missing"
    task = project.config.runs[name]["task"]
    metrics = headline_metrics(project, keys)
    return RunStatus(name, task, status, built, len(keys), keys, failed, moved, metrics)


def status_table(rows: list[RunStatus]) -> str:
    """The runs as a fixed-width text table: run, task, status, jobs built, train/evaluate keys,
    headline metrics, and a note of failed stages or libraries that moved."""
    metric_columns = list(dict.fromkeys(column for row in rows for column in row.metrics))
    header = ["run", "task", "status", "built", "train", "evaluate", *metric_columns, "note"]
    lines = [header]
    for row in rows:
        evaluated = row.keys.get("evaluate") or row.keys.get("evaluate_scores") or "-"
        notes = [f"failed: {', '.join(row.failed_stages)}"] if row.failed_stages else []
        if row.other_versions:
            notes.append("made under other " + ", ".join(row.other_versions))
        lines.append(
            [
                row.name,
                row.task,
                row.status,
                f"{row.built}/{row.jobs}",
                row.keys.get("train", "-"),
                evaluated,
                *[_number(row.metrics.get(column)) for column in metric_columns],
                "; ".join(notes),
            ]
        )
    return text_table(lines)


def text_table(lines: list[list[str]]) -> str:
    """Rows of cells (the first one the header) as left-aligned fixed-width text."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _number(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.3f}"
