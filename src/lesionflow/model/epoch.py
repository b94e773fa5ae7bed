"""One training epoch: the parts it runs on, its optimizer steps on 'train' and its validation on 'val'.

Never loads, predicts or scores split 'test', and never writes a file: the train stage saves.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.utils import set_determinism

from lesionflow.model.checkpoint import TrainingParts, TrainingProgress
from lesionflow.model.networks import build_network, forward_logits
from lesionflow.model.sampling import LesionBatchSampler, training_transforms, worker_init
from lesionflow.model.scores import batch_scores, mean_score

# Not infer.sw_overlap: a change to inference settings must never change training's checkpoint choice.
VALIDATION_SW_OVERLAP = 0.25


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


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: bfloat16 where the GPU has it, else float16; None (fp32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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
    model = build_network(model_settings, in_channels=int(items[0]["image"].shape[0])).to(device)
    sampler = LesionBatchSampler(
        positive, int(train["batch_size"]), float(train["positive_oversampling"]), int(train["seed"])
    )
    transform = training_transforms(train["augment"], train["patch_size"], roi_size)
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
    scaler = torch.amp.GradScaler(device.type, enabled=setup.amp_dtype == torch.float16)
    return TrainingParts(model, sampler, transform, loader, optimizer, scheduler, scaler)


def train_epoch(
    parts: TrainingParts, setup: EpochSetup, epoch: int, first_step: int, stop: Callable[[], None]
) -> tuple[dict[str, float], list[dict[str, float]], int, float]:
    """Train one epoch; return its train scores, step rows, images seen and loop seconds."""
    device, amp_dtype = setup.device, setup.amp_dtype
    parts.model.train()
    losses, weights, scores, steps = [], [], [], []
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
                logits = parts.model(x)
                loss = setup.loss_fn(logits.float(), y)
            parts.scaler.scale(loss).backward()
            parts.scaler.step(parts.optimizer)
            parts.scaler.update()
            if parts.scheduler is not None:
                parts.scheduler.step()
            losses.append(float(loss.detach()))
            weights.append(len(x))
            scores.append(batch_scores(torch.sigmoid(logits), y))
            steps.append({"step": first_step + len(steps), "epoch": epoch, "lr": lr, "loss": losses[-1]})
    seconds = time.perf_counter() - started
    train_scores = {
        "train_loss": float(np.average(losses, weights=weights)),
        "train_dice": mean_score([s["dice"] for s in scores]),
        "train_iou": mean_score([s["iou"] for s in scores]),
        "train_pearson": mean_score([s["pearson"] for s in scores]),
    }
    return train_scores, steps, int(sum(weights)), seconds


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
) -> dict[str, float]:
    """Validation loss and scores on whole images (sliding window beyond the training roi).

    ``stop`` is called at every batch boundary; it raises when training must end now.
    """
    model.eval()
    losses, weights, scores = [], [], []
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
                y = torch.from_numpy(np.stack([masks[i] for i in chunk])[:, None]).float()
                y = y.to(device)
                logits = forward_logits(model, x, roi_size, batch_size, VALIDATION_SW_OVERLAP).float()
                losses.append(float(loss_fn(logits, y)))
                weights.append(len(chunk))
                scores.append(batch_scores(torch.sigmoid(logits), y))
    return {
        "loss": float(np.average(losses, weights=weights)),
        "dice": mean_score([s["dice"] for s in scores]),
        "iou": mean_score([s["iou"] for s in scores]),
        "pearson": mean_score([s["pearson"] for s in scores]),
    }


def run_epoch(
    parts: TrainingParts,
    setup: EpochSetup,
    progress: TrainingProgress,
    epoch: int,
    stop: Callable[[], None],
) -> tuple[dict[str, float], list[dict[str, float]], int, float]:
    """Train and validate one epoch; return its metrics row, step rows, images and loop seconds."""
    started = time.perf_counter()
    train_scores, steps, images, seconds = train_epoch(
        parts, setup, epoch, len(progress.step_rows) + 1, stop
    )
    val = validate(
        parts.model, setup.loss_fn, setup.val_images, setup.val_masks, setup.roi_size,
        setup.batch_size, setup.device, setup.amp_dtype, stop=stop,
    )
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
    }
    return row, steps, images, seconds
