"""The analysis notebook's metric tables and figures: summary, image groups, per-image Dice, detection.

Must never compute a metric the evaluate stage did not: it only reads, arranges and plots them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lesionflow.reports.bands import BAND_COLOURS, BAND_NAMES, band_labels, dice_band
from lesionflow.reports.labels import METRIC_NAMES, MISSING, format_value, section_interval_text

# ---------------------------------------------------------------- run summary


# (summary key, key of its sample size when the metric has no <key>_n of its own, note); the
# label of each is labels.METRIC_NAMES[key].
_SUMMARY_ROWS = (
    ("n_images", None, ""),
    ("n_gt_positive", None, ""),
    ("n_gt_empty", None, ""),
    ("dice_pos", "dice_pos_n", "mean over images with a lesion"),
    ("iou_pos", "dice_pos_n", "mean over images with a lesion"),
    ("precision_pos", None, "NaN where nothing predicted"),
    ("recall_pos", None, "mean over images with a lesion"),
    ("hd95_pos", None, "images with both masks non-empty"),
    ("msd_pos", None, "images with both masks non-empty"),
    ("dice_all", "n_images", None),
    (
        "false_positive_rate_empty",
        "n_gt_empty",
        "share of lesion-free images with any predicted lesion pixel",
    ),
    ("fp_lesions_per_empty_image", None, ""),
    ("lesion_sensitivity", None, "n = reference lesions"),
    ("lesion_precision", None, "n = predicted lesions"),
    ("lesion_f1", None, "harmonic mean of the two above"),
    ("presence_roc_auc", "n_images", "is there any lesion in the image"),
    ("presence_ap", "n_images", "positives = lesion images"),
    ("presence_sensitivity", None, ""),
    ("presence_specificity", None, ""),
)


def summary_table(section: Mapping[str, Any]) -> pd.DataFrame:
    """Key metrics of one summary.json section (val or test) with sample sizes and intervals.

    A missing key reads 'missing'; a null (undefined) metric reads 'undefined (n=..)'.
    """
    rows = []
    for key, n_key, note in _SUMMARY_ROWS:
        own_n = f"{key}_n"
        n = section.get(own_n) if own_n in section else (section.get(n_key, MISSING) if n_key else None)
        value = format_value(section[key], n=n) if key in section else MISSING
        if note is None:
            note = f"convention: {section.get('dice_all_convention', MISSING)}"
        rows.append(
            {
                "metric": METRIC_NAMES[key],
                "value": value,
                "interval": section_interval_text(section, key),
                "n": "" if n is None else str(n),
                "note": note,
            }
        )
    return pd.DataFrame(rows)


def key_value_table(mapping: Mapping[str, Any], value_name: str = "value") -> pd.DataFrame:
    """A two-column table (key, value) of a flat mapping such as locked.json."""
    return pd.DataFrame({"key": list(mapping), value_name: [format_value(v) for v in mapping.values()]})


# ---------------------------------------------------------------- per-image metrics


def _reference_positive(per_image: pd.DataFrame) -> pd.DataFrame:
    # Dice is only meaningful where the reference has a lesion: lesion-free images are reported
    # as false-positive counts, never as Dice 1 (the trap of the hand-made reports).
    return per_image[(per_image["gt_pixels"] > 0) & per_image["dice"].notna()]


def head_tail(per_image: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Best and worst ``n`` reference-positive images by Dice (worst first in the second table).

    Lesion-free images and undefined (NaN) Dice are excluded; with fewer than ``2 n`` positive
    images the two tables share rows.
    """
    ordered = _reference_positive(per_image).sort_values(
        ["dice", "image_id"], ascending=[False, True], kind="stable"
    )
    best = ordered.head(n).reset_index(drop=True)
    worst = ordered.tail(n).iloc[::-1].reset_index(drop=True)
    return best, worst


def plot_dice_per_image(
    per_image: pd.DataFrame, bands: Sequence[float], title: str = "Dice per image"
) -> Figure:
    """Dice of each reference-positive image, sorted, coloured by band (red, yellow, green).

    Lesion-free images have no Dice; the title counts how many of them got a false-positive
    prediction (any predicted pixel).
    """
    ordered = _reference_positive(per_image).sort_values("dice", kind="stable", ignore_index=True)
    band = ordered["dice"].map(lambda d: dice_band(d, bands))
    labels = band_labels(bands)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax = fig.subplots()
    for name in BAND_NAMES:
        chosen = ordered[band == name]
        ax.scatter(
            chosen.index,
            chosen["dice"],
            color=BAND_COLOURS[name],
            s=18,
            label=f"{labels[name]} (n={len(chosen)})",
        )
    for edge in bands:
        ax.axhline(edge, color="grey", linestyle=":", linewidth=0.8)
    free = per_image[per_image["gt_pixels"] == 0]
    false_positive = int((free["pred_pixels"] > 0).sum())
    ax.set_title(
        f"{title}: {len(ordered)} lesion-positive images; "
        f"lesion-free images with a false positive: {false_positive} of {len(free)}"
    )
    ax.set_xlabel("image rank by Dice")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small", loc="lower right")
    return fig


# What each image group contributes to the summary, in the words of the notebook's table.
GROUP_ROLES = {
    "gt_pos_pred_pos": "lesion found: Dice, IoU, precision, recall, HD95 (the *_pos means)",
    "gt_pos_pred_empty": "lesion missed: Dice 0 in the *_pos means; no surface distance",
    "gt_empty_pred_pos": "false positive: false-positive rate, lesions and area on lesion-free images",
    "gt_empty_pred_empty": "correct empty: Dice undefined (not 1); counts as a true negative",
}


