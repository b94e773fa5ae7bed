"""Run Snakemake on tiny configs in a temp dir and read which jobs it would run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from lesionflow.pipeline.stages import NOTEBOOK_STAGES, figures

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# The figures each notebook stage saves, from the stage registry (as the rules take them).
FIGURES = {stage: figures(stage) for stage in NOTEBOOK_STAGES}


def tiny_run(**overrides) -> dict:
    """One epoch of a very small UNet: enough to exercise every stage in seconds."""
    run = {
        "model": {"network": "UNet", "kwargs": {"channels": [8, 16], "strides": [2]}},
        "train": {"epochs": 1, "batch_size": 8, "early_stopping_patience": None},
        "tune": {"thresholds": [0.3, 0.5], "min_lesion_areas": [0, 4]},
        "resources": {"threads": 1},
    }
    for section, values in overrides.items():
        run[section] = {**run.get(section, {}), **values}
    return run


def tiny_config(runs: dict, **extra) -> dict:
    """A config on a few dozen 64 x 64 generated images."""
    config = {
        "data": {"source": "synthetic", "synthetic": {"n_images": 36, "image_size": 64, "seed": 3}},
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "runs": runs,
    }
    config.update(extra)
    return config


def write_config(workdir: Path, config: dict) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def workflow_copy(destination: Path) -> Path:
    """A copy of the workflow and the lesionflow package, for tests that edit code."""
    for folder in ("workflow", "scripts", "notebooks", "profiles", "src/lesionflow"):
        shutil.copytree(REPO_ROOT / folder, destination / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(REPO_ROOT / "Snakefile", destination / "Snakefile")
    return destination


def snakemake(
    workdir: Path, *args: str, check: bool = True, repo: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """Run Snakemake on the workflow in ``repo`` with ``workdir`` as working directory.

    With a copy made by :func:`workflow_copy`, every job imports the copy's lesionflow package.
    """
    command = [
        str(SNAKEMAKE),
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if repo != REPO_ROOT:
        env["PYTHONPATH"] = os.pathsep.join([str(repo / "src"), env.get("PYTHONPATH", "")])
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def planned_jobs(workdir: Path, *targets: str, repo: Path = REPO_ROOT) -> tuple[Counter, str]:
    """Jobs a dry run would execute, as a Counter of rule names, and the raw dry-run text."""
    result = snakemake(workdir, "--dry-run", *targets, repo=repo)
    text = result.stdout + result.stderr
    counts: Counter = Counter()
    for rule in re.findall(r"^\s*(?:local)?rule (\w+):", text, flags=re.MULTILINE):
        counts[rule] += 1
    return counts, text
