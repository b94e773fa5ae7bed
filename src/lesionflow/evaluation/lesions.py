"""Lesion-wise detection: connected components of prediction and reference, matched by overlap, 2D and 3D.

Must never loop in Python over lesions or pixels: matching is one contingency table from one bincount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lesionflow.evaluation.postprocess import connectivity_structure
from lesionflow.pipeline.errors import LesionflowError

CRITERIA = ("iou", "fraction")


def label_lesions(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Label the connected components of ``mask != 0``: (labels 1..n with 0 for background, n).

    ``connectivity`` is 1 (face neighbours: 4 in 2D, 6 in 3D) up to ``mask.ndim`` (every neighbour:
    8 in 2D, 26 in 3D), as in :func:`lesionflow.evaluation.postprocess.connectivity_structure`.
    """
    mask = np.asarray(mask) != 0
    labels, n = ndimage.label(mask, structure=connectivity_structure(mask.ndim, connectivity))
    return labels, int(n)


# eq=False: the generated __eq__ would compare numpy arrays with ==, which has no single truth value.
@dataclass(frozen=True, eq=False)
class LesionMatch:
    """Per-lesion outcome of :func:`match_lesions` for one image.

    ``ref_sizes`` / ``ref_detected`` have one entry per reference lesion, ``pred_sizes`` /
    ``pred_matched`` one per predicted lesion, in label order (C order of each lesion's first pixel).
    Sizes are pixel (voxel) counts.
    """

    ref_sizes: np.ndarray
    ref_detected: np.ndarray
    pred_sizes: np.ndarray
    pred_matched: np.ndarray

    @property
    def n_ref(self) -> int:
        """Number of reference lesions."""
        return int(self.ref_sizes.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted lesions."""
        return int(self.pred_sizes.size)

    @property
    def tp(self) -> int:
        """Detected reference lesions."""
        return int(np.count_nonzero(self.ref_detected))

    @property
    def fn(self) -> int:
        """Missed reference lesions."""
        return self.n_ref - self.tp

    @property
    def tp_pred(self) -> int:
        """Predicted lesions that match at least one reference lesion."""
        return int(np.count_nonzero(self.pred_matched))

    @property
    def fp(self) -> int:
        """Predicted lesions that match no reference lesion."""
        return self.n_pred - self.tp_pred

    @property
    def fp_area(self) -> int:
        """Total pixels (voxels) of the unmatched predicted lesions."""
        return int(self.pred_sizes[~self.pred_matched].sum())


def _check_matching(criterion: str, min_overlap: float) -> None:
    if criterion not in CRITERIA:
        raise LesionflowError(
            f"evaluate.lesion_matching.criterion must be one of {list(CRITERIA)}, got {criterion!r}"
        )
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, int | float | np.integer | np.floating):
        raise LesionflowError(
            f"evaluate.lesion_matching.min_overlap must be a number from 0 to 1, got {min_overlap!r}"
        )
    if not 0.0 <= float(min_overlap) <= 1.0:
        raise LesionflowError(
            f"evaluate.lesion_matching.min_overlap must be a number from 0 to 1, got {min_overlap!r}"
        )


def match_lesions(
    pred: np.ndarray,
    gt: np.ndarray,
    connectivity: int,
    criterion: str,
    min_overlap: float,
) -> LesionMatch:
    """Match the connected components of ``pred`` and ``gt`` (read as ``mask != 0``) by overlap.

    A reference lesion r and a predicted lesion p match when they share at least one pixel and their
    overlap value is at least ``min_overlap``: ``|r & p| / |r | p|`` for ``criterion="iou"``,
    ``|r & p| / |r|`` (the fraction of the reference lesion covered) for ``criterion="fraction"``;
    ``min_overlap`` 0 means any overlap. Matching is many-to-one both ways: a reference lesion is
    detected when it matches any predicted lesion (so one split into two predictions counts once, with
    both predictions matched), and a predicted lesion is matched when it matches any reference lesion
    (so one prediction covering two reference lesions detects both).
    """
    _check_matching(criterion, min_overlap)
    pred = np.asarray(pred) != 0
    gt = np.asarray(gt) != 0
    if pred.shape != gt.shape:
        raise LesionflowError(f"prediction and reference shapes differ: {pred.shape} vs {gt.shape}")
    ref_labels, n_ref = label_lesions(gt, connectivity)
    pred_labels, n_pred = label_lesions(pred, connectivity)

    # Row r, column p counts the pixels labelled r in the reference and p in the prediction; row and
    # column 0 are background, so row sums are reference sizes and column sums predicted sizes. Pixels
    # where both masks are empty are left out: they only feed the unused (0, 0) cell. The table is dense,
    # (n_ref + 1) x (n_pred + 1) cells: cheap for lesions, large only for thousands of specks in both.
    either = pred | gt
    codes = ref_labels[either].astype(np.int64) * (n_pred + 1) + pred_labels[either]
    table = np.bincount(codes, minlength=(n_ref + 1) * (n_pred + 1)).reshape(n_ref + 1, n_pred + 1)
    ref_sizes = table[1:].sum(axis=1)
    pred_sizes = table[:, 1:].sum(axis=0)
    inter = table[1:, 1:]

    if criterion == "iou":
        denom = ref_sizes[:, None] + pred_sizes[None, :] - inter
    else:
        denom = np.broadcast_to(ref_sizes[:, None], inter.shape)
    # Every lesion has at least one pixel, so no denominator is 0.
    value = inter / denom
    matched = (inter > 0) & (value >= min_overlap)
    return LesionMatch(
        ref_sizes=ref_sizes.astype(np.int64),
        ref_detected=matched.any(axis=1),
        pred_sizes=pred_sizes.astype(np.int64),
        pred_matched=matched.any(axis=0),
    )


def _check_edges(edges: Sequence[int]) -> list[int]:
    values = list(edges)
    ints = all(isinstance(e, int | np.integer) and not isinstance(e, bool) for e in values)
    increasing = ints and all(b > a for a, b in zip(values[:-1], values[1:], strict=True))
    if not increasing or any(e <= 0 for e in values):
        raise LesionflowError(
            f"evaluate.size_bins must be strictly increasing positive integers, got {values!r}"
        )
    return [int(e) for e in values]


def size_bin_labels(edges: Sequence[int]) -> list[str]:
    """Labels of the lesion-size bins cut at ``edges``: ``[50, 500]`` gives ``["<50", "50-499", ">=500"]``.

    No edges give the single bin ``["all"]``.
    """
    values = _check_edges(edges)
    if not values:
        return ["all"]
    middle = [f"{lo}-{hi - 1}" for lo, hi in zip(values[:-1], values[1:], strict=True)]
    return [f"<{values[0]}", *middle, f">={values[-1]}"]


def size_bin_index(sizes: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Bin of each size (int64 indices into :func:`size_bin_labels`); a size equal to an edge goes up."""
    values = _check_edges(edges)
    bins = np.searchsorted(np.asarray(values, dtype=np.int64), np.asarray(sizes), side="right")
    return bins.astype(np.int64)


def _check_volume_edges(edges: Sequence[float]) -> list[float]:
    values = list(edges)
    numbers = all(
        isinstance(e, int | float | np.integer | np.floating) and not isinstance(e, bool) for e in values
    )
    increasing = numbers and all(b > a for a, b in zip(values[:-1], values[1:], strict=True))
    if not increasing or not all(np.isfinite(float(e)) and e > 0 for e in values):
        raise LesionflowError(
            f"evaluate.size_bins_mm3 must be null or strictly increasing positive numbers (mm³), "
            f"got {values!r}"
        )
    return [float(e) for e in values]


def volume_bin_labels(edges: Sequence[float]) -> list[str]:
    """Labels of the lesion-volume bins (mm³) cut at ``edges`` (evaluate.size_bins_mm3).

    ``[1, 10]`` gives ``["<1", "1 to <10", ">=10"]``: volumes are continuous, so a bin is written
    with its lower edge included and its upper edge excluded. No edges give the single bin ``["all"]``.
    """
    values = _check_volume_edges(edges)
    if not values:
        return ["all"]
    middle = [f"{lo:g} to <{hi:g}" for lo, hi in zip(values[:-1], values[1:], strict=True)]
    return [f"<{values[0]:g}", *middle, f">={values[-1]:g}"]


def volume_bin_index(volumes: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Bin of each volume (int64 indices into :func:`volume_bin_labels`); -1 for an unknown (NaN) volume.

    A volume equal to an edge goes up, as in :func:`size_bin_index`.
    """
    values = _check_volume_edges(edges)
    volumes = np.asarray(volumes, dtype=np.float64)
    bins = np.searchsorted(np.asarray(values, dtype=np.float64), volumes, side="right")
    # searchsorted sorts NaN above every edge; a lesion without a physical volume is in no bin.
    return np.where(np.isnan(volumes), -1, bins).astype(np.int64)
