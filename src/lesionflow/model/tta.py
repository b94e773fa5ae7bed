"""Test-time augmentation: probabilities averaged over flips and quarter turns, each inverted.

Never thresholds or post-processes: it returns probabilities; tuning decides what they mean.

A dual-head model's presence logit is a scalar per window, which no flip or turn moves: its
probabilities are averaged over the transforms as they are.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lesionflow.data.tiles import crop_or_pad
from lesionflow.model.dual_head import DualHead
from lesionflow.model.networks import forward_logits, forward_with_presence
from lesionflow.model.presence import mean_probability_logit
from lesionflow.pipeline.errors import LesionflowError

# Spatial tensors are (B, C, *spatial): spatial axis i is tensor dimension 2 + i. Quarter turns act
# on the first two spatial axes, so the same turns serve (H, W) images and (H, W, D) volumes.
_LEAD = 2
_TURN_AXES = (0, 1)
# There is a mirror flip of every set of spatial axes a volume has, named by them: flip0 ... flip012.
_MAX_SPATIAL_DIMS = 3


@dataclass(frozen=True)
class TTATransform:
    """A spatial transform, its inverse, the spatial axes it moves, whether it swaps the first two."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]
    axes: tuple[int, ...] = ()
    swaps_axes: bool = False


def _flip(axes: tuple[int, ...]) -> TTATransform:
    dims = tuple(_LEAD + axis for axis in axes)

    def flip(x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=dims)

    # A flip is its own inverse.
    return TTATransform(flip, flip, axes)


def _turn(k: int) -> TTATransform:
    dims = tuple(_LEAD + axis for axis in _TURN_AXES)
    return TTATransform(
        lambda x: torch.rot90(x, k=k, dims=dims),
        lambda x: torch.rot90(x, k=-k, dims=dims),
        _TURN_AXES,
        swaps_axes=k % 2 == 1,
    )


def _mirror_flips() -> dict[str, TTATransform]:
    subsets = itertools.chain.from_iterable(
        itertools.combinations(range(_MAX_SPATIAL_DIMS), n) for n in range(1, _MAX_SPATIAL_DIMS + 1)
    )
    return {"flip" + "".join(map(str, axes)): _flip(axes) for axes in subsets}


# The 2D names came first: vflip is flip0, hflip flip1 and hvflip flip01, with the same dims.
TRANSFORMS: dict[str, TTATransform] = {
    "identity": TTATransform(lambda x: x, lambda x: x),
    "hflip": _flip((1,)),
    "vflip": _flip((0,)),
    "hvflip": _flip((0, 1)),
    "rot90": _turn(1),
    "rot180": _turn(2),
    "rot270": _turn(3),
    **_mirror_flips(),
}


def checked_names(names: Sequence[str]) -> list[str]:
    """``names`` as a list, if every one is a known transform; else the user's `infer.tta` mistake."""
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown or not names:
        raise LesionflowError(
            f"infer.tta: unknown transform(s) {unknown!r}; expected a non-empty list of "
            f"{', '.join(TRANSFORMS)}"
        )
    return list(names)


def get_transforms(names: Sequence[str], spatial_dims: int) -> list[TTATransform]:
    """The TTA transforms named ``names`` for images of ``spatial_dims`` spatial axes.

    Raises LesionflowError naming `infer.tta` for an unknown name, or for a transform that moves
    an axis the images do not have (``flip2`` of a 2D image).
    """
    chosen = {name: TRANSFORMS[name] for name in checked_names(names)}
    for name, transform in chosen.items():
        if any(axis >= spatial_dims for axis in transform.axes):
            raise LesionflowError(
                f"infer.tta: {name} moves spatial axis {max(transform.axes)}, but the images have "
                f"{spatial_dims} spatial axes (0 to {spatial_dims - 1})"
            )
    return [chosen[name] for name in names]


def _roi_for(transform: TTATransform, roi_size: Sequence[int] | None) -> list[int] | None:
    # The training patch turns with the image, so a rotated image of patch shape is still one pass.
    if roi_size is None:
        return None
    roi = list(roi_size)
    if transform.swaps_axes:
        roi[0], roi[1] = roi[1], roi[0]
    return roi


def _transform_mean(batch: torch.Tensor, transforms: Sequence[TTATransform], roi_size, forward) -> tuple:
    """Sigmoid maps averaged over ``transforms`` after inverting each, and what ``forward(x, roi)``
    gave beside the logits for each transform. One channel per lesion class (per-class logits,
    see ``class_heads``); binary data has one."""
    total: torch.Tensor | None = None
    extras = []
    for transform in transforms:
        logits, extra = forward(transform.forward(batch), _roi_for(transform, roi_size))
        probs = transform.inverse(torch.sigmoid(logits.float()))
        total = probs if total is None else total + probs
        extras.append(extra)
    return total / len(transforms), extras


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module,
    batch: torch.Tensor,
    transforms: Sequence[TTATransform],
    roi_size: Sequence[int] | None,
    sw_batch_size: int,
    sw_overlap: float,
) -> torch.Tensor:
    """Sigmoid probabilities (B, 1, *spatial) averaged over ``transforms`` after inverting each.

    ``sw_overlap`` is infer.sw_overlap (see :func:`lesionflow.model.networks.forward_logits`).
    """
    probs, _ = _transform_mean(
        batch, transforms, roi_size,
        lambda x, roi: (forward_logits(model, x, roi, sw_batch_size, sw_overlap), None),
    )  # fmt: skip
    return probs


