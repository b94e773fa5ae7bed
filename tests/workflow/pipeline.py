"""Run Snakemake on tiny configs in a temp dir and read which jobs it would run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# The figures each notebook stage saves (workflow/rules/common.smk declares the same names).
FIGURES = {
    "analyse": ["split", "data_report", "epoch_curves", "image_groups", "dice_per_image_test",
                "dice_per_image_val", "zero_dice", "detection_by_size", "examples_best", "examples_worst",
                "examples_false_positive"],
    "training_report": ["loss_curves", "metric_curves", "lr_schedule"],
    "compare": ["forest", "paired_deltas"],
}  # fmt: skip


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


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake on the repo's workflow with ``workdir`` as working directory."""
    command = [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def planned_jobs(workdir: Path, *targets: str) -> tuple[Counter, str]:
    """Jobs a dry run would execute, as a Counter of rule names, and the raw dry-run text."""
    result = snakemake(workdir, "--dry-run", *targets)
    text = result.stdout + result.stderr
    counts: Counter = Counter()
    for rule in re.findall(r"^\s*(?:local)?rule (\w+):", text, flags=re.MULTILINE):
        counts[rule] += 1
    return counts, text
