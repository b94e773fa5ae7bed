"""The train stage: fit a MONAI network on split 'train', choose the checkpoint on split 'val'.

Training survives preemption (SLURM time limits, scancel). After every epoch the whole training
state goes atomically to ``<out>/resume/checkpoint.pt``, which is not a declared output, so
Snakemake keeps it when the job fails; a rerun with the same settings and data resumes from it,
and the resume folder is deleted once the final artifacts are written. SIGTERM and SIGUSR1 stop
training at the next batch boundary with exit code 128 + the signal number, keeping the last
finished epoch's checkpoint.

Every RNG is reseeded from (seed, epoch) at the start of each epoch, so an epoch's batches and
augmentations never depend on what ran before it. On CPU with ``num_workers`` 0 an interrupted
and resumed run therefore writes bitwise the same weights and metrics as an uninterrupted one.
With workers > 0 each worker seeds its augmentations from the main process's reseeded torch RNG:
runs stay reproducible and exactly resumable for an unchanged worker count, but another count
draws other (equally valid) augmentations. On a GPU, cuDNN autotuning and atomic adds make runs
valid but not bitwise repeatable.

Never loads, predicts or scores split 'test': checkpoint choice and early stopping read 'val' only.
Never writes a checkpoint of a half-finished epoch.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import matplotlib.pyplot as plt
import monai
import numpy as np
import pandas as pd
import torch
from monai.data import DataLoader, Dataset
from monai.data.utils import worker_init_fn as monai_worker_init_fn
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandCropByPosNegLabeld,
    RandFlipd,
    Randomizable,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from monai.utils import set_determinism
from torch.utils.data import Sampler
from tqdm import tqdm

from lesionflow.data import dataset
from lesionflow.data.split import read_split
from lesionflow.model.networks import build_loss, build_network, resolve_device
from lesionflow.model.tta import forward_logits
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.resources import peak_rss_mb

T = TypeVar("T")

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
RESUME_DIR = "resume"
CHECKPOINT_FILE = "checkpoint.pt"
# Bumped whenever the checkpoint's layout changes, so an old one is ignored rather than misread.
CHECKPOINT_FORMAT = 1
# Settings that change how training runs but not what it computes (keys.NOT_IN_KEY['train']).
# Not imported from lesionflow.pipeline.keys: that would pull the key machinery into this stage's code key.
_RUN_ONLY_SETTINGS = ("device", "num_workers")
# SLURM sends SIGTERM at the time limit and on scancel, SIGUSR1 ahead of it with --signal=USR1@secs.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM,) + (
    (signal.SIGUSR1,) if hasattr(signal, "SIGUSR1") else ()
)


class TrainingInterrupted(Exception):
    """A stop signal arrived; the checkpoint of the last finished epoch (if any) is on disk."""

    def __init__(self, signum: int, epoch: int) -> None:
        self.signum = signum
        self.epoch = epoch
        # The shell's code for a death by this signal: SLURM and Snakemake must see a failure.
        self.exit_code = 128 + int(signum)
        super().__init__(f"training stopped by {signal.Signals(signum).name} after epoch {epoch}")


def exit_on_interrupt(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a stage's ``main`` so a TrainingInterrupted becomes its exit code (128 + signal)."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except TrainingInterrupted as stop:
            raise SystemExit(stop.exit_code) from None

    return wrapped


def _log(message: str) -> None:
    """One line on stderr (the job log) that does not garble an active progress bar."""
    tqdm.write(message, file=sys.stderr)


class _StopSignals:
    """While installed, records SIGTERM / SIGUSR1 so training stops at the next batch boundary.

    The handler only records: stopping happens in :meth:`check`, between batches, so no state
    is ever written halfway. Outside the main thread Python cannot install handlers, and the
    signals keep their default effect.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._record)
            except ValueError:
                break
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            # None means a handler installed outside Python; the default is the closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _record(self, signum: int, frame: object) -> None:
        if self.received is None:
            self.received = signum

    def check(self, last_epoch: int) -> None:
        """Raise TrainingInterrupted (after one log line) if a stop signal has arrived."""
        if self.received is None:
            return
        name = signal.Signals(self.received).name
        if last_epoch > 0:
            _log(f"received {name}: checkpoint of epoch {last_epoch} kept; exiting so a retry resumes")
        else:
            _log(f"received {name} before the first epoch finished: no checkpoint; exiting so a "
                 "retry starts afresh")
        raise TrainingInterrupted(self.received, last_epoch)


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

    def reseed(self, seed: int) -> None:
        """Restart the generator, so the next epoch's batches depend on ``seed`` alone."""
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
    workers = train["num_workers"]
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 0):
        raise LesionflowError(f"train.num_workers: expected null or an integer >= 0, got {workers!r}")
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


