"""`lesionflow reproduce RUN`: rebuild one run's branch from nothing in a folder of its own (same
config, same data, fresh results) and compare every metric with the original's, within tolerances.

Never touches the original results; a metric outside its tolerance fails the reproduction.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.plan import PLAN_ENV
from lesionflow.review.project import Project, read_config
from lesionflow.review.records import job_records, run_job
from lesionflow.review.status import text_table

# Where a run's metrics are: each task's evaluation stage writes summary.json.
EVALUATION_STAGES = ("evaluate", "evaluate_scores")
SUMMARY = "summary.json"


def reproduction_config(project: Project) -> dict[str, Any]:
    """The project's config with every path it names (data, splits file, external predictions) made
    absolute, so that it reads the same files from the reproduction's folder."""
    config = copy.deepcopy(read_config(project.configfile))

    def absolute(path: str) -> str:
        return str((project.workdir / path).resolve())

    if "manifest" in config:
        config["manifest"] = absolute(config["manifest"])
    if (config.get("data") or {}).get("manifest"):
        config["data"]["manifest"] = absolute(config["data"]["manifest"])
    if (config.get("split") or {}).get("nnunet_splits"):
        config["split"]["nnunet_splits"] = absolute(config["split"]["nnunet_splits"])
    for run in [config.get("defaults") or {}, *(config.get("runs") or {}).values()]:
        external = (run or {}).get("external") or {}
        if external.get("predictions"):
            external["predictions"] = absolute(external["predictions"])
    return config


def evaluation_summary(project: Project, name: str) -> str:
    """The run's summary.json, relative to a working directory (the target to rebuild)."""
    keys = project.plan.runs[name]
    stage = next(stage for stage in EVALUATION_STAGES if stage in keys)
    return f"results/{stage}/{keys[stage]}/{SUMMARY}"


def prepare_folder(project: Project, out: Path) -> Path:
    """The reproduction's working directory with its config; refused when it already holds results."""
    if (out / "results").exists():
        raise LesionflowError(
            f"reproduction folder {out} already holds results/: remove it or give another with --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    configfile = out / "config.yaml"
    configfile.write_text(yaml.safe_dump(reproduction_config(project), sort_keys=False))
    return configfile


def snakemake_command(project: Project, out: Path, target: str, cores: int) -> list[str]:
    """The Snakemake call that builds ``target`` (and what it needs) in ``out``."""
    return [
        str(Path(sys.executable).parent / "snakemake"),
        "--snakefile",
        str(project.workflow / "Snakefile"),
        "--directory",
        str(out),
        "--configfile",
        str(out / "config.yaml"),
        "--cores",
        str(cores),
        target,
    ]


def rebuild(project: Project, out: Path, target: str, cores: int) -> None:
    """Build ``target`` from nothing in ``out`` (Snakemake's output goes to the terminal)."""
    # A plan of the original run must not be reused: the reproduction plans its own.
    environ = {key: value for key, value in os.environ.items() if key != PLAN_ENV}
    result = subprocess.run(snakemake_command(project, out, target, cores), env=environ)
    if result.returncode != 0:
        raise LesionflowError(
            f"the reproduction's Snakemake run failed (exit {result.returncode}); its logs are in {out}/logs"
        )


def metric_values(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float | None]:
    """Every metric of an evaluation summary (a value reported with an interval), by dotted name
    (``test.dice_pos``, ``test.overall.mae``, ``test.by_range[0, 2).mae``); None where undefined."""
    found: dict[str, float | None] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(metric_values(value, f"{name}."))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    label = item.get("range", index)
                    found.update(metric_values(item, f"{name}[{label}]."))
        elif f"{key}_ci_low" in summary and (value is None or isinstance(value, int | float)):
            found[name] = None if value is None or not math.isfinite(value) else float(value)
    return found


def tolerance_for(metric: str, tolerances: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The tolerance of a dotted metric: its own name's (the part after the last dot), else default."""
    own = tolerances.get(metric.rsplit(".", 1)[-1], {})
    return {**tolerances["default"], **own}


@dataclass(frozen=True)
class MetricComparison:
    """One metric: original, reproduced, their difference, the allowed one, and whether it holds."""

    metric: str
    original: float | None
    reproduced: float | None
    allowed: float

    @property
    def difference(self) -> float | None:
        """reproduced - original, or None when either is undefined."""
        if self.original is None or self.reproduced is None:
            return None
        return self.reproduced - self.original

    @property
    def holds(self) -> bool:
        """Within tolerance; a metric undefined in both holds, undefined in one only does not."""
        if self.original is None or self.reproduced is None:
            return self.original is None and self.reproduced is None
        return abs(self.difference) <= self.allowed


def compare_metrics(
    original: Mapping[str, Any], reproduced: Mapping[str, Any], tolerances: Mapping[str, Mapping[str, float]]
) -> list[MetricComparison]:
    """Every metric of the original summary beside the reproduced one's, with its tolerance
    (absolute + relative * |original|); a metric the reproduction lacks counts as undefined there."""
    before, after = metric_values(original), metric_values(reproduced)
    rows = []
    for metric, value in before.items():
        tolerance = tolerance_for(metric, tolerances)
        allowed = tolerance["absolute"] + tolerance["relative"] * abs(value or 0.0)
        rows.append(MetricComparison(metric, value, after.get(metric), allowed))
    return rows


def _number(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.6g}"


def comparison_table(rows: list[MetricComparison]) -> str:
    """metric, original, reproduced, difference, tolerance, verdict: one line per metric."""
    lines = [["metric", "original", "reproduced", "difference", "tolerance", "verdict"]]
    for row in rows:
        difference = "-" if row.difference is None else f"{row.difference:+.3g}"
        verdict = "ok" if row.holds else "OUTSIDE"
        values = [_number(row.original), _number(row.reproduced), difference, f"{row.allowed:.3g}"]
        lines.append([row.metric, *values, verdict])
    return text_table(lines)


def with_overrides(tolerances: Mapping[str, Any], overrides: list[str]) -> dict[str, dict[str, float]]:
    """The config's tolerances with ``METRIC=ABSOLUTE`` overrides from the command line (their
    relative tolerance 0)."""
    merged = {name: dict(value) for name, value in tolerances.items()}
    for override in overrides:
        metric, sep, text = override.partition("=")
        try:
            absolute = float(text)
        except ValueError:
            absolute = -1.0
        if not sep or not metric or not absolute >= 0:
            raise LesionflowError(f"--tolerance {override!r}: expected METRIC=ABSOLUTE with ABSOLUTE >= 0")
        merged[metric] = {"absolute": absolute, "relative": 0.0}
    return merged


def identical_outputs(project: Project, out: Path, name: str) -> list[list[str]]:
    """Per artifact of the run's branch that both builds recorded: how many of its files came out
    byte for byte the same (a model's weights rarely do across machines; metrics may still agree)."""
    rows = [["stage", "key", "identical files"]]
    for stage, key in project.plan.runs[name].items():
        job = run_job(project.plan, stage, key)
        before, after = job_records(project.workdir, job), job_records(out, job)
        files_before = _checksums(before.records.values())
        files_after = _checksums(after.records.values())
        if not files_before or not files_after:
            continue
        same = sum(files_after.get(file) == digest for file, digest in files_before.items())
        rows.append([job.stage, key, f"{same}/{len(files_before)}"])
    return rows


def _checksums(records) -> dict[str, str]:
    return {
        file: entry["blake2b"]
        for record in records
        if record
        for file, entry in record.get("outputs", {}).items()
    }
