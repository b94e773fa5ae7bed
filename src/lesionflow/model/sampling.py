"""What the network sees at each training step: lesion-oversampled batches, augmentations, loader workers.

Never touches split 'val' or 'test': it draws from the training images it is given, and nothing else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data.utils import worker_init_fn as monai_worker_init_fn
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)
from torch.utils.data import Sampler

from lesionflow.model.interrupt import ignore_stop_signals


class LesionBatchSampler(Sampler[list[int]]):
    """Batches of indices; with ``positive_fraction`` > 0 each batch holds that share of positives.

    Both pools are walked in fresh random orders, so every image is seen before any repeats.
    ``positive_fraction`` 0 is plain shuffling. One epoch is ``ceil(n / batch_size)`` batches.
    ``positive`` is one flag per image, or, for several lesion classes, one row of flags per image
    (one per class): each positive draw then first picks a class, uniformly among those some image
    has, and then an image with it, so a rare class is drawn as often as a common one.
    """

    def __init__(
        self, positive: Sequence[bool] | np.ndarray, batch_size: int, positive_fraction: float, seed: int
    ) -> None:
        flags = np.asarray(positive, dtype=bool)
        by_class = [np.flatnonzero(column) for column in flags.T] if flags.ndim == 2 else []
        # One class with positives draws as binary data does.
        self.by_class = [pool for pool in by_class if len(pool)] if len(by_class) > 1 else []
        flags = flags.any(axis=1) if flags.ndim == 2 else flags
        self.positive = np.flatnonzero(flags)
        self.negative = np.flatnonzero(~flags)
        self.n = len(flags)
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
        if len(self.by_class) > 1:
            positives = self._class_draws([self._stream(pool) for pool in self.by_class])
        for _ in range(len(self)):
            batch = [next(positives) for _ in range(n_pos)]
            batch += [next(negatives) for _ in range(self.batch_size - n_pos)]
            yield [batch[i] for i in self.rng.permutation(len(batch))]


    def _class_draws(self, streams: list[Iterator[int]]) -> Iterator[int]:
        while True:
            yield next(streams[int(self.rng.integers(len(streams)))])


def training_transforms(
    augment: dict[str, bool], patch_size: Sequence[int] | None, spatial_shape: Sequence[int]
) -> Compose:
    """MONAI dictionary transforms applied jointly to ``image`` and ``label`` (``(C, *spatial)``).

    Crops of ``patch_size`` (half centred on a lesion voxel; smaller items zero-padded first), a
    random flip of every spatial axis, quarter turns in the first two spatial axes (when the crop
    is square there) and intensity jitter, as ``augment`` asks. ``spatial_shape`` is the items'
    spatial shape, used when there is no patch.
    """
    keys = ["image", "label"]
    steps: list[Any] = []
    if patch_size is not None:
        # An item smaller than the patch along an axis (a head cropped to few slices) is padded
        # with zeros, the background of a normalised image, so every crop has the patch's shape.
        steps.append(SpatialPadd(keys, spatial_size=list(patch_size)))
        # Half of the crops are centred on a lesion pixel, so small lesions are not drowned out.
        steps.append(RandCropByPosNegLabeld(
            keys, label_key="label", spatial_size=list(patch_size), pos=1.0, neg=1.0,
            num_samples=1,
        ))
    shape = list(patch_size) if patch_size is not None else list(spatial_shape)
    if augment["flip"]:
        # One flip per spatial axis, in axis order: 2D keeps its two flips and random draws.
        steps += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(len(shape))]
    # A quarter turn of a non-square crop would give batches of mixed shapes; flips cover 180.
    if augment["rotate90"] and shape[0] == shape[1]:
        steps.append(RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(0, 1)))
    if augment["intensity"]:
        steps += [
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        ]
    steps.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(steps)


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


def worker_init(worker_id: int) -> None:
    """Start a loader worker: stop signals left to the main process, transforms seeded as MONAI does."""
    ignore_stop_signals()
    monai_worker_init_fn(worker_id)
