"""Training epochs: the parts they run on, optimizer steps on 'train', validation on 'val', the loop.

Never loads, predicts or scores split 'test', and never writes a file: the train stage saves.

The loop, the settings checks and the parts' optimizer, schedule and loader serve both trainers.
A dual-head model (model.presence_head) adds its presence loss to each step and its presence
ROC-AUC / AP to validation; a model without a head runs exactly the same operations as before.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism
from tqdm import tqdm

from lesionflow.model.checkpoint import Hook, TrainingParts, TrainingProgress, seed_epoch
from lesionflow.model.class_heads import BINARY, ClassHead
from lesionflow.model.dual_head import DualHead, dual_head_loss
from lesionflow.model.joblog import log
from lesionflow.model.networks import build_model, forward_logits, forward_with_presence
from lesionflow.model.presence import presence_metrics
from lesionflow.model.sampling import LesionBatchSampler, training_transforms, worker_init
from lesionflow.model.scores import batch_scores, mean_score, prediction_counts, prediction_fractions

# Not infer.sw_overlap: a change to inference settings must never change training's checkpoint choice.
VALIDATION_SW_OVERLAP = 0.25
# What validate and each epoch's training batches predicted at 0.5 (scores.prediction_fractions),
# read by the training report's collapse rule; metrics_by_epoch.csv keeps train.EPOCH_COLUMNS.
PREDICTION_KEYS = ("predicted_fraction", "true_fraction", "images_with_prediction")
PREDICTION_COLUMNS = (
    "train_predicted_fraction", "train_true_fraction", *(f"val_{key}" for key in PREDICTION_KEYS)
)


@dataclass
class EpochSetup:
    """What every epoch needs besides the stateful parts."""

    loss_fn: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    val_images: list[np.ndarray]
    val_masks: list[np.ndarray]
    roi_size: list[int]
    batch_size: int
    # train.presence_loss_weight: read only when the model is a DualHead.
    presence_weight: float
    # The lesion classes' output channels (data.labels); binary data has one sigmoid channel.
    head: ClassHead = BINARY


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is not None:
        return torch.autocast(device_type=device.type, dtype=amp_dtype)
    return contextlib.nullcontext()


def _scheduler(optimizer: torch.optim.Optimizer, name: str, learning_rate: float, total_steps: int):
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=learning_rate, total_steps=total_steps, pct_start=0.3
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def fitting_parts(
    model: torch.nn.Module,
    sampler: Any,
    transform: Any,
    items: list[dict[str, Any]],
    train: dict[str, Any],
    setup: EpochSetup | Any,
    num_workers: int,
) -> TrainingParts:
    """TrainingParts of a built ``model`` (on ``setup.device``), batch ``sampler`` and ``transform``.

    Adds the loader, AdamW, ``train.scheduler`` over every step and the loss scaler.
    """
    device, amp_dtype = setup.device, setup.amp_dtype
    # Workers are not persistent: each epoch starts new ones, seeded from the reseeded torch RNG.
    loader = DataLoader(
        Dataset(items, transform=transform), batch_sampler=sampler, num_workers=num_workers,
        pin_memory=device.type == "cuda", worker_init_fn=worker_init,
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(train["learning_rate"]),
        weight_decay=float(train["weight_decay"]),
    )
    scheduler = _scheduler(
        optimizer, train["scheduler"], float(train["learning_rate"]),
        len(sampler) * int(train["epochs"]),
    )
    # Loss scaling is for float16 only: bfloat16 has float32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainingParts(model, sampler, transform, loader, optimizer, scheduler, scaler)


def optimizer_step(parts: TrainingParts, loss: torch.Tensor) -> None:
    """Backpropagate ``loss`` through the scaler, step the optimizer, then the schedule."""
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    if parts.scheduler is not None:
        parts.scheduler.step()


def build_training_parts(
    model_settings: dict[str, Any],
    train: dict[str, Any],
    items: list[dict[str, np.ndarray]],
    positive: list[bool],
    roi_size: list[int],
    setup: EpochSetup,
    num_workers: int,
) -> TrainingParts:
    """Network, sampler, augmentations, loader, optimizer, schedule and loss scaler, as new.

    Seeds every RNG first, so a second build gives what the first gave.
    """
    set_determinism(seed=int(train["seed"]))
    device = setup.device
    model = build_model(
        model_settings, int(items[0]["image"].shape[0]), bool(model_settings["presence_head"]),
        setup.head.out_channels,
    ).to(device)
    sampler = LesionBatchSampler(
        positive, int(train["batch_size"]), float(train["positive_oversampling"]), int(train["seed"])
    )
    transform = training_transforms(train["augment"], train["patch_size"], roi_size)
    return fitting_parts(model, sampler, transform, items, train, setup, num_workers)


def _step_loss(
    model: torch.nn.Module, setup: EpochSetup, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float] | None]:
    """Segmentation logits, the loss to backpropagate and, for a DualHead only, its logged parts."""
    if not isinstance(model, DualHead):
        logits = model(x)
        return logits, setup.loss_fn(logits.float(), y), None
    logits, presence = model(x)
    loss, logged = dual_head_loss(
        lambda seg, target: setup.loss_fn(seg.float(), target), logits, presence, y,
        setup.presence_weight,
    )
    return logits, loss, logged


def train_epoch(
    parts: TrainingParts, setup: EpochSetup, epoch: int, first_step: int, stop: Callable[[], None]
) -> tuple[dict[str, float], list[dict[str, float]], int, float]:
    """Train one epoch; return its train scores, step rows, images seen and loop seconds.

    For a DualHead the loss of the scores and step rows is the segmentation part, comparable with
    a plain model's and with val_loss; its presence BCE is the scores' ``presence_loss``.
    """
    device, amp_dtype = setup.device, setup.amp_dtype
    parts.model.train()
    losses, weights, scores, steps, presence_losses, counts = [], [], [], [], [], []
    started = time.perf_counter()
    with warnings.catch_warnings():
        # RandCropByPosNegLabeld warns for every lesion-free image; that is expected here.
        warnings.filterwarnings("ignore", message=".*Num foregrounds 0.*")
        for batch in parts.loader:
            stop()
            x = batch["image"].to(device, non_blocking=True)
            y = batch["label"].to(device, non_blocking=True)
            lr = parts.optimizer.param_groups[0]["lr"]
            parts.optimizer.zero_grad(set_to_none=True)
            with _autocast(device, amp_dtype):
                logits, loss, logged = _step_loss(parts.model, setup, x, y)
            optimizer_step(parts, loss)
            losses.append(float(loss.detach()) if logged is None else logged["segmentation_loss"])
            if logged is not None:
                presence_losses.append(logged["presence_loss"])
            weights.append(len(x))
            probs = setup.head.probabilities(logits)
            scores.append(batch_scores(probs, y))
            counts.append(prediction_counts(probs, y))
            steps.append({"step": first_step + len(steps), "epoch": epoch, "lr": lr, "loss": losses[-1]})
    seconds = time.perf_counter() - started
    train_scores = {
        "train_loss": float(np.average(losses, weights=weights)),
        "train_dice": mean_score([s["dice"] for s in scores]),
        "train_iou": mean_score([s["iou"] for s in scores]),
        "train_pearson": mean_score([s["pearson"] for s in scores]),
        **{f"train_{key}": value for key, value in prediction_fractions(counts).items()},
    }
    if presence_losses:
        train_scores["presence_loss"] = float(np.average(presence_losses, weights=weights))
    return train_scores, steps, int(sum(weights)), seconds


def _validation_logits(
    model: torch.nn.Module, x: torch.Tensor, roi_size: list[int], batch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Segmentation logits (float32) and, for a DualHead only, each image's presence logit."""
    if isinstance(model, DualHead):
        logits, presence = forward_with_presence(model, x, roi_size, batch_size, VALIDATION_SW_OVERLAP)
        return logits.float(), presence
    return forward_logits(model, x, roi_size, batch_size, VALIDATION_SW_OVERLAP).float(), None


