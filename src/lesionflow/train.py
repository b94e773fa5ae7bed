"""The train stage: fit a MONAI network on split 'train', choose the checkpoint on split 'val'.

Never loads, predicts or scores split 'test': checkpoint choice and early stopping read 'val' only.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import monai
import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import set_determinism
from torch.utils.data import Sampler
from tqdm import tqdm

from lesionflow import artifacts, dataset
from lesionflow.errors import LesionflowError
from lesionflow.models import build_loss, build_network, resolve_device
from lesionflow.split import read_split
from lesionflow.tta import forward_logits

THRESHOLD = 0.5
EPOCH_COLUMNS = [
    "epoch", "train_loss", "val_loss", "train_dice", "val_dice", "train_iou", "val_iou",
    "train_pearson", "val_pearson", "lr", "seconds",
]
STEP_COLUMNS = ["step", "epoch", "lr", "loss"]
# Quality bands of the Dice panel (bad < 0.4 <= mid < 0.6 <= good), as in the users' reports.
DICE_BANDS = ((0.0, 0.4, "tab:red"), (0.4, 0.6, "tab:olive"), (0.6, 1.0, "tab:green"))
_TRAIN_KEYS = (
    "epochs", "batch_size", "learning_rate", "weight_decay", "scheduler", "loss",
    "positive_oversampling", "augment", "early_stopping_patience", "seed", "patch_size", "device",
    "num_workers",
)


class LesionBatchSampler(Sampler[list[int]]):
    """Batches of indices; with ``positive_fraction`` > 0 each batch holds that share of positives.

    Both pools are walked in fresh random orders, so every image is seen before any repeats.
    ``positive_fraction`` 0 is plain shuffling. One epoch is ``ceil(n / batch_size)`` batches.
    """

    def __init__(
        self, positive: Sequence[bool], batch_size: int, positive_fraction: float, seed: int
    ) -> None:
        self.positive = np.flatnonzero(np.asarray(positive, dtype=bool))
        self.negative = np.flatnonzero(~np.asarray(positive, dtype=bool))
        self.n = len(positive)
        self.batch_size = min(batch_size, self.n)
        self.positive_fraction = positive_fraction
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _stream(self, pool: np.ndarray) -> Iterator[int]:
        while True:
            yield from self.rng.permutation(pool).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        if self.positive_fraction <= 0 or len(self.positive) == 0 or len(self.negative) == 0:
            order = self.rng.permutation(self.n).tolist()
            for start in range(0, self.n, self.batch_size):
                yield order[start : start + self.batch_size]
            return
        n_pos = min(self.batch_size, max(1, round(self.positive_fraction * self.batch_size)))
        positives, negatives = self._stream(self.positive), self._stream(self.negative)
        for _ in range(len(self)):
            batch = [next(positives) for _ in range(n_pos)]
            batch += [next(negatives) for _ in range(self.batch_size - n_pos)]
            yield [batch[i] for i in self.rng.permutation(len(batch))]


def training_transforms(
    augment: dict[str, bool], patch_size: Sequence[int] | None, spatial_shape: Sequence[int]
) -> Compose:
    """MONAI dictionary transforms applied jointly to ``image`` and ``label``."""
    keys = ["image", "label"]
    steps: list[Any] = []
    if patch_size is not None:
        # Half of the crops are centred on a lesion pixel, so small lesions are not drowned out.
        steps.append(RandCropByPosNegLabeld(
            keys, label_key="label", spatial_size=list(patch_size), pos=1.0, neg=1.0,
            num_samples=1,
        ))
    if augment.get("flip", False):
        steps += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in (0, 1)]
    shape = list(patch_size) if patch_size is not None else list(spatial_shape)
    # A quarter turn of a non-square crop would give batches of mixed shapes; flips cover 180.
    if augment.get("rotate90", False) and shape[0] == shape[1]:
        steps.append(RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(0, 1)))
    if augment.get("intensity", False):
        steps += [
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        ]
    steps.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(steps)


def batch_scores(probs: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image Dice, IoU and pixel Pearson r of lesion-positive images at threshold 0.5.

    Computed here on the device, per batch, because training logs them for every batch;
    lesion-free images are left out (their Dice is undefined or trivially 1).
    """
    flat_prob = probs.detach().float().flatten(1)
    gt = target.detach().flatten(1) > 0.5
    pred = flat_prob >= THRESHOLD
    positive = gt.any(dim=1)
    inter = (pred & gt).sum(1).float()
    sizes = pred.sum(1).float() + gt.sum(1).float()
    dice = 2 * inter / sizes.clamp(min=1)
    iou = inter / (sizes - inter).clamp(min=1)
    p = flat_prob - flat_prob.mean(1, keepdim=True)
    g = gt.float() - gt.float().mean(1, keepdim=True)
    denominator = torch.sqrt((p * p).sum(1) * (g * g).sum(1))
    pearson = torch.where(denominator > 0, (p * g).sum(1) / denominator.clamp(min=1e-12), torch.nan)
    keep = positive.cpu().numpy()
    return {
        "dice": dice.cpu().numpy()[keep],
        "iou": iou.cpu().numpy()[keep],
        "pearson": pearson.cpu().numpy()[keep],
    }


