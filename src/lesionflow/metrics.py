"""Segmentation and lesion-presence metrics per image and per split, for 2D and 3D alike.

Must never turn an undefined value (empty reference and empty prediction) into 0 or 1 silently.

Conventions (also written into every ``summary.json`` under ``conventions``):

- dice and iou are NaN when reference and prediction are both empty (undefined, not 1);
  they are 0 when exactly one of them is empty.
- precision is NaN when the prediction is empty; recall is NaN when the reference is empty.
- pearson is NaN when the probability map (or prediction) or the reference is constant.
- ``dice_pos`` / ``iou_pos`` average over lesion-positive references only.
- ``dice_all`` averages over all images and counts empty reference + empty prediction as 1;
  it is reported only with its convention string beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

PER_IMAGE_COLUMNS = [
    "image_id",
    "subject",
    "dice",
    "iou",
    "precision",
    "recall",
    "pearson",
    "gt_pixels",
    "pred_pixels",
    "presence_score",
    "presence_pred",
]

DICE_ALL_CONVENTION = "empty reference and empty prediction count as 1; dice_pos excludes them"

CONVENTIONS = {
    "dice_iou": "NaN when reference and prediction are both empty; 0 when exactly one is empty",
    "precision": "NaN when the prediction is empty",
    "recall": "NaN when the reference is empty",
    "pearson": "Pearson r of probability map (or prediction) and reference over all pixels; "
    "NaN when either is constant",
    "dice_pos": "mean Dice over images whose reference is non-empty",
    "iou_pos": "mean IoU over images whose reference is non-empty",
    "dice_all": DICE_ALL_CONVENTION,
    "false_positive_rate_empty": "fraction of empty-reference images with any predicted pixel",
    "presence": "lesion presence = reference non-empty; ROC-AUC and AP from scikit-learn, "
    "NaN when only one class is present",
    "means": "every mean excludes NaN values and reports how many it excluded in nan_counts",
}


# ---------------------------------------------------------------------------------------------
# Batch functions: a stack (N, ...) of masks, any number of spatial dimensions.
# ---------------------------------------------------------------------------------------------


def _flat(stack: np.ndarray, dtype) -> np.ndarray:
    arr = np.asarray(stack, dtype=dtype)
    return arr.reshape(arr.shape[0], -1)


def overlap_counts(preds: np.ndarray, gts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (intersection, pred_pixels, gt_pixels) per image for stacks of shape (N, ...)."""
    p = _flat(preds, bool)
    g = _flat(gts, bool)
    inter = np.count_nonzero(p & g, axis=1)
    return inter, np.count_nonzero(p, axis=1), np.count_nonzero(g, axis=1)


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


