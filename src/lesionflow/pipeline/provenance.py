"""Provenance records: beside each keyed artifact, what made it (settings, input keys, code, commit,
library versions, host, times) and a checksum of every file it wrote.

Written by the job itself, last and atomically, so a record only ever describes a finished job;
never part of a key, and never read by a stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import lesionflow
from lesionflow.pipeline.artifacts import write_json
from lesionflow.pipeline.file_hashes import file_digest

RECORD_NAME = "provenance.json"
# The libraries whose versions can change a result, by distribution name.
PACKAGES = (
    "lesionflow",
    "torch",
    "monai",
    "numpy",
    "scipy",
    "scikit-learn",
    "snakemake",
    "nibabel",
    "pandas",
)
# The environment variable naming the plan of the Snakemake run (lesionflow.pipeline.plan.PLAN_ENV;
# not imported from there, so that a finished job does not pay for importing the plan's code).
PLAN_ENV = "LESIONFLOW_PLAN"
_KEY = re.compile(r"[0-9a-f]{12}")


def record_name(part: str | None = None) -> str:
    """The record's file name: one per job, so the val and test jobs of one folder keep their own."""
    return RECORD_NAME if part is None else f"provenance_{part}.json"


def is_record(path: Path) -> bool:
    """Whether ``path`` is a provenance record (never itself checksummed)."""
    return path.name == RECORD_NAME or (path.name.startswith("provenance_") and path.suffix == ".json")


def _belongs_to(name: str, part: str | None) -> bool:
    return part is None or name.startswith((f"{part}.", f"{part}_"))


def output_files(folder: Path, part: str | None = None) -> list[Path]:
    """The finished files of a job's folder (of its ``part``, e.g. a subset), sorted; temporary files
    (dot-names) and records left out."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not is_record(path)
        and not any(p.startswith(".") for p in path.relative_to(folder).parts)
        and _belongs_to(path.relative_to(folder).parts[0], part)
    )


def stale_temporaries(folder: Path, part: str | None = None) -> list[Path]:
    """Temporary files (atomic_path's ``.<name>.<random>.tmp``) of a job's ``part`` in ``folder``:
    when the job starts, any there are what a killed earlier attempt left behind."""
    return sorted(
        path
        for path in folder.rglob(".*.tmp")
        if path.is_file() and _belongs_to(path.name.removeprefix("."), part)
    )


def checksums(folder: Path, part: str | None = None) -> dict[str, dict[str, Any]]:
    """Size and checksum of every output file, by its path relative to ``folder``."""
    return {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "blake2b": file_digest(path)}
        for path in output_files(folder, part)
    }


def package_versions() -> dict[str, str | None]:
    """Python's version and each library's in PACKAGES (None when it is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@cache
def git_state(folder: Path) -> dict[str, Any] | None:
    """The commit checked out where ``folder`` lies and whether tracked files differ from it, or None
    outside a git checkout (an installed package)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def host_description() -> dict[str, Any]:
    """The machine a job ran on: host, system, CPUs, the GPU torch used (if the job used torch) and
    the SLURM job, if any."""
    host = {
        "host": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "device": "cpu",
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    torch = sys.modules.get("torch")  # only a job that imported torch can have used a GPU
    if torch is not None and torch.cuda.is_available():
        host["device"] = f"cuda: {torch.cuda.get_device_name(0)}"
    return host


def planned_job(stage: str, key: str | None) -> dict[str, Any]:
    """Settings, input keys and code fingerprint of the job, from the plan its Snakemake wrote (empty
    when the entry point was run by hand, outside a pipeline run)."""
    path = os.environ.get(PLAN_ENV)
    if key is None or not path or not Path(path).is_file():
        return {}
    plan = json.loads(Path(path).read_text())
    job = plan.get("jobs", {}).get(stage, {}).get(key)
    if job is None:
        return {}
    return {"settings": job["settings"], "inputs": job["inputs"], "code": plan["code"].get(stage)}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def recording(out: str | os.PathLike, stage: str | None = None, part: str | None = None) -> Iterator[None]:
    """Run a job's work inside this block; if it succeeds, write its provenance record into ``out``.

    ``stage`` defaults to the name of the folder above ``out`` (results/<stage>/<key>); ``part``
    names the files of one job among several sharing a folder (the val and test jobs of infer).
    Any earlier record of the job is removed first: a rerun that fails must not leave it behind.
    A folder that is not a keyed artifact (the leaderboard's) gets no record.
    """
    folder = Path(out)
    stage = stage or folder.resolve().parent.name
    key = folder.name if _KEY.fullmatch(folder.name) else None
    if key is None:
        yield
        return
    record_path = folder / record_name(part)
    record_path.unlink(missing_ok=True)
    # A job killed mid-write (out of memory, a dead node) leaves its temporary files, as large as the
    # artifacts; never taken for outputs, they would only fill the disk. Only this job writes here.
    for path in stale_temporaries(folder, part):
        path.unlink(missing_ok=True)
    started = _now()
    yield
    record = {
        "stage": stage,
        "key": key,
        "part": part,
        **planned_job(stage, key),
        "git": git_state(Path(lesionflow.__file__).resolve().parent),
        "versions": package_versions(),
        "host": host_description(),
        "started": started,
        "finished": _now(),
        "outputs": checksums(folder, part),
    }
    write_json(record_path, record)