def _mean(values: list[np.ndarray]) -> float:
    joined = np.concatenate(values) if values else np.array([])
    joined = joined[np.isfinite(joined)]
    return float(joined.mean()) if joined.size else float("nan")


def _check_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model, train = settings.get("model"), settings.get("train")
    if not isinstance(model, dict) or not isinstance(train, dict):
        raise LesionflowError("settings: expected sections 'model' and 'train'")
    missing = [key for key in _TRAIN_KEYS if key not in train]
    if missing:
        raise LesionflowError(f"train: missing setting(s) {', '.join(missing)}")
    if train["scheduler"] not in ("onecycle", "cosine", "none"):
        raise LesionflowError(
            f"train.scheduler: expected onecycle, cosine or none, got {train['scheduler']!r}"
        )
    spatial_dims = model.get("spatial_dims", 2)
    patch = train["patch_size"]
    if patch is not None and (len(patch) != spatial_dims or min(patch) < 1):
        raise LesionflowError(
            f"train.patch_size: expected {spatial_dims} positive sizes (model.spatial_dims), "
            f"got {patch!r}"
        )
    return model, train


def _load(manifest_path, split_path, subset: str, spatial_dims: int):
    manifest = dataset.read_manifest(manifest_path)
    split = read_split(split_path)
    ids, images, masks = dataset.load_subset(manifest, split, subset)
    if len(ids) == 0:
        raise LesionflowError(f"{split_path}: split '{subset}' has no images")
    for image_id, image in zip(ids, images, strict=True):
        if image.ndim != spatial_dims + 1:
            raise LesionflowError(
                f"{manifest_path}: image {image_id} has shape {image.shape}; model.spatial_dims "
                f"{spatial_dims} expects (C, {', '.join(['size'] * spatial_dims)})"
            )
    return ids, images, masks


def _scheduler(optimizer, name: str, learning_rate: float, total_steps: int):
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=learning_rate, total_steps=total_steps, pct_start=0.3
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return None


def _validate(model, loss_fn, images, masks, roi_size, batch_size, device, use_amp) -> dict:
    """Validation loss and scores on whole images (sliding window beyond the training roi)."""
    model.eval()
    losses, weights, scores = [], [], []
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    with torch.no_grad(), _autocast(device, use_amp):
        for indices in by_shape.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                x = torch.from_numpy(np.stack([images[i] for i in chunk])).float().to(device)
                y = torch.from_numpy(np.stack([masks[i] for i in chunk])[:, None]).float()
                y = y.to(device)
                logits = forward_logits(model, x, roi_size, batch_size).float()
                losses.append(float(loss_fn(logits, y)))
                weights.append(len(chunk))
                scores.append(batch_scores(torch.sigmoid(logits), y))
    return {
        "loss": float(np.average(losses, weights=weights)),
        "dice": _mean([s["dice"] for s in scores]),
        "iou": _mean([s["iou"] for s in scores]),
        "pearson": _mean([s["pearson"] for s in scores]),
    }