def predict_probabilities(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    transforms: Sequence[str],
    roi_size: Sequence[int] | None,
    batch_size: int,
    device: torch.device | str,
    sw_overlap: float,
    progress: Callable[[int], object] | None = None,
) -> list[np.ndarray]:
    """Lesion probability maps (float32, spatial shape) of channel-first ``images``, in order.

    Images of equal shape are stacked into batches of ``batch_size``; ``progress(n)`` is called
    after each batch with the number of images it held.
    """
    checked_names(transforms)
    model.eval()
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        by_shape.setdefault(tuple(image.shape), []).append(index)
    results: list[np.ndarray | None] = [None] * len(images)
    for shape, indices in by_shape.items():
        chosen = get_transforms(transforms, len(shape) - 1)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = torch.from_numpy(np.stack([images[i] for i in chunk])).float().to(device)
            probs = predict_batch(model, batch, chosen, roi_size, batch_size, sw_overlap)
            for i, prob in zip(chunk, class_maps(probs), strict=True):
                results[i] = prob.astype(np.float32)
            if progress is not None:
                progress(len(chunk))
    return results  # type: ignore[return-value]


@torch.no_grad()
def predict_batch_with_presence(
    model: torch.nn.Module,
    batch: torch.Tensor,
    transforms: Sequence[TTATransform],
    roi_size: Sequence[int] | None,
    sw_batch_size: int,
    sw_overlap: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`predict_batch`, and each window's presence logit (B,), float64.

    The logit of the mean over ``transforms`` of the head's sigmoid (the highest over sliding
    windows within a batch item, see :func:`lesionflow.model.networks.forward_with_presence`);
    NaN for a model without a presence head, whose maps come from :func:`predict_batch` alone.
    """
    if not isinstance(model, DualHead):
        nan = torch.full((batch.shape[0],), torch.nan, dtype=torch.float64)
        return predict_batch(model, batch, transforms, roi_size, sw_batch_size, sw_overlap), nan
    probs, presence = _transform_mean(
        batch, transforms, roi_size,
        lambda x, roi: forward_with_presence(model, x, roi, sw_batch_size, sw_overlap),
    )  # fmt: skip
    return probs, mean_probability_logit(torch.stack(presence)).cpu()


def windows_across_images(
    model: torch.nn.Module,
    windows: Iterable[tuple[Any, tuple[int, ...], np.ndarray]],
    transforms: Sequence[str],
    roi_size: Sequence[int] | None,
    batch_size: int,
    device: torch.device | str,
    sw_overlap: float,
) -> Iterator[tuple[Any, tuple[int, ...], np.ndarray, float]]:
    """Yield ``(owner, origin, probability map, presence logit)`` of each ``(owner, origin, window)``,
    in order.

    Consecutive windows of one shape share batches of ``batch_size`` whoever they belong to, so
    small images are not predicted one at a time; each batch goes through every TTA transform, and
    windows are taken from ``windows`` only as a batch needs them (one batch on the device). The
    presence logit is :func:`predict_batch_with_presence`'s: NaN for a model without a presence head.
    """
    model.eval()
    pending: list[tuple[Any, tuple[int, ...], np.ndarray]] = []
    for item in windows:
        if pending and (len(pending) == batch_size or pending[0][2].shape != item[2].shape):
            yield from _predicted(model, pending, transforms, roi_size, batch_size, device, sw_overlap)
            pending = []
        pending.append(item)
    if pending:
        yield from _predicted(model, pending, transforms, roi_size, batch_size, device, sw_overlap)


@torch.no_grad()
def _predicted(model, pending, transforms, roi_size, batch_size, device, sw_overlap) -> list[tuple]:
    chosen = get_transforms(transforms, pending[0][2].ndim - 1)
    batch = torch.from_numpy(np.stack([window for *_, window in pending])).float().to(device)
    probs, presence = predict_batch_with_presence(model, batch, chosen, roi_size, batch_size, sw_overlap)
    maps = class_maps(probs)
    return [
        (owner, origin, prob.astype(np.float32), float(logit))
        for (owner, origin, _), prob, logit in zip(pending, maps, presence.tolist(), strict=True)
    ]


def class_maps(probs: torch.Tensor) -> np.ndarray:
    """A batch's maps on the host: ``(B, *spatial)`` for one class (binary data, as ever), else
    ``(B, n_classes, *spatial)``."""
    return (probs[:, 0] if probs.shape[1] == 1 else probs).cpu().numpy()


def window_predictions(
    model: torch.nn.Module,
    image: np.ndarray,
    origins: Sequence[Sequence[int]],
    window: Sequence[int],
    transforms: Sequence[str],
    roi_size: Sequence[int] | None,
    batch_size: int,
    device: torch.device | str,
    sw_overlap: float,
) -> Iterator[tuple[tuple[int, ...], np.ndarray, float]]:
    """Yield ``(origin, probability map, presence logit)`` of each window of one ``(C, *spatial)`` image.

    Windows of shape ``window`` start at ``origins`` (zero-padded past the border) and go through
    the network as :func:`windows_across_images` batches them. Stitching the maps with Gaussian
    weights gives MONAI's sliding-window inference over the same windows.
    """
    get_transforms(transforms, len(window))  # a bad name fails before any window is cut
    crops = ((None, tuple(int(v) for v in o), crop_or_pad(image, o, window)) for o in origins)
    for _, origin, prob, logit in windows_across_images(
        model, crops, transforms, roi_size, batch_size, device, sw_overlap
    ):
        yield origin, prob, logit
