"""The train stage of a regression run: fit a MONAI regressor to the scores of split 'train'.

Never loads, predicts or scores split 'test': the checkpoint is the epoch of the lowest finite
validation sRMSE (split 'val' only), and early stopping reads it too. Never writes a figure.

Each volume is centre padded or cropped to ``train.patch_size`` (lesionflow.model.regressors.
fit_to_roi). Training resumes, stops on signals and reseeds every epoch exactly as the
segmentation trainer (lesionflow.model.train) does, with the same checkpoint machinery, so on
CPU with ``num_workers`` 0 the same settings and data give bitwise the same weights.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import monai
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lesionflow.data.manifest import read_manifest
from lesionflow.data.subsets import read_split
from lesionflow.io.readers import read_image
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
from lesionflow.model.epoch import amp_dtype_for
from lesionflow.model.interrupt import StopSignals
from lesionflow.model.joblog import log
from lesionflow.model.networks import resolve_device
from lesionflow.model.regressors import build_regression_loss, fit_to_roi
from lesionflow.model.sample_weights import METHODS, checked_cut_points, training_weights
from lesionflow.model.sampling import resolve_num_workers
from lesionflow.model.score_epoch import ScoreSetup, build_score_parts, run_score_epoch
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.resources import peak_rss_mb
from lesionflow.pipeline.settings import complete_section

EPOCH_COLUMNS = [
    "epoch", "train_loss", "val_loss", "train_rmse", "val_rmse", "val_srmse", "val_mae",
    "val_pearson", "lr", "seconds",
]
STEP_COLUMNS = ["step", "epoch", "lr", "loss"]
_TRAIN_KEYS = (
    "epochs", "batch_size", "learning_rate", "weight_decay", "scheduler", "loss", "sample_weights",
    "weight_bins", "augment", "early_stopping_patience", "seed", "patch_size", "device",
    "num_workers",
)


@dataclass
class ScoreProgress(TrainingProgress):
    """TrainingProgress whose best epoch is the lowest validation sRMSE (best_dice stays unused)."""

    best_srmse: float = math.inf


def _check_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model = complete_section(settings, "model", ("network", "spatial_dims", "kwargs"))
    train = complete_section(settings, "train", _TRAIN_KEYS)
    augment = complete_section(train, "augment", ("flip", "intensity"))
    if augment.get("rotate90"):
        raise LesionflowError(
            "train.augment.rotate90: quarter turns are for segmentation; a regression run "
            "augments with flips and intensity only"
        )
    if train["sample_weights"] not in METHODS:
        raise LesionflowError(
            f"train.sample_weights: expected one of {', '.join(METHODS)}, got {train['sample_weights']!r}"
        )
    checked_cut_points(train["weight_bins"], "train.weight_bins")
    if train["scheduler"] not in ("onecycle", "cosine", "none"):
        raise LesionflowError(
            f"train.scheduler: expected onecycle, cosine or none, got {train['scheduler']!r}"
        )
    spatial_dims, patch = model["spatial_dims"], train["patch_size"]
    if spatial_dims not in (2, 3):
        raise LesionflowError(f"model.spatial_dims: expected 2 or 3, got {spatial_dims!r}")
    if patch is not None and (len(patch) != spatial_dims or min(patch) < 1):
        raise LesionflowError(
            f"train.patch_size: expected {spatial_dims} positive sizes (model.spatial_dims), "
            f"got {patch!r}"
        )
    workers = train["num_workers"]
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise LesionflowError(f"train.num_workers: expected null or an integer >= 0, got {workers!r}")
    return model, train


def subset_scores(manifest: pd.DataFrame, ids: list[str], manifest_path: str | os.PathLike) -> np.ndarray:
    """The ``score`` of each of ``ids``; a LesionflowError naming the manifest and id if one is missing."""
    if "score" not in manifest.columns:
        raise LesionflowError(
            f"{manifest_path}: no 'score' column; a regression run needs data.score_column"
        )
    values = pd.to_numeric(manifest.set_index("image_id").loc[ids, "score"], errors="coerce")
    bad = [image_id for image_id, value in zip(ids, values, strict=True) if not math.isfinite(value)]
    if bad:
        raise LesionflowError(
            f"{manifest_path}: image {bad[0]} has no valid score ({len(bad)} such train/val "
            "images); a regression run needs a score for every training and validation image"
        )
    return values.to_numpy(dtype=np.float64)


def _load(
    manifest_path: str | os.PathLike, split_path: str | os.PathLike, subset: str, spatial_dims: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Volumes ``(C, *spatial)`` and scores of one subset (never 'test'), in split.csv order."""
    manifest = read_manifest(manifest_path)
    split = read_split(split_path)
    ids = [str(i) for i in split.loc[split["split"] == subset, "image_id"]]
    if not ids:
        raise LesionflowError(f"{split_path}: split '{subset}' has no images")
    unknown = sorted(set(ids) - set(manifest["image_id"]))
    if unknown:
        raise LesionflowError(
            f"{split_path}: image id {unknown[0]!r} ({subset}) is not in the manifest "
            f"{manifest_path}; the split was made from another dataset"
        )
    scores = subset_scores(manifest, ids, manifest_path)
    paths = manifest.set_index("image_id").loc[ids, "image"]
    images = []
    for image_id, path in zip(ids, paths, strict=True):
        image = read_image(path).array
        if image.ndim != spatial_dims + 1:
            raise LesionflowError(
                f"{manifest_path}: image {image_id} has shape {image.shape}; model.spatial_dims "
                f"{spatial_dims} expects (C, {', '.join(['size'] * spatial_dims)})"
            )
        images.append(image)
    return images, scores


