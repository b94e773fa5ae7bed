"""Dice, IoU and pixel Pearson r of a training or validation batch, on the device, at threshold 0.5.

Never chooses a threshold or reads split 'test': these scores only track training on 'train' and 'val'.
"""

from __future__ import annotations

import numpy as np
import torch

THRESHOLD = 0.5


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


def mean_score(values: list[np.ndarray]) -> float:
    """Mean of the finite per-image scores of several batches; NaN when there are none."""
    joined = np.concatenate(values) if values else np.array([])
    joined = joined[np.isfinite(joined)]
    return float(joined.mean()) if joined.size else float("nan")
