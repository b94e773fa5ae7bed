"""Per-sample loss weights of the regression training set: none, or inverse frequency of score bins.

Never sees split 'val' or 'test': weights are computed from the training scores alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionflow.data.score_column import score_bin_index, score_bin_labels
from lesionflow.pipeline.errors import LesionflowError

METHODS = ("none", "inverse_frequency")


def checked_cut_points(cut_points: Sequence[float], key: str) -> list[float]:
    """``cut_points`` as floats, if finite and strictly increasing; else a LesionflowError naming ``key``."""
    try:
        cuts = [float(cut) for cut in cut_points]
    except (TypeError, ValueError):
        raise LesionflowError(f"{key}: expected a list of numbers, got {cut_points!r}") from None
    increasing = all(b > a for a, b in zip(cuts, cuts[1:], strict=False))
    if not cuts or not all(math.isfinite(c) for c in cuts) or not increasing:
        raise LesionflowError(
            f"{key}: expected one or more strictly increasing finite cut points, got {cut_points!r}"
        )
    return cuts


def inverse_frequency_weights(
    scores: Sequence[float] | np.ndarray, cut_points: Sequence[float]
) -> np.ndarray:
    """Weight of each training sample: N / (K * n_b) for a sample in bin b.

    N is the number of samples, K the number of non-empty bins, n_b the samples in bin b (bins as
    ``data.score_column.score_bin_index``: below the first cut is bin 0, a score on a cut point is
    in the upper bin, the split's score bins).
    The weights average 1 and every non-empty bin carries the same total weight, N / K.
    """
    bins = score_bin_index(scores, cut_points)
    if bins.size == 0:
        return np.ones(0)
    counts = np.bincount(bins, minlength=len(cut_points) + 1)
    non_empty = int(np.count_nonzero(counts))
    return bins.size / (non_empty * counts[bins].astype(float))


def training_weights(
    method: str, scores: Sequence[float] | np.ndarray, cut_points: Sequence[float]
) -> tuple[np.ndarray, dict[str, Any]]:
    """The per-sample weights of ``train.sample_weights`` and a summary of them per score bin.

    The summary is ``{"method", "cut_points", "bins": [{"bin", "n", "weight"}, ...]}``; ``weight``
    is the weight of one sample of that bin (None for an empty bin).
    """
    if method not in METHODS:
        raise LesionflowError(
            f"train.sample_weights: expected one of {', '.join(METHODS)}, got {method!r}"
        )
    cuts = checked_cut_points(cut_points, "train.weight_bins")
    values = np.asarray(scores, dtype=float)
    if method == "none":
        weights = np.ones(values.size)
    else:
        weights = inverse_frequency_weights(values, cuts)
    bins = score_bin_index(values, cuts)
    rows = []
    for index, label in enumerate(score_bin_labels(cuts)):
        members = bins == index
        rows.append({
            "bin": label,
            "n": int(members.sum()),
            "weight": float(weights[members][0]) if members.any() else None,
        })
    return weights, {"method": method, "cut_points": cuts, "bins": rows}
