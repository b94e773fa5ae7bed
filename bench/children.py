"""What the memory benchmarks share: one measurement per fresh interpreter, peaks, small files.

It must never import torch or lesionflow at module level: the parent process stays light, since
a child's ru_maxrss starts from its parent's high-water mark (see bench/memory.py).
"""

from __future__ import annotations

import csv
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any


def peak_mb() -> float:
    """The peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, kind: str, job: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --child kind job`` in a fresh interpreter; return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, script, "--child", kind, json.dumps(job)], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"{Path(script).name}: the {kind} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str]) -> Path:
    """Write ``rows`` (only ``columns``) to a CSV file and return its path."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_untrained_model(
    path: str, model_settings: dict[str, Any], in_channels: int, roi_size: list[int], seed: int
) -> dict[str, Any]:
    """Save an untrained network as the train stage saves model.pt (weights + model info)."""
    import torch

    from lesionflow.model.networks import build_network

    torch.manual_seed(seed)
    model = build_network(model_settings, in_channels=in_channels, out_channels=1)
    info = {
        "model_settings": model_settings, "in_channels": in_channels, "out_channels": 1,
        "spatial_dims": model_settings["spatial_dims"], "patch_size": roi_size, "roi_size": roi_size,
    }
    torch.save({"state_dict": model.state_dict(), **info, "best_epoch": 0}, path)
    return {"parameters": sum(p.numel() for p in model.parameters())}