def image_groups_table(per_image: pd.DataFrame) -> pd.DataFrame:
    """The four reference x prediction groups: images in each, share of all, what each feeds."""
    counts = per_image["group"].astype(str).value_counts()
    n = len(per_image)
    rows = [
        {
            "group": group,
            "images": int(counts.get(group, 0)),
            "percent": round(100.0 * counts.get(group, 0) / n, 1) if n else float("nan"),
            "contributes": role,
        }
        for group, role in GROUP_ROLES.items()
    ]
    return pd.DataFrame(rows)


def plot_image_groups(per_image: pd.DataFrame, title: str = "Test images by group") -> Figure:
    """Bar chart of the four image groups, each bar labelled with its count."""
    table = image_groups_table(per_image)
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.subplots()
    colours = ["tab:green", "tab:red", "tab:orange", "tab:grey"]
    labels = [g.replace("_pred_", "\npred ").replace("gt_", "reference ") for g in table["group"]]
    bars = ax.barh(labels[::-1], table["images"][::-1], color=colours[::-1])
    ax.bar_label(bars, padding=3)
    ax.set_xlabel("images")
    ax.set_title(f"{title} (n={len(per_image)})")
    ax.margins(x=0.15)
    return fig


def detection_table(section: Mapping[str, Any]) -> pd.DataFrame:
    """Detection rate of reference lesions per size bin, with interval and lesion count."""
    rows = [
        {
            "size_bin (pixels or voxels)": row.get("size_bin"),
            "reference lesions": row.get("n_lesions"),
            "detection rate": format_value(row.get("rate"), n=row.get("n_lesions")),
            "interval": section_interval_text(row, "rate"),
        }
        for row in section.get("detection_by_size", [])
    ]
    return pd.DataFrame(
        rows, columns=["size_bin (pixels or voxels)", "reference lesions", "detection rate", "interval"]
    )


def plot_detection_by_size(section: Mapping[str, Any], title: str = "Lesion detection by size") -> Figure:
    """Detection rate per reference-lesion size bin with its interval; n above each bar."""
    rows = section.get("detection_by_size", [])
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    labels = [str(r["size_bin"]) for r in rows]
    rates = np.array([np.nan if r.get("rate") is None else r["rate"] for r in rows], dtype=float)
    low = np.array([np.nan if r.get("rate_ci_low") is None else r["rate_ci_low"] for r in rows], dtype=float)
    high = np.array(
        [np.nan if r.get("rate_ci_high") is None else r["rate_ci_high"] for r in rows], dtype=float
    )
    x = np.arange(len(rows))
    ax.bar(x, np.nan_to_num(rates), color="tab:blue", width=0.6)
    shown = ~(np.isnan(rates) | np.isnan(low) | np.isnan(high))
    ax.errorbar(
        x[shown],
        rates[shown],
        yerr=[rates[shown] - low[shown], high[shown] - rates[shown]],
        fmt="none",
        ecolor="black",
        capsize=4,
        label="95 % interval",
    )
    for xi, row, rate in zip(x, rows, rates, strict=True):
        text = f"n={row.get('n_lesions', 0)}" + ("" if np.isfinite(rate) else "\nundefined")
        ax.text(xi, 1.03, text, ha="center", va="bottom", fontsize="small")
    ax.set_xticks(x, labels)
    ax.set_xlabel("reference lesion size (pixels or voxels)")
    ax.set_ylabel("detected share of reference lesions")
    ax.set_ylim(0, 1.18)
    ax.set_title(title)
    if shown.any():
        ax.legend(fontsize="small", loc="lower right")
    return fig


def plot_zero_dice(zero_dice_summary: pd.DataFrame) -> Figure:
    """Zero-Dice images per case (false positive, missed, disjoint), bars labelled with counts."""
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.subplots()
    names = {
        "A_GT_empty_PRED_nonempty": "A: false positive\n(reference empty)",
        "B_GT_nonempty_PRED_empty": "B: missed\n(prediction empty)",
        "C_disjoint": "C: disjoint\n(no overlap)",
    }
    labels = [names.get(c, c) for c in zero_dice_summary["case"]]
    bars = ax.bar(
        labels, zero_dice_summary["count"], color=["tab:orange", "tab:red", "tab:purple"][: len(labels)]
    )
    ax.bar_label(bars, padding=2)
    ax.set_ylabel("images with Dice 0")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Zero-Dice test images by case (total {int(zero_dice_summary['count'].sum())})")
    ax.margins(y=0.2)
    return fig


def false_positive_images(per_image: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` lesion-free images with the most predicted lesion pixels (worst false positives)."""
    hits = per_image[(per_image["gt_pixels"] == 0) & (per_image["pred_pixels"] > 0)]
    return hits.sort_values(["pred_pixels", "image_id"], ascending=[False, True], kind="stable").head(n)


def lesion_free_report(per_image: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts for lesion-free images (how many got a false positive), and those images' rows."""
    free = per_image[per_image["gt_pixels"] == 0]
    hits = free[free["pred_pixels"] > 0]
    rate = len(hits) / len(free) if len(free) else None
    counts = pd.DataFrame(
        {
            "quantity": [
                "lesion-free images",
                "with a false-positive prediction",
                "false-positive rate",
            ],
            "value": [str(len(free)), str(len(hits)), format_value(rate, n=len(free))],
        }
    )
    columns = [
        c
        # pred_volume_ml is there for volumes (reports.data_report.with_lesion_volume).
        for c in ("image_id", "subject", "pred_pixels", "pred_volume_ml", "presence_score", "presence_pred")
        if c in per_image.columns
    ]
    listed = hits[columns].sort_values("pred_pixels", ascending=False, kind="stable")
    return counts, listed.reset_index(drop=True)