def resolve_num_workers(setting: int | None) -> int:
    """``train.num_workers``; null means the CPUs this job may use, less one for the main process.

    The affinity mask, not ``os.cpu_count()``: SLURM pins a job to its CPUs on a bigger node.
    """
    if setting is not None:
        return int(setting)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        cpus = os.cpu_count() or 1
    return max(0, cpus - 1)


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype: bfloat16 where the GPU has it, else float16; None (fp32) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is not None:
        return torch.autocast(device_type=device.type, dtype=amp_dtype)
    return contextlib.nullcontext()


def _worker_init(worker_id: int) -> None:
    """Leave the stop signals to the main process, then seed the worker's transforms as MONAI does.

    SLURM signals every process of the job; a worker killed by SIGTERM would crash the main
    process's loader before it could stop cleanly at a batch boundary.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    monai_worker_init_fn(worker_id)


def _validate(
    model, loss_fn, images, masks, roi_size, batch_size, device, amp_dtype, stop=None
) -> dict:
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


# ---------------------------------------------------------------- training state and checkpoints


@dataclass
class _Parts:
    """The stateful objects of one training: what a checkpoint saves and restores."""

    model: torch.nn.Module
    sampler: LesionBatchSampler
    transform: Compose
    loader: DataLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler


@dataclass
class _Progress:
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


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed that depends on (seed, epoch) alone."""
    return int(np.random.SeedSequence([seed % 2**64, epoch]).generate_state(1)[0])


def _seed_epoch(seed: int, epoch: int, parts: _Parts) -> None:
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


def _rng_states(parts: _Parts, device: torch.device) -> dict[str, Any]:
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


def _restore_rng_states(states: dict[str, Any], parts: _Parts, device: torch.device) -> None:
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


