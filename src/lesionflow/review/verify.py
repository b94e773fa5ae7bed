"""`lesionflow verify`: every artifact of a run's branch checked against its provenance record, file
by file, and against the code and libraries installed now.

Never repairs or deletes anything: it names what changed, went missing or was made otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lesionflow.pipeline.file_hashes import file_digest
from lesionflow.pipeline.plan import Job
from lesionflow.pipeline.provenance import output_files
from lesionflow.review.project import Project
from lesionflow.review.records import DONE, JobRecords, job_records, other_versions, run_job

# What verify can find wrong with an artifact, most serious first.
CHANGED = "changed"
MISSING = "missing"
ADDED = "added"
NOT_BUILT = "not built"
NO_RECORD = "no record"
OTHER_CODE = "other code"
OTHER_VERSIONS = "other versions"


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one artifact: what, where (a file or a folder), and in words."""

    kind: str
    path: str
    detail: str

    def line(self) -> str:
        """The finding as one line of the report."""
        return f"{self.kind.upper():<15} {self.path}: {self.detail}"


def branch_jobs(project: Project, names: Iterable[str]) -> list[Job]:
    """Every keyed job of the runs ``names`` (each once, shared ones too), in pipeline order, with the
    nnU-Net export when the config asks for it."""
    seen: dict[tuple[str, str], Job] = {}
    for name in names:
        for stage, key in project.plan.runs[name].items():
            job = run_job(project.plan, stage, key)
            seen.setdefault((job.stage, key), job)
    if project.plan.nnunet_export:
        seen.setdefault(
            ("nnunet_export", project.plan.nnunet_export),
            project.plan.job("nnunet_export", project.plan.nnunet_export),
        )
    return list(seen.values())


def file_findings(found: JobRecords) -> list[Finding]:
    """Every file of the job's records whose bytes changed or that is gone, and every file in its
    folder that no record lists."""
    findings, listed = [], set()
    for record in found.records.values():
        for name, entry in (record or {}).get("outputs", {}).items():
            listed.add(name)
            path = found.folder / name
            shown = _shown(found, path)
            if not path.is_file():
                findings.append(Finding(MISSING, shown, "listed in its provenance record, not on disk"))
            elif path.stat().st_size != entry["bytes"] or file_digest(path) != entry["blake2b"]:
                findings.append(Finding(CHANGED, shown, "its bytes differ from those its record lists"))
    for path in output_files(found.folder) if found.folder.is_dir() else []:
        if path.relative_to(found.folder).as_posix() not in listed:
            findings.append(Finding(ADDED, _shown(found, path), "not made by the job its record describes"))
    return findings


def _shown(found: JobRecords, path: Path) -> str:
    return path.relative_to(found.folder.parents[2]).as_posix()


def job_findings(found: JobRecords, code: str, installed: dict[str, str | None]) -> list[Finding]:
    """What is wrong with one job's artifact: not built, no record, files, code or versions."""
    folder = found.job.folder
    if not found.folder.is_dir():
        return [Finding(NOT_BUILT, folder, f"{found.state}: run snakemake to build it")]
    if found.state != DONE:
        absent = [part or "the job" for part, record in found.records.items() if record is None]
        return [Finding(NO_RECORD, folder, f"no provenance record of {', '.join(absent)} ({found.state})")]
    findings = file_findings(found)
    for record in found.records.values():
        if record.get("code") != code:
            findings.append(
                Finding(OTHER_CODE, folder, f"made by code {record.get('code')}, installed code is {code}")
            )
        moved = other_versions(record, installed)
        if moved:
            said = ", ".join(f"{name} {then} (now {now})" for name, (then, now) in moved.items())
            findings.append(Finding(OTHER_VERSIONS, folder, f"made under {said}"))
    return _unique(findings)


def _unique(findings: list[Finding]) -> list[Finding]:
    # The val and test records of one folder may report the same thing twice.
    return list(dict.fromkeys(findings))


@dataclass(frozen=True)
class Verification:
    """What verify checked, and what it found."""

    jobs: int
    files: int
    findings: list[Finding]


def verify_runs(project: Project, names: Iterable[str], installed: dict[str, str | None]) -> Verification:
    """Check every artifact of the runs ``names`` against its records, the installed code (the plan's
    fingerprints) and the ``installed`` library versions."""
    findings, files = [], 0
    jobs = branch_jobs(project, names)
    for job in jobs:
        found = job_records(project.workdir, job)
        findings += job_findings(found, project.plan.code[job.stage], installed)
        files += sum(len((record or {}).get("outputs", {})) for record in found.records.values())
    return Verification(len(jobs), files, findings)