def _roi_size(images: list[np.ndarray], patch_size: list[int] | None) -> list[int]:
    """The network's input size: the patch, or the one shape every train and val volume has."""
    shapes = {image.shape[1:] for image in images}
    if patch_size is None and len(shapes) > 1:
        raise LesionflowError(
            f"train.patch_size: the train and val volumes have {len(shapes)} different shapes "
            f"(e.g. {' and '.join(str(list(s)) for s in sorted(shapes)[:2])}); set a patch size "
            "to centre pad or crop them to"
        )
    return [int(v) for v in patch_size] if patch_size is not None else list(next(iter(shapes)))


def _record_epoch(
    progress: ScoreProgress,
    row: dict[str, float],
    steps: list[dict[str, float]],
    images: int,
    seconds: float,
    model: torch.nn.Module,
    patience: int | None,
    epochs: int,
) -> bool:
    """Add a finished epoch to ``progress`` (best weights, early stopping); True if it is the best."""
    epoch, srmse = int(row["epoch"]), row["val_srmse"]
    improved = math.isfinite(srmse) and srmse < progress.best_srmse
    if improved:
        progress.best_epoch, progress.best_srmse = epoch, srmse
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
    setup: ScoreSetup,
    progress: ScoreProgress,
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
            row, steps, images, seconds = run_score_epoch(parts, setup, progress, epoch, stop)
            improved = _record_epoch(
                progress, row, steps, images, seconds, parts.model, patience, epochs
            )
            save()
            bar.set_postfix(
                train_loss=f"{row['train_loss']:.3f}", val_srmse=f"{row['val_srmse']:.3f}",
                refresh=False,
            )
            bar.update(1)
            # One plain line per epoch, so the log file stays readable without the bar's redraws.
            log(
                f"epoch {epoch}/{epochs} train_loss {row['train_loss']:.4f} "
                f"val_loss {row['val_loss']:.4f} train_rmse {row['train_rmse']:.4f} "
                f"val_rmse {row['val_rmse']:.4f} val_srmse {row['val_srmse']:.4f} "
                f"val_pearson {row['val_pearson']:.4f} lr {row['lr']:.2e} {row['seconds']:.1f}s"
                + (" *best*" if improved else "")
            )


def _write_artifacts(
    out: Path, progress: ScoreProgress, model: torch.nn.Module, model_info: dict[str, Any]
) -> tuple[int, float]:
    """model.pt (best weights) and the two tables; return the best epoch and its val sRMSE."""
    if progress.best_state is None:
        # Validation sRMSE was never finite (a diverged network): keep the last weights.
        best_epoch, best_srmse, state = progress.epoch, math.nan, model.state_dict()
    else:
        best_epoch, best_srmse, state = progress.best_epoch, progress.best_srmse, progress.best_state
    with artifacts.atomic_path(out / "model.pt") as tmp:
        torch.save({"state_dict": state, **model_info, "best_epoch": best_epoch}, tmp)
    epoch_frame = pd.DataFrame(progress.epoch_rows, columns=EPOCH_COLUMNS)
    artifacts.write_csv(epoch_frame, out / "metrics_by_epoch.csv")
    artifacts.write_csv(pd.DataFrame(progress.step_rows, columns=STEP_COLUMNS), out / "lr_by_step.csv")
    return best_epoch, best_srmse


