"""Exact resumption of training: the state after each finished epoch, its RNG states and fingerprint.

Never resumes a checkpoint written for other settings or data, and never writes half a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.transforms import Compose, Randomizable

from lesionflow.model.joblog import log
from lesionflow.model.sampling import LesionBatchSampler
from lesionflow.pipeline import artifacts

# While training runs, <out>/resume/checkpoint.pt: not a declared output, so Snakemake keeps it
# when the job fails; the train stage deletes the folder once the final artifacts are written.
RESUME_DIR = "resume"
CHECKPOINT_FILE = "checkpoint.pt"
# Bumped whenever the checkpoint's layout changes, so an old one is ignored rather than misread.
CHECKPOINT_FORMAT = 1
# Settings that change how training runs but not what it computes (the train stage's not_in_key in
# lesionflow.pipeline.stages). Not imported from there: that would pull the stage registry into this
# stage's code key.
_RUN_ONLY_SETTINGS = ("device", "num_workers")


@dataclass
class TrainingParts:
    """The stateful objects of one training: what a checkpoint saves and restores."""

    model: torch.nn.Module
    sampler: LesionBatchSampler
    transform: Compose
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


@dataclass
class TrainingProgress:
    """Everything training has produced so far, up to the last finished epoch."""

    epoch: int = 0
    finished: bool = False
    stopped_early: bool = False
    epoch_rows: list[dict[str, float]] = field(default_factory=list)
    step_rows: list[dict[str, float]] = field(default_factory=list)
    # Early stopping and checkpoint choice: the best validation dice_pos and its weights (on CPU).
    best_epoch: int = 0
    best_dice: float = -math.inf
    best_state: dict[str, torch.Tensor] | None = None
    train_images: int = 0
    train_seconds: float = 0.0
    elapsed_s: float = 0.0


# ---------------------------------------------------------------- random number generators


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed that depends on (seed, epoch) alone."""
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1)[0])


def seed_epoch(seed: int, epoch: int, parts: TrainingParts) -> None:
    """Reseed python, numpy, torch, the batch sampler and the augmentations from (seed, epoch)."""
    # Reseeding every RNG per epoch makes an epoch independent of earlier ones, so a resumed
    # run draws what an uninterrupted one would have drawn.
    value = epoch_seed(seed, epoch)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)  # CUDA generators too
    parts.sampler.reseed(value)
    parts.transform.set_random_state(seed=value)


def _random_transforms(transform: Compose) -> list[Randomizable]:
    """The Compose and every Randomizable inside it, in a fixed order.

    MONAI nests them (RandScaleIntensityd draws from its own RandScaleIntensity), so the
    attributes are walked, not just the Compose's list.
    """
    found: list[Randomizable] = []
    todo: list[Any] = [transform]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, Randomizable) or any(current is seen for seen in found):
            continue
        found.append(current)
        for value in vars(current).values():
            todo.extend(value if isinstance(value, list | tuple) else [value])
    return found


def _numpy_state_out(state: dict[str, Any]) -> dict[str, Any]:
    # numpy's MT19937 key is an ndarray; a tensor keeps the checkpoint loadable with weights_only.
    key = torch.from_numpy(state["state"]["key"].astype(np.int64))
    return {**state, "state": {"key": key, "pos": int(state["state"]["pos"])}}


def _numpy_state_in(state: dict[str, Any]) -> dict[str, Any]:
    key = state["state"]["key"].numpy().astype(np.uint32)
    return {**state, "state": {"key": key, "pos": int(state["state"]["pos"])}}