def dice_per_image(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Dice per image of two bool stacks (N, ...); NaN where both masks are empty."""
    return dice_from_counts(*overlap_counts(preds, gts))


def iou_per_image(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU per image of two bool stacks (N, ...); NaN where both masks are empty."""
    return iou_from_counts(*overlap_counts(preds, gts))


def precision_per_image(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Precision per image; NaN where the prediction is empty (nothing was claimed)."""
    inter, pred_pixels, _ = overlap_counts(preds, gts)
    return np.where(pred_pixels > 0, inter / np.maximum(pred_pixels, 1), np.nan)


def recall_per_image(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Recall per image; NaN where the reference is empty (nothing to find)."""
    inter, _, gt_pixels = overlap_counts(preds, gts)
    return np.where(gt_pixels > 0, inter / np.maximum(gt_pixels, 1), np.nan)


def pearson_per_image(values: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Pearson r per image between a map (probabilities or mask) and the reference mask.

    NaN where either is constant over the image (the correlation is undefined).
    """
    x = _flat(values, np.float64)
    y = _flat(gts, np.float64)
    # Test constancy exactly rather than via a variance that float rounding can leave non-zero.
    constant = (x.min(axis=1) == x.max(axis=1)) | (y.min(axis=1) == y.max(axis=1))
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", xc, yc)
    den = np.sqrt(np.einsum("ij,ij->i", xc, xc) * np.einsum("ij,ij->i", yc, yc))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / np.where(constant, 1.0, den)
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


# ---------------------------------------------------------------------------------------------
# One image and a table of images
# ---------------------------------------------------------------------------------------------


def image_metrics(pred: np.ndarray, gt: np.ndarray, prob: np.ndarray | None = None) -> dict:
    """Dice, IoU, precision, recall, Pearson r and pixel counts of one image (2D or 3D).

    ``prob`` is the probability map used for Pearson r; the binary prediction is used when
    it is None. See the module docstring for the NaN conventions.
    """
    p = np.asarray(pred, dtype=bool)[None]
    g = np.asarray(gt, dtype=bool)[None]
    inter, pred_pixels, gt_pixels = overlap_counts(p, g)
    values = p if prob is None else np.asarray(prob, dtype=np.float64)[None]
    return {
        "dice": float(dice_from_counts(inter, pred_pixels, gt_pixels)[0]),
        "iou": float(iou_from_counts(inter, pred_pixels, gt_pixels)[0]),
        "precision": float(precision_per_image(p, g)[0]),
        "recall": float(recall_per_image(p, g)[0]),
        "pearson": float(pearson_per_image(values, g)[0]),
        "gt_pixels": int(gt_pixels[0]),
        "pred_pixels": int(pred_pixels[0]),
    }


def per_image_table(
    ids: Sequence[str],
    subjects: Sequence[str],
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    probs: Sequence[np.ndarray] | None = None,
    presence_scores: Sequence[float] | None = None,
    presence_preds: Sequence[bool] | None = None,
) -> pd.DataFrame:
    """One row per image with the columns in :data:`PER_IMAGE_COLUMNS`.

    Images may differ in shape, so they are scored one at a time. Missing presence scores or
    predictions are left NaN (never derived silently).
    """
    n = len(ids)
    rows = []
    for i in range(n):
        prob = None if probs is None else probs[i]
        row = {"image_id": str(ids[i]), "subject": str(subjects[i])}
        row.update(image_metrics(preds[i], gts[i], prob))
        row["presence_score"] = np.nan if presence_scores is None else float(presence_scores[i])
        row["presence_pred"] = np.nan if presence_preds is None else bool(presence_preds[i])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=PER_IMAGE_COLUMNS)
    return frame.astype({"gt_pixels": "int64", "pred_pixels": "int64"})


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


def _mean_defined(values: pd.Series) -> tuple[float, int, int]:
    """Mean of the defined values, how many were used, how many NaN were excluded."""
    values = pd.to_numeric(values, errors="coerce").astype("float64")
    defined = values.dropna()
    mean = float(defined.mean()) if len(defined) else float("nan")
    return mean, int(len(defined)), int(values.isna().sum())


def segmentation_summary(per_image: pd.DataFrame) -> dict:
    """Dice/IoU over lesion-positive images, dice_all and the false-positive rate on empty ones.

    Needs the columns dice, iou, gt_pixels, pred_pixels (precision, recall, pearson if present).
    """
    gt_pos = per_image["gt_pixels"].to_numpy() > 0
    pred_pos = per_image["pred_pixels"].to_numpy() > 0
    pos = per_image[gt_pos]
    out: dict = {
        "n_images": int(len(per_image)),
        "n_gt_positive": int(gt_pos.sum()),
        "n_gt_empty": int((~gt_pos).sum()),
    }
    nan_counts: dict = {}
    for name, column, frame in (
        ("dice_pos", "dice", pos),
        ("iou_pos", "iou", pos),
        ("precision_pos", "precision", pos),
        ("recall_pos", "recall", pos),
        ("pearson_mean", "pearson", per_image),
    ):
        if column not in frame:
            continue
        mean, n, n_nan = _mean_defined(frame[column])
        out[name], out[f"{name}_n"] = mean, n
        nan_counts[name] = n_nan

    # dice_all: the users' old convention, kept only with its name beside it.
    dice = pd.to_numeric(per_image["dice"], errors="coerce").astype("float64").to_numpy()
    both_empty = ~gt_pos & ~pred_pos
    dice_all_values = np.where(both_empty, 1.0, dice)
    mean, n, n_nan = _mean_defined(pd.Series(dice_all_values))
    out["dice_all"], out["dice_all_n"] = mean, n
    out["dice_all_convention"] = DICE_ALL_CONVENTION
    nan_counts["dice_all"] = n_nan

    n_empty = int((~gt_pos).sum())
    out["false_positive_rate_empty"] = float(pred_pos[~gt_pos].mean()) if n_empty else float("nan")
    out["false_positive_rate_empty_n"] = n_empty
    out["nan_counts"] = nan_counts
    return out


def presence_summary(per_image: pd.DataFrame) -> dict:
    """ROC-AUC, AP, sensitivity and specificity of lesion presence (reference non-empty)."""
    truth = per_image["gt_pixels"].to_numpy() > 0
    scores = pd.to_numeric(per_image["presence_score"], errors="coerce").astype("float64")
    defined = scores.notna().to_numpy()
    y = truth[defined]
    s = scores.to_numpy()[defined]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    out: dict = {"presence_n_positive": n_pos, "presence_n_negative": n_neg}
    if n_pos and n_neg:
        out["presence_roc_auc"] = float(roc_auc_score(y, s))
        out["presence_ap"] = float(average_precision_score(y, s))
    else:
        # One class only: ROC-AUC and AP are undefined, say so instead of guessing.
        out["presence_roc_auc"] = float("nan")
        out["presence_ap"] = float("nan")
    nan_counts = {"presence_score": int((~defined).sum())}

    preds = per_image["presence_pred"]
    known = preds.notna().to_numpy()
    called = preds.where(preds.notna(), False).astype(bool).to_numpy()
    pos_known, neg_known = truth & known, ~truth & known
    out["presence_sensitivity"] = (
        float(called[pos_known].mean()) if pos_known.any() else float("nan")
    )
    out["presence_sensitivity_n"] = int(pos_known.sum())
    out["presence_specificity"] = (
        float((~called[neg_known]).mean()) if neg_known.any() else float("nan")
    )
    out["presence_specificity_n"] = int(neg_known.sum())
    nan_counts["presence_pred"] = int((~known).sum())
    out["nan_counts"] = nan_counts
    return out


def summarise(per_image: pd.DataFrame) -> dict:
    """Summary of a per-image table: segmentation means with their n and presence metrics.

    Every mean excludes NaN and reports the number excluded in ``nan_counts``.
    """
    seg = segmentation_summary(per_image)
    pres = presence_summary(per_image)
    nan_counts = {**seg.pop("nan_counts"), **pres.pop("nan_counts")}
    return {**seg, **pres, "nan_counts": nan_counts}
