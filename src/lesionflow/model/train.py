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

With model.presence_head the network is a DualHead (lesionflow.model.dual_head): each step adds
train.presence_loss_weight times the presence BCE, metrics_by_epoch.csv gains the presence columns
(lesionflow.model.presence.EPOCH_COLUMNS) and model.pt records ``presence_head`` for inference.
The checkpoint is still chosen on validation dice_pos alone.

Never loads, predicts or scores split 'test': checkpoint choice and early stopping read 'val' only.
Never writes a checkpoint of a half-finished epoch, and never draws a figure (the training-report
stage plots metrics_by_epoch.csv, so a plot edit never retrains a model).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from lesionflow.data import subsets
from lesionflow.data.class_masks import manifest_classes
from lesionflow.data.manifest import read_manifest
from lesionflow.data.subsets import read_split
from lesionflow.model.checkpoint import (
    TrainingParts,
    TrainingProgress,
    TrainingRun,
    train_resumably,
    training_fingerprint,
    write_training_artifacts,
)
from lesionflow.model.class_heads import ClassLoss, class_head
from lesionflow.model.epoch import (
    PREDICTION_COLUMNS,
    EpochSetup,
    build_training_parts,
    run_epoch,
    train_epochs,
)
from lesionflow.model.networks import build_loss
from lesionflow.model.presence import EPOCH_COLUMNS as PRESENCE_COLUMNS
from lesionflow.model.score_train import run_score_train
from lesionflow.model.train_setup import check_train_settings, run_hardware
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

EPOCH_COLUMNS = [
    "epoch", "train_loss", "val_loss", "train_dice", "val_dice", "train_iou", "val_iou",
    "train_pearson", "val_pearson", "lr", "seconds", *PREDICTION_COLUMNS,
]
_TRAIN_KEYS = (
    "epochs", "batch_size", "learning_rate", "weight_decay", "scheduler", "loss",
    "positive_oversampling", "augment", "early_stopping_patience", "seed", "patch_size", "device",
    "num_workers", "batch_dice", "presence_loss_weight",
)


def epoch_columns(presence_head: bool) -> list[str]:
    """The columns of metrics_by_epoch.csv: EPOCH_COLUMNS, then the presence ones of a dual head."""
    return EPOCH_COLUMNS + PRESENCE_COLUMNS if presence_head else list(EPOCH_COLUMNS)


def _check_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model = complete_section(settings, "model", ("network", "spatial_dims", "kwargs", "presence_head"))
    train = complete_section(settings, "train", _TRAIN_KEYS)
    complete_section(train, "augment", ("flip", "rotate90", "intensity"))
    check_train_settings(train, model["spatial_dims"])
    if not isinstance(model["presence_head"], bool):
        raise LesionflowError(f"model.presence_head: expected true or false, got {model['presence_head']!r}")
    return model, train


def _load(manifest_path, split_path, subset: str, spatial_dims: int, classes: bool = False):
    manifest = read_manifest(manifest_path)
    split = read_split(split_path)
    ids, images, masks = subsets.load_subset(manifest, split, subset, class_stacks=classes)
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
    started = time.perf_counter()
    device, amp_dtype, num_workers = run_hardware(train)
    classes = manifest_classes(manifest_path)
    head = class_head(classes)
    if classes is not None and model_settings["presence_head"]:
        raise LesionflowError(
            "model.presence_head: a presence head is for one lesion class; data.labels gives "
            f"{len(classes.names)} ({', '.join(classes.names)})"
        )

    stacks = classes is not None
    _, train_images, train_masks = _load(manifest_path, split_path, "train", spatial_dims, stacks)
    _, val_images, val_masks = _load(manifest_path, split_path, "val", spatial_dims, stacks)
    val_positive = [bool(mask.any()) for mask in val_masks]
    if not any(val_positive):
        raise LesionflowError(
            f"{split_path}: split 'val' has no lesion-positive image; the checkpoint is chosen "
            "on validation dice_pos"
        )
    patch_size = train["patch_size"]
    roi_size = _roi_size(train_images, patch_size)

    loss = (
        build_loss(train["loss"], batch_dice=bool(train["batch_dice"])) if classes is None
        else ClassLoss(train["loss"], bool(train["batch_dice"]), head)
    )
    setup = EpochSetup(
        loss, device, amp_dtype, val_images, val_masks, roi_size,
        int(train["batch_size"]), float(train["presence_loss_weight"]), head,
    )
    items = [
        {"image": image, "label": (mask if stacks else mask[None]).astype(np.float32)}
        for image, mask in zip(train_images, train_masks, strict=True)
    ]
    # Several classes: positives per class, so the sampler draws rare classes as often as common ones.
    train_positive = [
        mask.reshape(len(mask), -1).any(axis=1) if stacks else bool(mask.any()) for mask in train_masks
    ]
    fingerprint = training_fingerprint(settings, [train_images, train_masks, val_images, val_masks])
    model_info = {
        "model_settings": model_settings,
        "in_channels": int(train_images[0].shape[0]),
        "out_channels": head.out_channels,
        "spatial_dims": spatial_dims,
        "patch_size": patch_size,
        "roi_size": roi_size,
        "presence_head": model_settings["presence_head"],
        # Only with several classes, so a binary model.pt holds what it always held.
        **({} if classes is None else {"classes": classes.record}),
    }
    columns = epoch_columns(model_settings["presence_head"])
    logged = (("train_loss", "train_loss"), ("val_loss", "val_loss"),
              ("train_dice", "train_dice"), ("val_dice_pos", "val_dice"))
    if model_settings["presence_head"]:
        logged += (("presence_loss", "presence_loss"), ("val_presence_auc", "val_presence_roc_auc"))

    def finish(parts: TrainingParts, progress: TrainingProgress) -> tuple[dict, dict]:
        best_epoch, best_dice = write_training_artifacts(
            out, progress, parts.model, model_info, columns
        )
        facts = {
            "n_train": len(train_images), "n_val": len(val_images),
            "n_val_positive": int(sum(val_positive)), "roi_size": roi_size,
            # What trained this model, for the training report's diagnosis (a collapse's causes).
            "train_settings": dict(train),
        }
        return {"best_epoch": best_epoch, "best_val_dice_pos": best_dice}, facts

    return train_resumably(
        TrainingRun(out, fingerprint, int(train["epochs"]), device, amp_dtype, num_workers, started),
        functools.partial(
            build_training_parts, model_settings, train, items, train_positive, roi_size, setup,
            num_workers,
        ),
        TrainingProgress,
        functools.partial(
            train_epochs, setup=setup, train=train, run=run_epoch,
            shown=("train_loss", "val_loss", "val_dice"), logged=logged,
        ),
        finish,
    )