def _autocast(device: torch.device, use_amp: bool):
    if use_amp:
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def plot_training_curves(epochs: pd.DataFrame, steps: pd.DataFrame, best_epoch: int):
    """A 2x2 figure: loss, Dice (with quality bands) and IoU per epoch; learning rate per step."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, metric, title in (
        (axes[0, 0], "loss", "Loss"),
        (axes[0, 1], "dice", "Dice (lesion-positive images)"),
        (axes[1, 0], "iou", "IoU (lesion-positive images)"),
    ):
        ax.plot(epochs["epoch"], epochs[f"train_{metric}"], marker=".", label="train")
        ax.plot(epochs["epoch"], epochs[f"val_{metric}"], marker=".", label="val")
        ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best epoch")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend()
        if metric != "loss":
            ax.set_ylim(0, 1)
    for low, high, colour in DICE_BANDS:
        axes[0, 1].axhspan(low, high, color=colour, alpha=0.08, linewidth=0)
    axes[1, 1].plot(steps["step"], steps["lr"])
    axes[1, 1].set_title("Learning rate")
    axes[1, 1].set_xlabel("step")
    axes[1, 1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    fig.tight_layout()
    return fig


def run_train(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    settings: dict[str, Any],
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Train ``settings['model']`` with ``settings['train']``; write the artifacts to ``out_dir``.

    Returns the content of ``train_summary.json``.
    """
    model_settings, train = _check_settings(settings)
    spatial_dims = model_settings.get("spatial_dims", 2)
    out = Path(out_dir)
    started = time.perf_counter()
    set_determinism(seed=int(train["seed"]))
    device = resolve_device(train["device"], "train.device")
    use_amp = device.type == "cuda"

    _, train_images, train_masks = _load(manifest_path, split_path, "train", spatial_dims)
    _, val_images, val_masks = _load(manifest_path, split_path, "val", spatial_dims)
    val_positive = [bool(mask.any()) for mask in val_masks]
    if not any(val_positive):
        raise LesionflowError(
            f"{split_path}: split 'val' has no lesion-positive image; the checkpoint is chosen "
            "on validation dice_pos"
        )
    patch_size = train["patch_size"]
    shapes = {image.shape[1:] for image in train_images}
    if patch_size is None and len(shapes) > 1:
        raise LesionflowError(
            f"train.patch_size: training images have {len(shapes)} different shapes; "
            "set a patch size to train on crops"
        )
    if patch_size is not None and any(
        any(s < p for s, p in zip(shape, patch_size, strict=True)) for shape in shapes
    ):
        raise LesionflowError(f"train.patch_size: {patch_size} is larger than a training image")
    roi_size = list(patch_size) if patch_size is not None else list(next(iter(shapes)))

    in_channels = int(train_images[0].shape[0])
    model = build_network(model_settings, in_channels=in_channels).to(device)
    loss_fn = build_loss(train["loss"])
    items = [
        {"image": image, "label": mask[None].astype(np.float32)}
        for image, mask in zip(train_images, train_masks, strict=True)
    ]
    train_positive = [bool(mask.any()) for mask in train_masks]
    sampler = LesionBatchSampler(
        train_positive, int(train["batch_size"]), float(train["positive_oversampling"]),
        int(train["seed"]),
    )
    loader = DataLoader(
        Dataset(items, transform=training_transforms(train["augment"], patch_size, roi_size)),
        batch_sampler=sampler, num_workers=int(train["num_workers"]),
    )
    epochs = int(train["epochs"])
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(train["learning_rate"]),
        weight_decay=float(train["weight_decay"]),
    )
    scheduler = _scheduler(
        optimizer, train["scheduler"], float(train["learning_rate"]), len(sampler) * epochs
    )
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    patience = train["early_stopping_patience"]

    epoch_rows: list[dict[str, float]] = []
    step_rows: list[dict[str, float]] = []
    best = {"epoch": 0, "dice": -math.inf, "state": None}
    stopped_early = False
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", file=sys.stderr)
    for epoch in bar:
        epoch_start = time.perf_counter()
        model.train()
        losses, weights, scores = [], [], []
        with warnings.catch_warnings():
            # RandCropByPosNegLabeld warns for every lesion-free image; that is expected here.
            warnings.filterwarnings("ignore", message=".*Num foregrounds 0.*")
            for batch in loader:
                x, y = batch["image"].to(device), batch["label"].to(device)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.zero_grad(set_to_none=True)
                with _autocast(device, use_amp):
                    logits = model(x)
                    loss = loss_fn(logits.float(), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if scheduler is not None:
                    scheduler.step()
                losses.append(float(loss.detach()))
                weights.append(len(x))
                scores.append(batch_scores(torch.sigmoid(logits), y))
                step_rows.append(
                    {"step": len(step_rows) + 1, "epoch": epoch, "lr": lr, "loss": losses[-1]}
                )
        val = _validate(
            model, loss_fn, val_images, val_masks, roi_size, int(train["batch_size"]), device,
            use_amp,
        )
        row = {
            "epoch": epoch,
            "train_loss": float(np.average(losses, weights=weights)),
            "val_loss": val["loss"],
            "train_dice": _mean([s["dice"] for s in scores]),
            "val_dice": val["dice"],
            "train_iou": _mean([s["iou"] for s in scores]),
            "val_iou": val["iou"],
            "train_pearson": _mean([s["pearson"] for s in scores]),
            "val_pearson": val["pearson"],
            "lr": step_rows[-1]["lr"],
            "seconds": time.perf_counter() - epoch_start,
        }
        epoch_rows.append(row)
        improved = math.isfinite(val["dice"]) and val["dice"] > best["dice"]
        if improved:
            best = {
                "epoch": epoch,
                "dice": val["dice"],
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        bar.set_postfix(
            train_loss=f"{row['train_loss']:.3f}", val_loss=f"{row['val_loss']:.3f}",
            val_dice=f"{row['val_dice']:.3f}",
        )
        # One plain line per epoch, so the log file stays readable without the bar's redraws.
        tqdm.write(
            f"epoch {epoch}/{epochs} train_loss {row['train_loss']:.4f} "
            f"val_loss {row['val_loss']:.4f} train_dice {row['train_dice']:.4f} "
            f"val_dice_pos {row['val_dice']:.4f} lr {row['lr']:.2e} {row['seconds']:.1f}s"
            + (" *best*" if improved else ""),
            file=sys.stderr,
        )
        if patience is not None and epoch - best["epoch"] >= int(patience):
            stopped_early = epoch < epochs
            break
    bar.close()
    if best["state"] is None:
        # Validation Dice was never defined (every prediction NaN): keep the last weights.
        best = {"epoch": epoch_rows[-1]["epoch"], "dice": float("nan"), "state": model.state_dict()}

    with artifacts.atomic_path(out / "model.pt") as tmp:
        torch.save(
            {
                "state_dict": best["state"],
                "model_settings": model_settings,
                "in_channels": in_channels,
                "out_channels": 1,
                "spatial_dims": spatial_dims,
                "patch_size": patch_size,
                "roi_size": roi_size,
                "best_epoch": best["epoch"],
            },
            tmp,
        )
    epoch_frame = pd.DataFrame(epoch_rows, columns=EPOCH_COLUMNS)
    step_frame = pd.DataFrame(step_rows, columns=STEP_COLUMNS)
    artifacts.write_csv(epoch_frame, out / "metrics_by_epoch.csv")
    artifacts.write_csv(step_frame, out / "lr_by_step.csv")
    artifacts.save_figure(
        plot_training_curves(epoch_frame, step_frame, best["epoch"]), out / "training_curves.png"
    )
    summary = {
        "iterations": len(step_rows),
        "wall_time_s": time.perf_counter() - started,
        "best_epoch": best["epoch"],
        "best_val_dice_pos": best["dice"],
        "final_train_loss": epoch_rows[-1]["train_loss"],
        "final_val_loss": epoch_rows[-1]["val_loss"],
        "epochs_run": len(epoch_rows),
        "stopped_early": stopped_early,
        "peak_gpu_memory_mb": (
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        ),
        "peak_rss_mb": _peak_rss_mb(),
        "device": str(device),
        "n_train": len(train_images),
        "n_val": len(val_images),
        "n_val_positive": int(sum(val_positive)),
        "roi_size": roi_size,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
    }
    artifacts.write_json(out / "train_summary.json", summary)
    return summary
