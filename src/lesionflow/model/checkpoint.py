"""Resumable training runs: each finished epoch's state, RNG states and fingerprint, and the run loop.

Never resumes a checkpoint written for other settings or data, and never writes half a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import monai
import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader
from monai.transforms import Compose, Randomizable

from lesionflow.model.interrupt import StopSignals
from lesionflow.model.joblog import log
from lesionflow.model.sampling import LesionBatchSampler
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.resources import peak_rss_mb

# While training runs, <out>/resume/checkpoint.pt: not a declared output, so Snakemake keeps it
# when the job fails; the train stage deletes the folder once the final artifacts are written.
RESUME_DIR = "resume"
CHECKPOINT_FILE = "checkpoint.pt"
STEP_COLUMNS = ["step", "epoch", "lr", "loss"]
Hook = Callable[[], None]
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

    def take_if_best(self, row: dict[str, float]) -> bool:
        """Keep ``row``'s validation dice_pos if it is finite and the highest yet; True if kept."""
        dice = row["val_dice"]
        if not (math.isfinite(dice) and dice > self.best_dice):
            return False
        self.best_dice = dice
        return True

    def best_value(self) -> float:
        """The validation metric of the best epoch (dice_pos; a trainer's subclass picks its own)."""
        return self.best_dice


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


# ---------------------------------------------------------------- the run, shared by both trainers


@dataclass
class TrainingRun:
    """What a training run holds fixed; ``started`` (perf_counter) is when its stage began."""

    out: Path
    fingerprint: str
    epochs: int
    device: torch.device
    amp_dtype: torch.dtype | None
    num_workers: int
    started: float


def write_training_artifacts(
    out: Path,
    progress: TrainingProgress,
    model: torch.nn.Module,
    model_info: dict[str, Any],
    columns: list[str],
) -> tuple[int, float]:
    """model.pt (best weights), metrics_by_epoch.csv (``columns``) and lr_by_step.csv; best epoch, metric."""
    if progress.best_state is None:
        # The validation metric was never finite (every prediction NaN): keep the last weights.
        best_epoch, best_value, state = progress.epoch, math.nan, model.state_dict()
    else:
        best_epoch, best_value, state = progress.best_epoch, progress.best_value(), progress.best_state
    with artifacts.atomic_path(out / "model.pt") as tmp:
        torch.save({"state_dict": state, **model_info, "best_epoch": best_epoch}, tmp)
    artifacts.write_csv(pd.DataFrame(progress.epoch_rows, columns=columns), out / "metrics_by_epoch.csv")
    artifacts.write_csv(pd.DataFrame(progress.step_rows, columns=STEP_COLUMNS), out / "lr_by_step.csv")
    return best_epoch, best_value


def _summary(
    run: TrainingRun, progress: TrainingProgress, resumed_from: int | None, wall_time_s: float,
    best: dict[str, Any], facts: dict[str, Any],
) -> dict[str, Any]:
    """train_summary.json: the run's common keys around the task's ``best`` and ``facts``."""
    device, amp, cuda = run.device, run.amp_dtype, run.device.type == "cuda"
    rows, seconds = progress.epoch_rows, progress.train_seconds
    return {
        "iterations": len(progress.step_rows), "wall_time_s": wall_time_s, **best,
        "final_train_loss": rows[-1]["train_loss"], "final_val_loss": rows[-1]["val_loss"],
        "epochs_run": len(rows), "stopped_early": progress.stopped_early,
        "resumed_from_epoch": resumed_from,
        # Training images per second of training-loop time (validation left out), all attempts.
        "throughput_images_per_s": progress.train_images / seconds if seconds > 0 else None,
        "peak_gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
        "peak_rss_mb": peak_rss_mb(), "device": str(device),
        "gpu_name": torch.cuda.get_device_name(device) if cuda else None,
        "amp_dtype": str(amp).removeprefix("torch.") if amp is not None else None,
        "deterministic": not cuda, "num_workers": run.num_workers, **facts,
        "torch_version": torch.__version__, "monai_version": monai.__version__,
    }


def train_resumably(
    run: TrainingRun,
    build: Callable[[], TrainingParts],
    progress_type: type[TrainingProgress],
    run_epochs: Callable[[TrainingParts, TrainingProgress, Hook, Hook], None],
    finish: Callable[[TrainingParts, TrainingProgress], tuple[dict[str, Any], dict[str, Any]]],
) -> dict[str, Any]:
    """Resume or start, run the epochs under StopSignals with a checkpoint after each; finish.

    ``run_epochs(parts, progress, save, stop)`` trains; ``finish(parts, progress)`` writes the
    task's artifacts and returns its best-epoch and other summary fields. Writes and returns
    train_summary.json, then deletes the resume folder. Raises TrainingInterrupted on signals.
    """
    path = run.out / RESUME_DIR / CHECKPOINT_FILE
    parts, progress, resumed_from = resume_or_start(
        path, run.fingerprint, run.epochs, run.device, build, progress_type
    )
    if run.device.type == "cuda":
        # GPU runs are not bitwise repeatable anyway; let cuDNN pick its fastest kernels.
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(run.device)
    # Time of the attempts whose work the checkpoint kept, so wall_time_s covers the whole run.
    earlier_s = progress.elapsed_s

    def save() -> None:
        progress.elapsed_s = earlier_s + time.perf_counter() - run.started
        write_checkpoint(path, run.fingerprint, run.epochs, parts, progress, run.device)

    with StopSignals() as signals:

        def stop() -> None:
            signals.check(progress.epoch)

        run_epochs(parts, progress, save, stop)
        stop()
        best, facts = finish(parts, progress)
        wall_time_s = earlier_s + time.perf_counter() - run.started
        summary = _summary(run, progress, resumed_from, wall_time_s, best, facts)
        artifacts.write_json(run.out / "train_summary.json", summary)
        # A signal during the writes: the job will be called failed, so keep what a retry needs.
        stop()
    shutil.rmtree(run.out / RESUME_DIR, ignore_errors=True)
    return summary
