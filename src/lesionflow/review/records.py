"""Reading the provenance records of a project's artifacts: a job's records, whether it finished,
and which libraries it was made under that differ from the ones installed now.

Never writes; a record that cannot be read counts as absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lesionflow.pipeline.plan import Job, Plan
from lesionflow.pipeline.provenance import record_name
from lesionflow.pipeline.stages import STAGES

# A job's state: finished (its records exist), failed (a log, no record) or never run.
DONE, FAILED, MISSING = "done", "failed", "missing"
# Libraries a lesionflow version string does not stand for: its code is compared by fingerprint.
COMPARED_VERSIONS = ("python", "torch", "monai", "numpy", "scipy", "scikit-learn", "nibabel", "pandas")


@dataclass(frozen=True)
class JobRecords:
    """A planned job, its folder under the working directory, and the records found there."""

    job: Job
    folder: Path
    records: dict[str | None, dict[str, Any] | None]

    @property
    def state(self) -> str:
        """done when every part of the job has its record; failed when a log exists without one."""
        if all(record is not None for record in self.records.values()):
            return DONE
        logs = self.folder.parents[2] / "logs" / self.folder.parent.name
        return FAILED if any(logs.glob(f"{self.job.key}*.log")) else MISSING


def read_record(path: Path) -> dict[str, Any] | None:
    """A provenance record, or None when it is absent or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def job_records(workdir: Path, job: Job) -> JobRecords:
    """The records of ``job`` (one per part, e.g. per subset) in its folder under ``workdir``."""
    folder = workdir / job.folder
    parts = STAGES[job.stage].parts or (None,)
    return JobRecords(job, folder, {part: read_record(folder / record_name(part)) for part in parts})


def other_versions(record: dict[str, Any], installed: dict[str, str | None]) -> dict[str, tuple]:
    """The libraries whose version in ``record`` differs from ``installed``: name -> (then, now)."""
    then = record.get("versions") or {}
    return {
        name: (then.get(name), installed.get(name))
        for name in COMPARED_VERSIONS
        if name in then and then.get(name) != installed.get(name)
    }


def run_job(plan: Plan, stage: str, key: str) -> Job:
    """The job behind a run's ``stage`` key: an infer key may be an import's or an ensemble's, whose
    maps stand in for a model's."""
    if stage == "infer":
        for stand_in in ("import_predictions", "ensemble"):
            if key in plan.jobs[stand_in]:
                return plan.job(stand_in, key)
    return plan.job(stage, key)
