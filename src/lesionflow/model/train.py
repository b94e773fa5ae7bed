"""The train stage: fit a MONAI network on split 'train', choose the checkpoint on split 'val'.

Training survives preemption (SLURM time limits, scancel). After every epoch the whole training
state goes atomically to ``<out>/resume/checkpoint.pt`` (lesionflow.model.checkpoint), which is not
a declared output, so Snakemake keeps it when the job fails; a rerun with the same settings and data
resumes from it, and the resume folder is deleted once the final artifacts are written. SIGTERM and
SIGUSR1 stop training at the next batch boundary with exit code 128 + the signal number, keeping the
last finished epoch's checkpoint (lesionflow.model.interrupt).

Every RNG is reseeded from (seed, epoch) at the start of each epoch, so an epoch's batches and
augmentations never depend on what ran before it. On CPU with ``num_workers`` 0 an interrupted
and resumed run therefore writes bitwise the same weights and metrics as an uninterrupted one.
With workers > 0 each worker seeds its augmentations from the main process's reseeded torch RNG:
runs stay reproducible and exactly resumable for an unchanged worker count, but another count
draws other (equally valid) augmentations. On a GPU, cuDNN autotuning and atomic adds make runs
valid but not bitwise repeatable.

Never loads, predicts or scores split 'test': checkpoint choice and early stopping read 'val' only.
Never writes a checkpoint of a half-finished epoch, and never draws a figure (the training-report
stage plots metrics_by_epoch.csv, so a plot edit never retrains a model).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import monai
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lesionflow.data import subsets
from lesionflow.data.manifest import read_manifest
from lesionflow.data.subsets import read_split
from lesionflow.model.checkpoint import (
    CHECKPOINT_FILE,
    RESUME_DIR,
    TrainingParts,
    TrainingProgress,
    resume_or_start,
    seed_epoch,
    training_fingerprint,
    write_checkpoint,
)
from lesionflow.model.epoch import EpochSetup, amp_dtype_for, build_training_parts, run_epoch
from lesionflow.model.interrupt import StopSignals
from lesionflow.model.joblog import log
from lesionflow.model.networks import build_loss, resolve_device
from lesionflow.model.sampling import resolve_num_workers
from lesionflow.model.score_train import run_score_train
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.resources import peak_rss_mb
from lesionflow.pipeline.settings import complete_section

EPOCH_COLUMNS = [
    "epoch", "train_loss", "val_loss", "train_dice", "val_dice", "train_iou", "val_iou",
    "train_pearson", "val_pearson", "lr", "seconds",
]
STEP_COLUMNS = ["step", "epoch", "lr", "loss"]
_TRAIN_KEYS = (
    "epochs", "batch_size", "learning_rate", "weight_decay", "scheduler", "loss",
    "positive_oversampling", "augment", "early_stopping_patience", "seed", "patch_size", "device",
    "num_workers", "batch_dice",
)


def _check_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model = complete_section(settings, "model", ("network", "spatial_dims", "kwargs"))
    train = complete_section(settings, "train", _TRAIN_KEYS)
    complete_section(train, "augment", ("flip", "rotate90", "intensity"))
    if train["scheduler"] not in ("onecycle", "cosine", "none"):
        raise LesionflowError(
            f"train.scheduler: expected onecycle, cosine or none, got {train['scheduler']!r}"
        )
    spatial_dims = model["spatial_dims"]
    patch = train["patch_size"]
    if patch is not None and (len(patch) != spatial_dims or min(patch) < 1):
        raise LesionflowError(
            f"train.patch_size: expected {spatial_dims} positive sizes (model.spatial_dims), "
            f"got {patch!r}"
        )
    workers = train["num_workers"]
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise LesionflowError(f"train.num_workers: expected null or an integer >= 0, got {workers!r}")
    return model, train


def _load(manifest_path, split_path, subset: str, spatial_dims: int):
    manifest = read_manifest(manifest_path)
    split = read_split(split_path)
    ids, images, masks = subsets.load_subset(manifest, split, subset)
    if len(ids) == 0:
        raise LesionflowError(f"{split_path}: split '{subset}' has no images")
    for image_id, image in zip(ids, images, strict=True):
        if image.ndim != spatial_dims + 1:
            raise LesionflowError(
                f"{manifest_path}: image {image_id} has shape {image.shape}; model.spatial_dims "
                f"{spatial_dims} expects (C, {', '.join(['size'] * spatial_dims)})"
            )
    return ids, images, masks


def _roi_size(train_images: list[np.ndarray], patch_size: list[int] | None) -> list[int]:
    """The network's input size: the patch, or the one shape that every training image has."""
    shapes = {image.shape[1:] for image in train_images}
    if patch_size is None and len(shapes) > 1:
        raise LesionflowError(
            f"train.patch_size: training images have {len(shapes)} different shapes; "
            "set a patch size to train on crops"
        )
    return list(patch_size) if patch_size is not None else list(next(iter(shapes)))


