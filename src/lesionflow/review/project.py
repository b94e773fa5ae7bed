"""A project as the reviewer's commands see it: the working directory, its config resolved, and the
plan of keys that the pipeline computes from them with the installed code.

Never writes into results/; computing the plan only reads the data's files (to fingerprint them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lesionflow
from lesionflow.pipeline.config import ResolvedConfig, read_config_file, resolve_config
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.fingerprints import CodeBase, user_summaries_path
from lesionflow.pipeline.plan import Plan, build_plan

# Where the demo's config lies, in the workflow and in a project folder.
DEMO_CONFIG = Path("config") / "config.yaml"


@dataclass(frozen=True)
class Project:
    """A working directory, its resolved config and the plan of its keys."""

    workdir: Path
    workflow: Path
    configfile: Path
    config: ResolvedConfig
    plan: Plan

    def path(self, relative: str | os.PathLike) -> Path:
        """A path of the project (results/..., logs/...) under its working directory."""
        return self.workdir / relative


def default_workflow() -> Path:
    """The workflow (the folder of the Snakefile) of the installed lesionflow: the checkout it was
    installed from in editable mode."""
    checkout = Path(lesionflow.__file__).resolve().parents[2]
    if not (checkout / "Snakefile").is_file():
        raise LesionflowError(
            "no Snakefile found beside the installed lesionflow package: give the workflow's "
            "Snakefile with --snakefile"
        )
    return checkout


def workflow_of(snakefile: str | os.PathLike | None) -> Path:
    """The workflow folder of ``snakefile``, or the installed one's when None."""
    if snakefile is None:
        return default_workflow()
    path = Path(snakefile)
    if not path.is_file():
        raise LesionflowError(f"--snakefile {path}: no such file")
    return path.resolve().parent


def default_configfile(workdir: Path, workflow: Path) -> Path:
    """The project's config/config.yaml if it has one, else the workflow's built-in demo (as the
    Snakefile chooses when no config is given)."""
    own = workdir / DEMO_CONFIG
    return own if own.is_file() else workflow / DEMO_CONFIG


def read_config(path: Path) -> dict[str, Any]:
    """The YAML mapping of a config file, read as the Snakefile reads it; any problem in one line."""
    if not path.exists():
        raise LesionflowError(f"config file {path} does not exist (give one with --configfile)")
    return read_config_file(path)


def load_project(
    configfile: str | os.PathLike | None = None,
    directory: str | os.PathLike | None = None,
    snakefile: str | os.PathLike | None = None,
) -> Project:
    """The project in ``directory`` (default: the current one) with ``configfile`` (default: its
    config/config.yaml, else the demo's), planned with the workflow of ``snakefile``."""
    workdir = Path(directory or ".").resolve()
    if not workdir.is_dir():
        raise LesionflowError(f"--directory {workdir}: no such folder")
    workflow = workflow_of(snakefile)
    path = Path(configfile) if configfile else default_configfile(workdir, workflow)
    config = resolve_config(read_config(path))
    code = CodeBase.installed(workflow, user_summaries_path())
    plan = build_plan(config, workdir, code)
    return Project(workdir, workflow, path.resolve(), config, plan)


def run_names(project: Project, names: list[str] | None) -> list[str]:
    """``names`` checked against the config's runs (all of them when None or empty)."""
    if not names:
        return list(project.plan.runs)
    unknown = [name for name in names if name not in project.plan.runs]
    if unknown:
        raise LesionflowError(
            f"no run named {', '.join(unknown)} in {project.configfile}; runs are: "
            f"{', '.join(project.plan.runs)}"
        )
    return names
