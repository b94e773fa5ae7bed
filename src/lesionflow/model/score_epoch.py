"""One regression epoch: its parts, weighted optimizer steps on 'train' and its validation on 'val'.

Never loads, predicts or scores split 'test', and never writes a file: the train stage saves.

The loss of a batch is mean(w_i * loss_i) over its samples (w: train.sample_weights). The
validation loss is the plain mean of the per-sample losses: the weights describe the training
set's score bins, and an unweighted validation loss stays comparable between weightings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import set_determinism
from torch.utils.data import Sampler

from lesionflow.evaluation.score_metrics import regression_metrics
from lesionflow.model.checkpoint import TrainingParts, TrainingProgress
from lesionflow.model.epoch import _autocast, fitting_parts, optimizer_step
from lesionflow.model.regressors import build_regressor, check_input_size


@dataclass
class ScoreSetup:
    """What every epoch needs besides the stateful parts."""

    loss_fn: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    val_images: list[np.ndarray]
    val_scores: np.ndarray
    batch_size: int


class ShuffledBatches(Sampler[list[int]]):
    """Every index once per epoch in a fresh random order, cut into ``ceil(n / batch_size)`` batches.

    The batches differ in size by at most one, so a short last batch of a single volume never
    reaches batch normalisation (which fails on one value per channel).
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n = n
        self.batch_size = min(batch_size, n)
        self.rng = np.random.default_rng(seed)

    def reseed(self, seed: int) -> None:
        """Restart the generator, so the next epoch's batches depend on ``seed`` alone."""
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.rng.permutation(self.n)
        for batch in np.array_split(order, len(self)):
            yield batch.tolist()


def score_transforms(augment: dict[str, bool], spatial_dims: int) -> Compose:
    """MONAI dictionary transforms of a training ``image``: flips of every axis, intensity jitter."""
    steps: list[Any] = []
    if augment["flip"]:
        steps += [RandFlipd("image", prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if augment["intensity"]:
        steps += [
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        ]
    steps.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(steps)


def build_score_parts(
    model_settings: dict[str, Any],
    train: dict[str, Any],
    items: list[dict[str, Any]],
    roi_size: Sequence[int],
    setup: ScoreSetup,
    num_workers: int,
) -> TrainingParts:
    """Regressor, batches, augmentations, loader, optimizer, schedule and loss scaler, as new.

    Seeds every RNG first, so a second build gives what the first gave. ``items`` are
    ``{"image", "score", "weight"}`` dicts of volumes already of ``roi_size``.
    """
    set_determinism(seed=int(train["seed"]))
    device = setup.device
    in_channels = int(items[0]["image"].shape[0])
    model = build_regressor(model_settings, in_channels).to(device)
    check_input_size(model, in_channels, roi_size)
    sampler = ShuffledBatches(len(items), int(train["batch_size"]), int(train["seed"]))
    transform = score_transforms(train["augment"], len(roi_size))
    return fitting_parts(model, sampler, transform, items, train, setup, num_workers)


def weighted_loss(
    loss_fn: torch.nn.Module, predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """mean(w_i * loss_i) of a batch: ``predicted`` and ``target`` (B, 1), ``weights`` (B,)."""
    per_sample = loss_fn(predicted.float(), target.float()).reshape(len(weights))
    return (weights.float() * per_sample).mean()


def score_metrics(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """rmse, srmse, mae and pearson_r of predictions; all NaN if any prediction is not finite."""
    if not np.all(np.isfinite(predicted)):
        # A diverged network: no metric is defined, and the epoch is never chosen.
        return {"rmse": math.nan, "srmse": math.nan, "mae": math.nan, "pearson_r": math.nan}
    metrics = regression_metrics(true, predicted)
    return {name: metrics[name] for name in ("rmse", "srmse", "mae", "pearson_r")}


def train_score_epoch(
    parts: TrainingParts, setup: ScoreSetup, epoch: int, first_step: int, stop: Callable[[], None]
) -> tuple[dict[str, float], list[dict[str, float]], int, float]:
    """Train one epoch; return its loss and RMSE, step rows, volumes seen and loop seconds."""
    device, amp_dtype = setup.device, setup.amp_dtype
    parts.model.train()
    losses, sizes, squared, steps = [], [], [], []
    started = time.perf_counter()
    for batch in parts.loader:
        stop()
        x = batch["image"].to(device, non_blocking=True)
        y = batch["score"].float().reshape(-1, 1).to(device, non_blocking=True)
        w = batch["weight"].float().reshape(-1).to(device, non_blocking=True)
        lr = parts.optimizer.param_groups[0]["lr"]
        parts.optimizer.zero_grad(set_to_none=True)
        with _autocast(device, amp_dtype):
            predicted = parts.model(x)
        loss = weighted_loss(setup.loss_fn, predicted, y, w)
        optimizer_step(parts, loss)
        losses.append(float(loss.detach()))
        sizes.append(len(x))
        squared.append(((predicted.detach().float() - y) ** 2).reshape(-1).cpu().numpy())
        steps.append({"step": first_step + len(steps), "epoch": epoch, "lr": lr, "loss": losses[-1]})
    seconds = time.perf_counter() - started
    scores = {
        "train_loss": float(np.average(losses, weights=sizes)),
        "train_rmse": float(np.sqrt(np.mean(np.concatenate(squared)))),
    }
    return scores, steps, int(sum(sizes)), seconds


@torch.no_grad()
def predict_scores(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    stop: Callable[[], None] | None = None,
) -> np.ndarray:
    """The model's raw output for each volume (all of one shape), in order, as float64."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        if stop is not None:
            stop()
        x = torch.from_numpy(np.stack(images[start : start + batch_size])).float().to(device)
        with _autocast(device, amp_dtype):
            outputs.append(model(x).float().reshape(-1).cpu().numpy())
    return np.concatenate(outputs).astype(np.float64)


def validate(
    model: torch.nn.Module,
    setup: ScoreSetup,
    stop: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Validation loss (unweighted mean), rmse, srmse, mae and pearson_r on split 'val', no TTA."""
    predicted = predict_scores(
        model, setup.val_images, setup.batch_size, setup.device, setup.amp_dtype, stop
    )
    true = setup.val_scores
    losses = setup.loss_fn(
        torch.tensor(predicted, dtype=torch.float32).reshape(-1, 1),
        torch.tensor(true, dtype=torch.float32).reshape(-1, 1),
    )
    return {"loss": float(losses.mean()), **score_metrics(true, predicted)}


def run_score_epoch(
    parts: TrainingParts,
    setup: ScoreSetup,
    progress: TrainingProgress,
    epoch: int,
    stop: Callable[[], None],
) -> tuple[dict[str, float], list[dict[str, float]], int, float]:
    """Train and validate one epoch; return its metrics row, step rows, volumes and loop seconds."""
    started = time.perf_counter()
    train_scores, steps, images, seconds = train_score_epoch(
        parts, setup, epoch, len(progress.step_rows) + 1, stop
    )
    val = validate(parts.model, setup, stop=stop)
    row = {
        "epoch": epoch,
        "train_loss": train_scores["train_loss"],
        "val_loss": val["loss"],
        "train_rmse": train_scores["train_rmse"],
        "val_rmse": val["rmse"],
        "val_srmse": val["srmse"],
        "val_mae": val["mae"],
        "val_pearson": val["pearson_r"],
        "lr": steps[-1]["lr"],
        "seconds": time.perf_counter() - started,
    }
    return row, steps, images, seconds