def _record_epoch(
    progress: TrainingProgress,
    row: dict[str, float],
    steps: list[dict[str, float]],
    images: int,
    seconds: float,
    model: torch.nn.Module,
    patience: int | None,
    epochs: int,
) -> bool:
    """Add a finished epoch to ``progress`` (best weights, early stopping); True if it is the best."""
    epoch, dice = int(row["epoch"]), row["val_dice"]
    improved = math.isfinite(dice) and dice > progress.best_dice
    if improved:
        progress.best_epoch, progress.best_dice = epoch, dice
        progress.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    progress.epoch = epoch
    progress.epoch_rows.append(row)
    progress.step_rows.extend(steps)
    progress.train_images += images
    progress.train_seconds += seconds
    patience_over = patience is not None and epoch - progress.best_epoch >= int(patience)
    progress.stopped_early = patience_over and epoch < epochs
    progress.finished = patience_over or epoch >= epochs
    return improved


def _train_epochs(
    parts: TrainingParts,
    setup: EpochSetup,
    progress: TrainingProgress,
    train: dict[str, Any],
    save: Callable[[], None],
    stop: Callable[[], None],
) -> None:
    """Run epochs until the last one or early stopping; ``save`` after each, ``stop`` between batches."""
    epochs, seed, patience = int(train["epochs"]), int(train["seed"]), train["early_stopping_patience"]
    with tqdm(
        total=epochs, initial=progress.epoch, desc="train", unit="epoch", file=sys.stderr
    ) as bar:
        while not progress.finished:
            stop()  # before the loader starts an epoch's worker processes
            epoch = progress.epoch + 1
            seed_epoch(seed, epoch, parts)
            row, steps, images, seconds = run_epoch(parts, setup, progress, epoch, stop)
            improved = _record_epoch(
                progress, row, steps, images, seconds, parts.model, patience, epochs
            )
            save()
            bar.set_postfix(
                train_loss=f"{row['train_loss']:.3f}", val_loss=f"{row['val_loss']:.3f}",
                val_dice=f"{row['val_dice']:.3f}", refresh=False,
            )
            bar.update(1)
            # One plain line per epoch, so the log file stays readable without the bar's redraws.
            log(
                f"epoch {epoch}/{epochs} train_loss {row['train_loss']:.4f} "
                f"val_loss {row['val_loss']:.4f} train_dice {row['train_dice']:.4f} "
                f"val_dice_pos {row['val_dice']:.4f} lr {row['lr']:.2e} {row['seconds']:.1f}s"
                + (" *best*" if improved else "")
            )


def _final_weights(progress: TrainingProgress, model: torch.nn.Module) -> tuple[int, float, dict]:
    """Best epoch, its validation dice_pos and its weights."""
    if progress.best_state is None:
        # Validation Dice was never defined (every prediction NaN): keep the last weights.
        return progress.epoch_rows[-1]["epoch"], float("nan"), model.state_dict()
    return progress.best_epoch, progress.best_dice, progress.best_state


def _write_artifacts(
    out: Path, progress: TrainingProgress, model: torch.nn.Module, model_info: dict[str, Any]
) -> tuple[int, float]:
    """model.pt (best weights) and the two tables; return the best epoch and its Dice."""
    best_epoch, best_dice, best_state = _final_weights(progress, model)
    with artifacts.atomic_path(out / "model.pt") as tmp:
        torch.save({"state_dict": best_state, **model_info, "best_epoch": best_epoch}, tmp)
    epoch_frame = pd.DataFrame(progress.epoch_rows, columns=EPOCH_COLUMNS)
    step_frame = pd.DataFrame(progress.step_rows, columns=STEP_COLUMNS)
    artifacts.write_csv(epoch_frame, out / "metrics_by_epoch.csv")
    artifacts.write_csv(step_frame, out / "lr_by_step.csv")
    return best_epoch, best_dice