def validate(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    images: list[np.ndarray],
    masks: list[np.ndarray],
    roi_size: list[int],
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    stop: Callable[[], None] | None = None,
    classes: ClassHead = BINARY,
) -> dict[str, float]:
    """Validation loss, scores and PREDICTION_KEYS on whole images (sliding window beyond the roi).

    ``masks`` are ``(*spatial)`` for binary data, class stacks ``(n_classes, *spatial)`` for the
    classes of ``classes``, whose scores are then over (image, class) pairs with the class present.

    ``stop`` is called at every batch boundary; it raises when training must end now. A DualHead
    adds ``presence_roc_auc`` and ``presence_ap``: its presence logits (the highest window's under
    a sliding window) ranking the images by whether their masks hold a lesion.
    """
    model.eval()
    losses, weights, scores, labels, presence, counts = [], [], [], [], [], []
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    with torch.no_grad(), _autocast(device, amp_dtype):
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                if stop is not None:
                    stop()
                chunk = indices[start : start + batch_size]
                x = torch.from_numpy(np.stack([images[i] for i in chunk])).float().to(device)
                y = np.stack([masks[i] for i in chunk])
                y = torch.from_numpy(y if y.ndim == x.ndim else y[:, None]).float().to(device)
                logits, head = _validation_logits(model, x, roi_size, batch_size)
                if head is not None:
                    presence.extend(head.float().cpu().tolist())
                    labels.extend(bool(masks[i].any()) for i in chunk)
                losses.append(float(loss_fn(logits, y)))
                weights.append(len(chunk))
                probs = classes.probabilities(logits)
                scores.append(batch_scores(probs, y))
                counts.append(prediction_counts(probs, y))
    result = {
        "loss": float(np.average(losses, weights=weights)),
        "dice": mean_score([s["dice"] for s in scores]),
        "iou": mean_score([s["iou"] for s in scores]),
        "pearson": mean_score([s["pearson"] for s in scores]),
        **prediction_fractions(counts),
    }
    if isinstance(model, DualHead):
        metrics = presence_metrics(labels, presence)
        result.update(presence_roc_auc=metrics["roc_auc"], presence_ap=metrics["ap"])
    return result


