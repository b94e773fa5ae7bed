"""What a training job runs on, and the train settings both trainers check before they start.

The device of ``train.device``, its mixed-precision dtype and the loader's worker count; the
checks of ``train.scheduler``, ``train.patch_size`` and ``train.num_workers``.
"""

from __future__ import annotations

from typing import Any

import torch

from lesionflow.model.networks import resolve_device
from lesionflow.model.sampling import resolve_num_workers
from lesionflow.pipeline.errors import LesionflowError


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: bfloat16 where the GPU has it, else float16; None (fp32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def run_hardware(train: dict[str, Any]) -> tuple[torch.device, torch.dtype | None, int]:
    """The device of ``train.device``, its mixed-precision dtype and the loader's worker count."""
    device = resolve_device(train["device"], "train.device")
    return device, amp_dtype_for(device), resolve_num_workers(train["num_workers"])


def check_train_settings(train: dict[str, Any], spatial_dims: int) -> None:
    """Refuse a bad ``train.scheduler``, ``train.patch_size`` or ``train.num_workers``."""
    if train["scheduler"] not in ("onecycle", "cosine", "none"):
        raise LesionflowError(
            f"train.scheduler: expected onecycle, cosine or none, got {train['scheduler']!r}"
        )
    patch = train["patch_size"]
    if patch is not None and (len(patch) != spatial_dims or min(patch) < 1):
        raise LesionflowError(
            f"train.patch_size: expected {spatial_dims} positive sizes (model.spatial_dims), got {patch!r}"
        )
    workers = train["num_workers"]
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise LesionflowError(f"train.num_workers: expected null or an integer >= 0, got {workers!r}")