def run_train(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    settings: dict[str, Any],
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Train ``settings['model']`` with ``settings['train']``; write the artifacts to ``out_dir``.

    Resumes from ``out_dir/resume/checkpoint.pt`` when it was written for the same settings and
    data. Raises TrainingInterrupted after SIGTERM / SIGUSR1. Returns ``train_summary.json``.
    ``settings['task']`` regression trains a score regressor instead (score_train.run_score_train).
    """
    if settings.get("task") == "regression":
        return run_score_train(manifest_path, split_path, settings, out_dir)
    model_settings, train = _check_settings(settings)
    spatial_dims = model_settings["spatial_dims"]
    out = Path(out_dir)
    checkpoint_path = out / RESUME_DIR / CHECKPOINT_FILE
    started = time.perf_counter()
    device = resolve_device(train["device"], "train.device")
    amp_dtype = amp_dtype_for(device)
    num_workers = resolve_num_workers(train["num_workers"])

    _, train_images, train_masks = _load(manifest_path, split_path, "train", spatial_dims)
    _, val_images, val_masks = _load(manifest_path, split_path, "val", spatial_dims)
    val_positive = [bool(mask.any()) for mask in val_masks]
    if not any(val_positive):
        raise LesionflowError(
            f"{split_path}: split 'val' has no lesion-positive image; the checkpoint is chosen "
            "on validation dice_pos"
        )
    patch_size = train["patch_size"]
    roi_size = _roi_size(train_images, patch_size)

    setup = EpochSetup(
        build_loss(train["loss"], batch_dice=bool(train["batch_dice"])),
        device, amp_dtype, val_images, val_masks, roi_size,
        int(train["batch_size"]),
    )
    items = [
        {"image": image, "label": mask[None].astype(np.float32)}
        for image, mask in zip(train_images, train_masks, strict=True)
    ]
    train_positive = [bool(mask.any()) for mask in train_masks]
    fingerprint = training_fingerprint(settings, [train_images, train_masks, val_images, val_masks])
    parts, progress, resumed_from = resume_or_start(
        checkpoint_path, fingerprint, int(train["epochs"]), device,
        functools.partial(
            build_training_parts, model_settings, train, items, train_positive, roi_size, setup,
            num_workers,
        ),
    )
    deterministic = device.type != "cuda"
    if not deterministic:
        # GPU runs are not bitwise repeatable anyway; let cuDNN pick its fastest kernels.
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    # Time of the attempts whose work the checkpoint kept, so wall_time_s covers the whole run.
    earlier_s = progress.elapsed_s

    def save() -> None:
        progress.elapsed_s = earlier_s + time.perf_counter() - started
        write_checkpoint(checkpoint_path, fingerprint, int(train["epochs"]), parts, progress, device)

    with StopSignals() as signals:

        def stop() -> None:
            signals.check(progress.epoch)

        _train_epochs(parts, setup, progress, train, save, stop)
        stop()
        model_info = {
            "model_settings": model_settings,
            "in_channels": int(train_images[0].shape[0]),
            "out_channels": 1,
            "spatial_dims": spatial_dims,
            "patch_size": patch_size,
            "roi_size": roi_size,
        }
        best_epoch, best_dice = _write_artifacts(out, progress, parts.model, model_info)
        summary = {
            "iterations": len(progress.step_rows),
            "wall_time_s": earlier_s + time.perf_counter() - started,
            "best_epoch": best_epoch,
            "best_val_dice_pos": best_dice,
            "final_train_loss": progress.epoch_rows[-1]["train_loss"],
            "final_val_loss": progress.epoch_rows[-1]["val_loss"],
            "epochs_run": len(progress.epoch_rows),
            "stopped_early": progress.stopped_early,
            "resumed_from_epoch": resumed_from,
            # Training images per second of training-loop time (validation left out), all attempts.
            "throughput_images_per_s": (
                progress.train_images / progress.train_seconds if progress.train_seconds > 0 else None
            ),
            "peak_gpu_memory_mb": (
                torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
            ),
            "peak_rss_mb": peak_rss_mb(),
            "device": str(device),
            "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "amp_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None,
            "deterministic": deterministic,
            "num_workers": num_workers,
            "n_train": len(train_images),
            "n_val": len(val_images),
            "n_val_positive": int(sum(val_positive)),
            "roi_size": roi_size,
            "torch_version": torch.__version__,
            "monai_version": monai.__version__,
        }
        artifacts.write_json(out / "train_summary.json", summary)
        # A signal during the writes: the job will be called failed, so keep what a retry needs.
        stop()
    shutil.rmtree(out / RESUME_DIR, ignore_errors=True)
    return summary
