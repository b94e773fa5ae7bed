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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionflow.data.manifest import read_manifest
from lesionflow.data.subsets import read_split
from lesionflow.io.readers import read_image
from lesionflow.model.checkpoint import (
    TrainingParts,
    TrainingProgress,
    TrainingRun,
    train_resumably,
    training_fingerprint,
    write_training_artifacts,
)
from lesionflow.model.epoch import train_epochs
from lesionflow.model.regressors import build_regression_loss, fit_to_roi
from lesionflow.model.sample_weights import METHODS, checked_cut_points, training_weights
from lesionflow.model.score_epoch import ScoreSetup, build_score_parts, run_score_epoch
from lesionflow.model.train_setup import check_train_settings, run_hardware
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

EPOCH_COLUMNS = [
    "epoch", "train_loss", "val_loss", "train_rmse", "val_rmse", "val_srmse", "val_mae",
    "val_pearson", "lr", "seconds",
]
_TRAIN_KEYS = (
    "epochs", "batch_size", "learning_rate", "weight_decay", "scheduler", "loss", "sample_weights",
    "weight_bins", "augment", "early_stopping_patience", "seed", "patch_size", "device",
    "num_workers",
)


@dataclass
class ScoreProgress(TrainingProgress):
    """TrainingProgress whose best epoch is the lowest validation sRMSE (best_dice stays unused)."""

    best_srmse: float = math.inf

    def take_if_best(self, row: dict[str, float]) -> bool:
        """Keep ``row``'s validation sRMSE if it is finite and the lowest yet; True if kept."""
        srmse = row["val_srmse"]
        if not (math.isfinite(srmse) and srmse < self.best_srmse):
            return False
        self.best_srmse = srmse
        return True

    def best_value(self) -> float:
        """The best epoch's validation sRMSE."""
        return self.best_srmse


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
    spatial_dims = model["spatial_dims"]
    if spatial_dims not in (2, 3):
        raise LesionflowError(f"model.spatial_dims: expected 2 or 3, got {spatial_dims!r}")
    check_train_settings(train, spatial_dims)
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
    started = time.perf_counter()
    device, amp_dtype, num_workers = run_hardware(train)

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
    model_info = {
        "model_settings": model_settings,
        "task": "regression",
        "in_channels": int(train_images[0].shape[0]),
        "out_channels": 1,
        "spatial_dims": spatial_dims,
        "patch_size": train["patch_size"],
        "roi_size": roi_size,
    }

    def finish(parts: TrainingParts, progress: TrainingProgress) -> tuple[dict, dict]:
        best_epoch, best_srmse = write_training_artifacts(
            out, progress, parts.model, model_info, EPOCH_COLUMNS
        )
        facts = {
            "n_train": len(train_images), "n_val": len(val_images),
            "val_score_std": float(np.std(val_scores)), "roi_size": roi_size,
            "sample_weights": weight_summary,
        }
        return {"task": "regression", "best_epoch": best_epoch, "best_val_srmse": best_srmse}, facts

    return train_resumably(
        TrainingRun(out, fingerprint, int(train["epochs"]), device, amp_dtype, num_workers, started),
        functools.partial(build_score_parts, model_settings, train, items, roi_size, setup, num_workers),
        ScoreProgress,
        functools.partial(
            train_epochs, setup=setup, train=train, run=run_score_epoch,
            shown=("train_loss", "val_srmse"),
            logged=tuple((c, c) for c in (
                "train_loss", "val_loss", "train_rmse", "val_rmse", "val_srmse", "val_pearson"
            )),
        ),
        finish,
    )
