"""`lesionflow gc`: the keyed artifacts, their logs, the plans and the run views that no run of the
given configs references any more, with the space they hold; deleted only when asked.

Never deletes anything that a run of the given configs uses, nor anything outside results/,
logs/ and .lesionflow/plans/.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lesionflow.pipeline.keys import digest
from lesionflow.pipeline.plan import plan_record
from lesionflow.pipeline.stages import KEYED_STAGES, STAGES
from lesionflow.review.project import Project

_KEY = re.compile(r"[0-9a-f]{12}")
# What gc can remove: a keyed artifact folder, a job's log, a plan, a renamed or removed run's view.
ARTIFACT, LOG, PLAN, RUN_VIEW = "artifact", "log", "plan", "run view"


@dataclass(frozen=True)
class Unreferenced:
    """One thing no run of the configs uses: its kind, path and size in bytes."""

    kind: str
    path: Path
    size: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def referenced_folders(projects: Iterable[Project]) -> set[str]:
    """The folders (results/<stage>/<key>, relative) of every job of every run of the projects."""
    return {
        job.folder for project in projects for jobs in project.plan.jobs.values() for job in jobs.values()
    }


def plan_file_names(projects: Iterable[Project]) -> set[str]:
    """The file names under .lesionflow/plans/ of the projects' current plans (as the Snakefile
    names them: lesionflow.pipeline.plan.shared_plan)."""
    return {f"{digest(plan_record(p.plan, p.config), length=16)}.json" for p in projects}


def unreferenced(workdir: Path, projects: list[Project]) -> list[Unreferenced]:
    """Everything under ``workdir`` that gc may remove for these projects, in path order."""
    keep = referenced_folders(projects)
    found: list[Unreferenced] = []
    for stage in sorted({STAGES[name].folder_stage for name in KEYED_STAGES}):
        for folder in sorted((workdir / "results" / stage).glob("*")):
            relative = folder.relative_to(workdir).as_posix()
            if folder.is_dir() and _KEY.fullmatch(folder.name) and relative not in keep:
                found.append(Unreferenced(ARTIFACT, folder, _size(folder)))
                found += [Unreferenced(LOG, log, _size(log)) for log in _logs(workdir, stage, folder.name)]
    plans = plan_file_names(projects)
    for plan in sorted((workdir / ".lesionflow" / "plans").glob("*.json")):
        if plan.name not in plans:
            found.append(Unreferenced(PLAN, plan, _size(plan)))
    names = {name for project in projects for name in project.plan.runs}
    for view in sorted((workdir / "results" / "runs").glob("*")):
        if view.is_dir() and view.name not in names:
            found.append(Unreferenced(RUN_VIEW, view, _size(view)))
    return found


def _logs(workdir: Path, stage: str, key: str) -> list[Path]:
    # A job's log is logs/<stage>/<key>.log, or <key>_<subset>.log for a job per subset.
    return sorted((workdir / "logs" / stage).glob(f"{key}*.log"))


def remove(items: Iterable[Unreferenced]) -> int:
    """Delete every item; the bytes freed."""
    freed = 0
    for item in items:
        if item.path.is_dir():
            shutil.rmtree(item.path)
        elif item.path.exists():
            item.path.unlink()
        freed += item.size
    return freed


def human_size(size: int) -> str:
    """A byte count as people read it (B, kB, MB, GB: powers of 1000)."""
    if size < 1000:
        return f"{size} B"
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}"