def _summary(
    progress: ScoreProgress,
    best: tuple[int, float],
    device: torch.device,
    facts: dict[str, Any],
) -> dict[str, Any]:
    """train_summary.json: the segmentation trainer's keys, with best_val_srmse for the Dice."""
    return {
        "task": "regression",
        "iterations": len(progress.step_rows),
        "best_epoch": best[0],
        "best_val_srmse": best[1],
        "final_train_loss": progress.epoch_rows[-1]["train_loss"],
        "final_val_loss": progress.epoch_rows[-1]["val_loss"],
        "epochs_run": len(progress.epoch_rows),
        "stopped_early": progress.stopped_early,
        # Training volumes per second of training-loop time (validation left out), all attempts.
        "throughput_images_per_s": (
            progress.train_images / progress.train_seconds if progress.train_seconds > 0 else None
        ),
        "peak_gpu_memory_mb": (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        ),
        "peak_rss_mb": peak_rss_mb(),
        "device": str(device),
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "deterministic": device.type != "cuda",
        **facts,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
    }


def run_score_train(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    settings: dict[str, Any],
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Train the regressor ``settings['model']`` on the scores of the items manifest; write its artifacts.

    Writes model.pt (best weights), metrics_by_epoch.csv, lr_by_step.csv and train_summary.json
    to ``out_dir``; resumes from ``out_dir/resume/checkpoint.pt`` when it was written for the same
    settings and data. Raises TrainingInterrupted after SIGTERM / SIGUSR1. Returns the summary.
    """
    model_settings, train = _check_settings(settings)
    spatial_dims = model_settings["spatial_dims"]
    loss_fn = build_regression_loss(train["loss"])
    out = Path(out_dir)
    checkpoint_path = out / RESUME_DIR / CHECKPOINT_FILE
    started = time.perf_counter()
    device = resolve_device(train["device"], "train.device")
    amp_dtype = amp_dtype_for(device)
    num_workers = resolve_num_workers(train["num_workers"])

    train_images, train_scores = _load(manifest_path, split_path, "train", spatial_dims)
    val_images, val_scores = _load(manifest_path, split_path, "val", spatial_dims)
    if np.all(val_scores == val_scores[0]):
        raise LesionflowError(
            f"{split_path}: every score of split 'val' is {val_scores[0]:g}; the checkpoint is "
            "chosen on validation sRMSE, which needs scores that vary"
        )
    weights, weight_summary = training_weights(train["sample_weights"], train_scores, train["weight_bins"])
    roi_size = _roi_size(train_images + val_images, train["patch_size"])
    train_images = [fit_to_roi(image, roi_size) for image in train_images]
    val_images = [fit_to_roi(image, roi_size) for image in val_images]
    setup = ScoreSetup(loss_fn, device, amp_dtype, val_images, val_scores, int(train["batch_size"]))
    items = [
        {"image": image, "score": np.float32(score), "weight": np.float32(weight)}
        for image, score, weight in zip(train_images, train_scores, weights, strict=True)
    ]
    fingerprint = training_fingerprint(
        settings, [train_images, [train_scores, weights], val_images, [val_scores]]
    )
    parts, progress, resumed_from = resume_or_start(
        checkpoint_path, fingerprint, int(train["epochs"]), device,
        functools.partial(build_score_parts, model_settings, train, items, roi_size, setup, num_workers),
        ScoreProgress,
    )
    if device.type == "cuda":
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
            "task": "regression",
            "in_channels": int(train_images[0].shape[0]),
            "out_channels": 1,
            "spatial_dims": spatial_dims,
            "patch_size": train["patch_size"],
            "roi_size": roi_size,
        }
        best = _write_artifacts(out, progress, parts.model, model_info)
        facts = {
            "resumed_from_epoch": resumed_from,
            "amp_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype is not None else None,
            "num_workers": num_workers,
            "n_train": len(train_images),
            "n_val": len(val_images),
            "val_score_std": float(np.std(val_scores)),
            "roi_size": roi_size,
            "sample_weights": weight_summary,
        }
        summary = {
            **_summary(progress, best, device, facts),
            "wall_time_s": earlier_s + time.perf_counter() - started,
        }
        artifacts.write_json(out / "train_summary.json", summary)
        # A signal during the writes: the job will be called failed, so keep what a retry needs.
        stop()
    shutil.rmtree(out / RESUME_DIR, ignore_errors=True)
    return summary
