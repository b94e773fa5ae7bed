"""How reports write metrics: their display names, and numbers, intervals, counts and p-values as text.

Must never compute or change a value: an undefined one is written as undefined, never as 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# What a table shows for a key that is absent from the artifact it reads.
MISSING = "missing"

# Names of summary.json metrics in tables and panel titles.
METRIC_NAMES = {
    "n_images": "images",
    "n_gt_positive": "lesion-positive images",
    "n_gt_empty": "lesion-free images",
    "dice_pos": "Dice, lesion-positive images",
    "iou_pos": "IoU, lesion-positive images",
    "precision_pos": "pixel precision, lesion-positive images",
    "recall_pos": "pixel recall, lesion-positive images",
    # Distances are in mm for NIfTI volumes, pixels for pictures (summary.json: distance_unit).
    "hd95_pos": "HD95 (mm, or pixels for pictures), lesion-positive images",
    "msd_pos": "mean surface distance (mm, or pixels for pictures)",
    "dice_all": "Dice, all images",
    "false_positive_rate_empty": "false-positive rate, lesion-free images",
    "fp_lesions_per_empty_image": "false-positive lesions per lesion-free image",
    "lesion_sensitivity": "lesion-wise sensitivity",
    "lesion_precision": "lesion-wise precision",
    "lesion_f1": "lesion-wise F1",
    "presence_roc_auc": "lesion presence ROC-AUC",
    "presence_ap": "lesion presence average precision",
    "presence_sensitivity": "presence sensitivity at the locked threshold",
    "presence_specificity": "presence specificity at the locked threshold",
}
# Short names, where several metrics share one line (the ranks a mean rank averages, axis labels).
SHORT_NAMES = {"dice_pos": "Dice", "iou_pos": "IoU", "presence_roc_auc": "ROC-AUC", "presence_ap": "AP"}
# Headings of the compare notebook's rankings and axis labels of its figures.
COMPARISON_NAMES = {
    "dice_pos": f"{METRIC_NAMES['dice_pos']} (dice_pos)",
    "presence_roc_auc": "lesion-presence ROC-AUC",
    "presence_ap": "lesion-presence average precision (AP)",
    "lesion_f1": METRIC_NAMES["lesion_f1"],
    "mean_rank": "mean rank",
}
PEARSON_NAME = "Pearson r (probability vs mask)"
# Panel titles of the per-epoch curves (metrics_by_epoch.csv columns train_<name>, val_<name>).
EPOCH_TITLES = {
    "loss": "Loss",
    "dice": METRIC_NAMES["dice_pos"],
    "iou": METRIC_NAMES["iou_pos"],
    "pearson": PEARSON_NAME,
}
# The training report's quality panels: (column suffix, panel title, y label), in panel order.
QUALITY_PANELS = (
    ("dice", SHORT_NAMES["dice_pos"], SHORT_NAMES["dice_pos"]),
    ("iou", "IoU (Jaccard)", SHORT_NAMES["iou_pos"]),
    ("pearson", "Pearson correlation", PEARSON_NAME),
)


def is_undefined(value: Any) -> bool:
    """True for None and NaN: values a table must show as undefined, never as numbers."""
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def format_value(value: Any, digits: int = 4, n: Any = None) -> str:
    """A number as text; None/NaN as 'undefined (n=..)' so a missing Dice is never read as 0."""
    if is_undefined(value):
        return "undefined" if n is None else f"undefined (n={n})"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}f}"
    return str(value)


def section_interval_text(section: Mapping[str, Any], key: str) -> str:
    """'[low, high]' of ``key`` in a summary section (``<key>_ci_low``, ``<key>_ci_high``); '' when
    neither bound is there."""
    low, high = section.get(f"{key}_ci_low"), section.get(f"{key}_ci_high")
    if low is None and high is None:
        return ""
    return f"[{format_value(low, 3)}, {format_value(high, 3)}]"


def interval_text(value: float, low: float, high: float, digits: int = 3, signed: bool = False) -> str:
    """'0.712 [0.650, 0.770]'; 'undefined' for NaN; '(no interval)' when the interval is undefined."""
    if math.isnan(value):
        return format_value(value)

    def text(number: float) -> str:
        return f"{number:+.{digits}f}" if signed else format_value(float(number), digits)

    if math.isnan(low) or math.isnan(high):
        return f"{text(value)} (no interval)"
    return f"{text(value)} [{text(low)}, {text(high)}]"


def signed_text(value: float, digits: int = 3) -> str:
    """A difference with its sign ('+0.050'); 'undefined' for NaN."""
    return format_value(value, digits) if math.isnan(value) else f"{value:+.{digits}f}"


def count_text(value: float) -> str:
    """A count read from a float column as a whole number; 'n/a' for NaN."""
    return "n/a" if math.isnan(value) else str(int(value))


def p_value_text(p: float) -> str:
    """A p-value as text: '<0.001' below 0.001, 'undefined' for NaN (no pairs or no difference)."""
    if math.isnan(p):
        return "undefined"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
