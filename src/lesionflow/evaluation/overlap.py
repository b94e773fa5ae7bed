"""Dice and IoU from pixel counts, and the point summary of a table of them that tuning chooses by.

Must never label lesions, measure surfaces or read a file: the tune stage runs this module, and its
key must not carry the evaluation metrics it never computes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def dice_from_counts(
    inter: np.ndarray, pred_pixels: np.ndarray, gt_pixels: np.ndarray
) -> np.ndarray:
    """Dice from pixel counts; NaN where reference and prediction are both empty."""
    inter = np.asarray(inter, dtype=np.float64)
    denom = np.asarray(pred_pixels, dtype=np.float64) + np.asarray(gt_pixels, dtype=np.float64)
    # Both empty: overlap is undefined, not perfect; scoring it 1 inflated the users' means.
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * inter / np.where(denom > 0, denom, 1.0), np.nan)


def iou_from_counts(
    inter: np.ndarray, pred_pixels: np.ndarray, gt_pixels: np.ndarray
) -> np.ndarray:
    """IoU from pixel counts; NaN where reference and prediction are both empty."""
    inter = np.asarray(inter, dtype=np.float64)
    union = np.asarray(pred_pixels, dtype=np.float64) + np.asarray(gt_pixels, dtype=np.float64)
    union = union - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), np.nan)


def _mean_defined(values: pd.Series) -> tuple[float, int, int]:
    """Mean of the defined values, how many were used, how many NaN were excluded."""
    values = pd.to_numeric(values, errors="coerce").astype("float64")
    defined = values.dropna()
    mean = float(defined.mean()) if len(defined) else float("nan")
    return mean, int(len(defined)), int(values.isna().sum())


def dice_all_values(per_image: pd.DataFrame) -> np.ndarray:
    """Per-image Dice with the old convention: empty reference and empty prediction count as 1."""
    dice = pd.to_numeric(per_image["dice"], errors="coerce").astype("float64").to_numpy()
    both_empty = (per_image["gt_pixels"].to_numpy() == 0) & (per_image["pred_pixels"].to_numpy() == 0)
    return np.where(both_empty, 1.0, dice)


def segmentation_summary(per_image: pd.DataFrame) -> dict:
    """Point values of dice_pos, iou_pos, dice_all and the false-positive rate on empty images.

    What tuning chooses between (evaluation.summary adds intervals, lesions and presence); each
    mean comes with its n. Needs the columns dice, iou, gt_pixels, pred_pixels.
    """
    gt_pos = per_image["gt_pixels"].to_numpy() > 0
    pred_pos = per_image["pred_pixels"].to_numpy() > 0
    pos = per_image[gt_pos]
    out: dict = {"n_gt_positive": int(gt_pos.sum()), "n_gt_empty": int((~gt_pos).sum())}
    for name, values in (
        ("dice_pos", pos["dice"]),
        ("iou_pos", pos["iou"]),
        ("dice_all", pd.Series(dice_all_values(per_image))),
        ("false_positive_rate_empty", pd.Series(pred_pos[~gt_pos].astype(float))),
    ):
        out[name], out[f"{name}_n"], _ = _mean_defined(values)
    return out
