"""`lesionflow show RUN|KEY`: a run's settings, how they differ from the baseline's, and what made
each of its artifacts; or one artifact's provenance record.

Never reads an artifact's data: records and the config only.
"""

from __future__ import annotations

import json
from typing import Any

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.plan import Job
from lesionflow.reports.run_settings_table import differing_settings
from lesionflow.review.project import Project
from lesionflow.review.records import job_records, other_versions, run_job
from lesionflow.review.status import text_table

# Shortest key prefix `show` accepts (a prefix must still name one artifact).
MIN_PREFIX = 4


def baseline_differences(project: Project, name: str) -> dict[str, tuple[Any, Any]]:
    """Each setting (dotted key) whose value differs between the run and the baseline:
    key -> (baseline's, run's); empty for the baseline itself."""
    baseline = project.plan.baseline
    if name == baseline:
        return {}
    runs = project.config.runs
    differing = differing_settings({"baseline": runs[baseline], "run": runs[name]})
    return {key: (differing["baseline"][key], differing["run"][key]) for key in differing["run"]}


def _commit(record: dict[str, Any]) -> str:
    git = record.get("git")
    if not git:
        return "-"
    return git["commit"][:10] + (" (dirty)" if git["dirty"] else "")


def artifact_lines(project: Project, name: str, installed: dict[str, str | None]) -> list[str]:
    """One line per keyed artifact of the run: stage, key, state, when, where and by which commit."""
    rows = [["stage", "key", "state", "finished", "host", "device", "commit", "other versions"]]
    for stage, key in project.plan.runs[name].items():
        found = job_records(project.workdir, run_job(project.plan, stage, key))
        record = next((r for r in reversed(list(found.records.values())) if r), {})
        moved = other_versions(record, installed)
        rows.append(
            [
                found.job.stage,
                key,
                found.state,
                record.get("finished", "-"),
                (record.get("host") or {}).get("host", "-"),
                (record.get("host") or {}).get("device", "-"),
                _commit(record) if record else "-",
                ", ".join(f"{lib} {then}" for lib, (then, _) in moved.items()) or "-",
            ]
        )
    return text_table(rows).splitlines()


def show_run(project: Project, name: str, installed: dict[str, str | None]) -> str:
    """The run's description: task, group, settings that differ from the baseline, artifacts."""
    run = project.config.runs[name]
    lines = [
        f"run {name}: task {run['task']}, source {run['source']}, group {project.config.groups[name]}",
        f"config: {project.configfile}",
        f"baseline: {project.plan.baseline}",
    ]
    differences = baseline_differences(project, name)
    if name == project.plan.baseline:
        lines.append("this run is the baseline")
    elif not differences:
        lines.append("settings: the same as the baseline's (apart from resources, tags and devices)")
    else:
        lines.append("settings that differ from the baseline's (baseline -> this run):")
        lines += [f"  {key}: {before} -> {after}" for key, (before, after) in differences.items()]
    lines += ["", "artifacts:", *[f"  {line}" for line in artifact_lines(project, name, installed)]]
    return "\n".join(lines)


def jobs_with_key(project: Project, key: str) -> list[Job]:
    """The planned jobs whose key is ``key`` or starts with it (at least MIN_PREFIX characters)."""
    if len(key) < MIN_PREFIX:
        raise LesionflowError(f"key {key!r}: give at least {MIN_PREFIX} characters of it")
    return [job for jobs in project.plan.jobs.values() for k, job in jobs.items() if k.startswith(key)]


def show_key(project: Project, key: str) -> str:
    """The provenance records of the artifact with this key (or unique key prefix), and its runs."""
    jobs = jobs_with_key(project, key)
    if not jobs:
        raise LesionflowError(
            f"no artifact of {project.configfile} has a key starting {key!r} (see `lesionflow runs`)"
        )
    if len({job.key for job in jobs}) > 1:
        keys = ", ".join(sorted({f"{job.stage} {job.key}" for job in jobs}))
        raise LesionflowError(f"key prefix {key!r} names several artifacts ({keys}): give more of it")
    job = jobs[0]
    found = job_records(project.workdir, job)
    runs = [name for name, keys in project.plan.runs.items() if job.key in keys.values()]
    lines = [
        f"{job.stage} {job.key}: {found.state}, in {job.folder}",
        f"runs: {', '.join(runs) or '-'}",
        f"input keys: {json.dumps(job.inputs, sort_keys=True)}",
        f"settings: {json.dumps(job.settings, sort_keys=True)}",
    ]
    for part, record in found.records.items():
        label = f"provenance record{f' ({part})' if part else ''}"
        lines.append(f"{label}: " + (json.dumps(record_summary(record), indent=2) if record else "none"))
    return "\n".join(lines)


def record_summary(record: dict[str, Any]) -> dict[str, Any]:
    """A record with its file checksums summed up as a count and a size (a dataset has thousands)."""
    outputs = record.get("outputs", {})
    size = sum(entry["bytes"] for entry in outputs.values())
    return {**record, "outputs": f"{len(outputs)} files, {size / 1e6:.1f} MB (checked by lesionflow verify)"}