def _write_checkpoint(
    path: Path, fingerprint: str, epochs: int, parts: _Parts, progress: _Progress, device: torch.device
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
        "rng": _rng_states(parts, device),
        "progress": vars(progress),
    }
    with artifacts.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(checkpoint, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _read_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to this training, else None with the reason logged."""
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # Truncated by a kill during a copy, corrupt, or not a checkpoint: never fatal.
        _log(f"ignoring checkpoint {path}: it cannot be read ({_one_line(error)}); starting afresh")
        return None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        _log(f"ignoring checkpoint {path}: not a training checkpoint of format {CHECKPOINT_FORMAT}; "
             "starting afresh")
        return None
    if checkpoint.get("fingerprint") != fingerprint:
        _log(f"ignoring checkpoint {path}: it was written for other settings or data (fingerprint "
             f"{checkpoint.get('fingerprint')}, expected {fingerprint}); starting afresh")
        return None
    return checkpoint


def _restore(checkpoint: dict[str, Any], parts: _Parts, device: torch.device) -> _Progress:
    """Load a checkpoint into freshly built parts; return the progress it records."""
    parts.model.load_state_dict(checkpoint["model"])
    parts.optimizer.load_state_dict(checkpoint["optimizer"])
    if parts.scheduler is not None:
        parts.scheduler.load_state_dict(checkpoint["scheduler"])
    # A disabled scaler (CPU, bfloat16) has an empty state; a float16 one resumes its loss scale.
    if parts.scaler.is_enabled() and checkpoint["scaler"]:
        parts.scaler.load_state_dict(checkpoint["scaler"])
    _restore_rng_states(checkpoint["rng"], parts, device)
    return _Progress(**checkpoint["progress"])


# ---------------------------------------------------------------- one epoch


@dataclass
class _Setup:
    """What every epoch needs besides the stateful parts."""

    loss_fn: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    val_images: list[np.ndarray]
    val_masks: list[np.ndarray]
    roi_size: list[int]
    batch_size: int


def _training_parts(
    model_settings: dict[str, Any],
    train: dict[str, Any],
    items: list[dict[str, np.ndarray]],
    positive: list[bool],
    roi_size: list[int],
    setup: _Setup,
    num_workers: int,
) -> _Parts:
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
        pin_memory=device.type == "cuda", worker_init_fn=_worker_init,
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
    return _Parts(model, sampler, transform, loader, optimizer, scheduler, scaler)


def _train_epoch(
    parts: _Parts, setup: _Setup, epoch: int, first_step: int, stop: Callable[[], None]
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
        "train_dice": _mean([s["dice"] for s in scores]),
        "train_iou": _mean([s["iou"] for s in scores]),
        "train_pearson": _mean([s["pearson"] for s in scores]),
    }
    return train_scores, steps, int(sum(weights)), seconds


def _run_epoch(
    parts: _Parts, setup: _Setup, progress: _Progress, epoch: int, stop: Callable[[], None]
) -> tuple[dict[str, float], list[dict[str, float]], int, float]:
    """Train and validate one epoch; return its metrics row, step rows, images and loop seconds."""
    started = time.perf_counter()
    train_scores, steps, images, seconds = _train_epoch(
        parts, setup, epoch, len(progress.step_rows) + 1, stop
    )
    val = _validate(
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


# ---------------------------------------------------------------- the stage


def _resume_or_start(
    path: Path, fingerprint: str, epochs: int, device: torch.device, build: Callable[[], _Parts]
) -> tuple[_Parts, _Progress, int | None]:
    """Parts and progress restored from the checkpoint at ``path`` if it fits, else fresh ones.

    Also returns the epoch resumed from (None for a fresh start).
    """
    parts = build()
    checkpoint = _read_checkpoint(path, fingerprint)
    if checkpoint is None:
        return parts, _Progress(), None
    try:
        progress = _restore(checkpoint, parts, device)
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as error:
        _log(f"ignoring checkpoint {path}: it does not fit this training ({_one_line(error)}); "
             "starting afresh")
        # The failed load may have changed some parts; rebuild them as a fresh run would.
        return build(), _Progress(), None
    _log(f"resuming from checkpoint at epoch {progress.epoch} of {epochs} ({path})")
    return parts, progress, progress.epoch


def _record_epoch(
    progress: _Progress,
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
    parts: _Parts,
    setup: _Setup,
    progress: _Progress,
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
            _seed_epoch(seed, epoch, parts)
            row, steps, images, seconds = _run_epoch(parts, setup, progress, epoch, stop)
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
            _log(
                f"epoch {epoch}/{epochs} train_loss {row['train_loss']:.4f} "
                f"val_loss {row['val_loss']:.4f} train_dice {row['train_dice']:.4f} "
                f"val_dice_pos {row['val_dice']:.4f} lr {row['lr']:.2e} {row['seconds']:.1f}s"
                + (" *best*" if improved else "")
            )


def _final_weights(progress: _Progress, model: torch.nn.Module) -> tuple[int, float, dict]:
    """Best epoch, its validation dice_pos and its weights."""
    if progress.best_state is None:
        # Validation Dice was never defined (every prediction NaN): keep the last weights.
        return progress.epoch_rows[-1]["epoch"], float("nan"), model.state_dict()
    return progress.best_epoch, progress.best_dice, progress.best_state


def _write_artifacts(
    out: Path, progress: _Progress, model: torch.nn.Module, model_info: dict[str, Any]
) -> tuple[int, float]:
    """model.pt (best weights), the two tables and the figure; return the best epoch and Dice."""
    best_epoch, best_dice, best_state = _final_weights(progress, model)
    with artifacts.atomic_path(out / "model.pt") as tmp:
        torch.save({"state_dict": best_state, **model_info, "best_epoch": best_epoch}, tmp)
    epoch_frame = pd.DataFrame(progress.epoch_rows, columns=EPOCH_COLUMNS)
    step_frame = pd.DataFrame(progress.step_rows, columns=STEP_COLUMNS)
    artifacts.write_csv(epoch_frame, out / "metrics_by_epoch.csv")
    artifacts.write_csv(step_frame, out / "lr_by_step.csv")
    artifacts.save_figure(
        plot_training_curves(epoch_frame, step_frame, best_epoch), out / "training_curves.png"
    )
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
    """
    model_settings, train = _check_settings(settings)
    spatial_dims = model_settings.get("spatial_dims", 2)
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

    setup = _Setup(
        build_loss(train["loss"], batch_dice=bool(train.get("batch_dice", False))),
        device, amp_dtype, val_images, val_masks, roi_size,
        int(train["batch_size"]),
    )
    items = [
        {"image": image, "label": mask[None].astype(np.float32)}
        for image, mask in zip(train_images, train_masks, strict=True)
    ]
    train_positive = [bool(mask.any()) for mask in train_masks]
    fingerprint = training_fingerprint(settings, [train_images, train_masks, val_images, val_masks])
    parts, progress, resumed_from = _resume_or_start(
        checkpoint_path, fingerprint, int(train["epochs"]), device,
        functools.partial(
            _training_parts, model_settings, train, items, train_positive, roi_size, setup,
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
        _write_checkpoint(checkpoint_path, fingerprint, int(train["epochs"]), parts, progress, device)

    with _StopSignals() as signals:

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