def rng_states(parts: TrainingParts, device: torch.device) -> dict[str, Any]:
    """Every RNG's state: python, numpy, torch, CUDA, the batch sampler and each MONAI transform."""
    return {
        "python": random.getstate(),
        "numpy": _numpy_state_out(np.random.get_state(legacy=False)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
        "sampler": parts.sampler.rng.bit_generator.state,
        "transforms": [
            _numpy_state_out(t.R.get_state(legacy=False)) for t in _random_transforms(parts.transform)
        ],
    }


def restore_rng_states(states: dict[str, Any], parts: TrainingParts, device: torch.device) -> None:
    """Set every RNG to the states :func:`rng_states` recorded."""
    random.setstate(states["python"])
    np.random.set_state(_numpy_state_in(states["numpy"]))
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and states["cuda"] is not None:
        if len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
    parts.sampler.rng.bit_generator.state = states["sampler"]
    transforms = _random_transforms(parts.transform)
    if len(transforms) != len(states["transforms"]):
        raise ValueError("the checkpoint has another number of random transforms")
    for transform, state in zip(transforms, states["transforms"], strict=True):
        transform.R.set_state(_numpy_state_in(state))


# ---------------------------------------------------------------- the checkpoint file


def _arrays_digest(hasher: Any, arrays: Sequence[np.ndarray]) -> None:
    for array in arrays:
        hasher.update(f"{array.dtype}{array.shape}".encode())
        hasher.update(np.ascontiguousarray(array).data)


def training_fingerprint(settings: dict[str, Any], arrays: Sequence[Sequence[np.ndarray]]) -> str:
    """Hash of what decides a training: the settings (less device and workers) and the data.

    The data are the loaded train / val images and masks, so a checkpoint is never resumed
    on other images, whatever their file names.
    """
    train = {k: v for k, v in settings["train"].items() if k not in _RUN_ONLY_SETTINGS}
    text = json.dumps(
        {"format": CHECKPOINT_FORMAT, "model": settings["model"], "train": train},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    hasher = hashlib.blake2b(text.encode(), digest_size=16)
    for group in arrays:
        _arrays_digest(hasher, group)
    return hasher.hexdigest()


def write_checkpoint(
    path: Path,
    fingerprint: str,
    epochs: int,
    parts: TrainingParts,
    progress: TrainingProgress,
    device: torch.device,
) -> None:
    """Save the state after a finished epoch: atomically, and synced, so a kill never leaves half."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "epoch": progress.epoch,
        "epochs": epochs,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "scaler": parts.scaler.state_dict(),
        "rng": rng_states(parts, device),
        "progress": vars(progress),
    }
    with artifacts.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def read_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to this training, else None with the reason logged."""
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # Truncated by a kill during a copy, corrupt, or not a checkpoint: never fatal.
        log(f"ignoring checkpoint {path}: it cannot be read ({_one_line(error)}); starting afresh")
        return None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        log(f"ignoring checkpoint {path}: not a training checkpoint of format {CHECKPOINT_FORMAT}; "
            "starting afresh")
        return None
    if checkpoint.get("fingerprint") != fingerprint:
        log(f"ignoring checkpoint {path}: it was written for other settings or data (fingerprint "
            f"{checkpoint.get('fingerprint')}, expected {fingerprint}); starting afresh")
        return None
    return checkpoint


def restore(
    checkpoint: dict[str, Any],
    parts: TrainingParts,
    device: torch.device,
    progress_type: type[TrainingProgress] = TrainingProgress,
) -> TrainingProgress:
    """Load a checkpoint into freshly built parts; return the progress it records.

    ``progress_type`` is the trainer's TrainingProgress (a subclass may add fields, as the
    regression trainer's best validation sRMSE).
    """
    parts.model.load_state_dict(checkpoint["model"])
    parts.optimizer.load_state_dict(checkpoint["optimizer"])
    if parts.scheduler is not None:
        parts.scheduler.load_state_dict(checkpoint["scheduler"])
    # A disabled scaler (CPU, bfloat16) has an empty state; a float16 one resumes its loss scale.
    if parts.scaler.is_enabled() and checkpoint["scaler"]:
        parts.scaler.load_state_dict(checkpoint["scaler"])
    restore_rng_states(checkpoint["rng"], parts, device)
    return progress_type(**checkpoint["progress"])


def resume_or_start(
    path: Path,
    fingerprint: str,
    epochs: int,
    device: torch.device,
    build: Callable[[], TrainingParts],
    progress_type: type[TrainingProgress] = TrainingProgress,
) -> tuple[TrainingParts, TrainingProgress, int | None]:
    """Parts and progress restored from the checkpoint at ``path`` if it fits, else fresh ones.

    Also returns the epoch resumed from (None for a fresh start). ``progress_type`` is the
    trainer's TrainingProgress class (see :func:`restore`).
    """
    parts = build()
    checkpoint = read_checkpoint(path, fingerprint)
    if checkpoint is None:
        return parts, progress_type(), None
    try:
        progress = restore(checkpoint, parts, device, progress_type)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
        log(f"ignoring checkpoint {path}: it does not fit this training ({_one_line(error)}); "
            "starting afresh")
        # The failed load may have changed some parts; rebuild them as a fresh run would.
        return build(), progress_type(), None
    log(f"resuming from checkpoint at epoch {progress.epoch} of {epochs} ({path})")
    return parts, progress, progress.epoch
