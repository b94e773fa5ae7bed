"""Dice, IoU, pixel Pearson r and predicted-pixel counts of a training or validation batch, at 0.5.

Never chooses a threshold or reads split 'test': these scores only track training on 'train' and 'val'.
"""

from __future__ import annotations

import math

import numpy as np
import torch

THRESHOLD = 0.5


def batch_scores(probs: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image Dice, IoU and pixel Pearson r of lesion-positive images at threshold 0.5.

    ``probs`` and ``target`` are ``(B, n_classes, *spatial)``: with several classes, each class
    present in an image is scored once.

    Computed here on the device, per batch, because training logs them for every batch;
    lesion-free images are left out (their Dice is undefined or trivially 1).
    """
    # Each (image, class) pair is scored as an image of its own; binary data has one class.
    flat_prob = probs.detach().float().flatten(2).flatten(0, 1)
    gt = target.detach().flatten(2).flatten(0, 1) > 0.5
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


def mean_score(values: list[np.ndarray]) -> float:
    """Mean of the finite per-image scores of several batches; NaN when there are none."""
    joined = np.concatenate(values) if values else np.array([])
    joined = joined[np.isfinite(joined)]
    return float(joined.mean()) if joined.size else float("nan")


def prediction_counts(probs: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Pixels predicted lesion at 0.5, lesion pixels, all pixels and images with a predicted pixel.

    Kept as counts per batch so that fractions over an epoch weigh every pixel alike; a model that
    predicts nothing (or everything) shows here long before Dice says why it is 0.
    """
    pred = probs.detach().float().flatten(1) >= THRESHOLD
    gt = target.detach().flatten(1) > 0.5
    # One transfer to the host for the three sums, not one per sum.
    sums = torch.stack([pred.sum(), gt.sum(), pred.any(dim=1).sum()]).cpu().numpy()
    return np.array([sums[0], sums[1], pred.numel(), sums[2]], dtype=np.int64)


def prediction_fractions(counts: list[np.ndarray]) -> dict[str, float]:
    """Over the batches' ``prediction_counts``: the fraction of pixels predicted lesion, the fraction
    that are lesion, and the number of images with a predicted pixel; NaN without any pixel."""
    predicted, true, pixels, images = np.sum(counts, axis=0) if counts else np.zeros(4, np.int64)
    if pixels == 0:
        return {"predicted_fraction": math.nan, "true_fraction": math.nan, "images_with_prediction": 0}
    return {
        "predicted_fraction": float(predicted / pixels),
        "true_fraction": float(true / pixels),
        "images_with_prediction": int(images),
    }