def run_epoch(
    parts: TrainingParts,
    setup: EpochSetup,
    progress: TrainingProgress,
    epoch: int,
    stop: Callable[[], None],
) -> tuple[dict[str, float], list[dict[str, float]], int, float]:
    """Train and validate one epoch; return its metrics row, step rows, images and loop seconds."""
    started = time.perf_counter()
    train_scores, steps, images, seconds = train_epoch(parts, setup, epoch, len(progress.step_rows) + 1, stop)
    val = validate(
        parts.model, setup.loss_fn, setup.val_images, setup.val_masks, setup.roi_size,
        setup.batch_size, setup.device, setup.amp_dtype, stop=stop, classes=setup.head,
    )
    measured = {**train_scores, **{f"val_{key}": value for key, value in val.items()}}
    row = {
        "epoch": epoch,
        "train_loss": train_scores["train_loss"],
        "val_loss": val["loss"],
        "train_dice": train_scores["train_dice"],
        "val_dice": val["dice"],
        "train_iou": train_scores["train_iou"],
        "val_iou": val["iou"],
        "train_pearson": train_scores["train_pearson"],
        "val_pearson": val["pearson"],
        "lr": steps[-1]["lr"],
        "seconds": time.perf_counter() - started,
        # A stand-in validate without the counts leaves them undefined, never 0.
        **{column: measured.get(column, np.nan) for column in PREDICTION_COLUMNS},
    }
    if isinstance(parts.model, DualHead):
        row.update(
            presence_loss=train_scores["presence_loss"],
            val_presence_roc_auc=val["presence_roc_auc"],
            val_presence_ap=val["presence_ap"],
        )
    return row, steps, images, seconds


def record_epoch(
    progress: TrainingProgress,
    row: dict[str, float],
    finished: tuple[list[dict[str, float]], int, float],
    model: torch.nn.Module,
    patience: int | None,
    epochs: int,
) -> bool:
    """Add an epoch (``finished``: its steps, images, seconds) to ``progress``; True if the best."""
    steps, images, seconds = finished
    epoch = int(row["epoch"])
    improved = progress.take_if_best(row)
    if improved:
        progress.best_epoch = epoch
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


def train_epochs(
    parts: TrainingParts,
    progress: TrainingProgress,
    save: Hook,
    stop: Hook,
    *,
    setup: Any,
    train: dict[str, Any],
    run: Callable[..., tuple[dict[str, float], list[dict[str, float]], int, float]],
    shown: tuple[str, ...],
    logged: tuple[tuple[str, str], ...],
) -> None:
    """Run epochs (``run(parts, setup, progress, epoch, stop)``) to the last or early stopping.

    ``save`` after each, ``stop`` between batches. The bar shows the ``shown`` columns; the log
    line names each ``(label, column)`` of ``logged``, then the learning rate and seconds.
    """
    epochs, seed, patience = int(train["epochs"]), int(train["seed"]), train["early_stopping_patience"]
    with tqdm(
        total=epochs, initial=progress.epoch, desc="train", unit="epoch", file=sys.stderr
    ) as bar:
        while not progress.finished:
            stop()  # before the loader starts an epoch's worker processes
            epoch = progress.epoch + 1
            seed_epoch(seed, epoch, parts)
            row, *finished = run(parts, setup, progress, epoch, stop)
            improved = record_epoch(progress, row, tuple(finished), parts.model, patience, epochs)
            save()
            bar.set_postfix({k: f"{row[k]:.3f}" for k in shown}, refresh=False)
            bar.update(1)
            # One plain line per epoch, so the log file stays readable without the bar's redraws.
            log(
                f"epoch {epoch}/{epochs} "
                + "".join(f"{label} {row[column]:.4f} " for label, column in logged)
                + f"lr {row['lr']:.2e} {row['seconds']:.1f}s" + (" *best*" if improved else "")
            )
