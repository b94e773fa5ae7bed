"""The analyse stage: tables, figures and rule-based verdicts for one run's analysis notebook.

It must never compute a metric the evaluate stage did not: it only reads, arranges and plots them,
and judges them only by rules given as parameters.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lesionflow.pipeline.errors import LesionflowError

BAND_NAMES = ("bad", "mid", "good")
BAND_COLOURS = {"bad": "tab:red", "mid": "gold", "good": "tab:green"}
SPLIT_ORDER = ("train", "val", "test")

# Columns each table read by the notebook must have; read_table checks them at the boundary.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "per_image": ("image_id", "dice", "gt_pixels", "pred_pixels"),
    "metrics_by_epoch": ("epoch", "train_loss", "val_loss", "val_dice"),
    "lr_by_step": ("step", "lr"),
    "zero_dice_images": ("image_id", "case"),
    "zero_dice_summary": ("case", "count"),
    "split_summary": ("split", "n", "lesion_positive"),
    "split": ("image_id", "subject", "split"),
}
# Columns that hold identifiers: read as text so ids such as 0042 keep their leading zeros.
_TEXT_COLUMNS = {"image_id": str, "subject": str, "split": str, "case": str}

MISSING = "missing"


# ---------------------------------------------------------------- reading and formatting


def read_table(path: str | os.PathLike, kind: str) -> pd.DataFrame:
    """Read one CSV artifact of ``kind`` (a key of TABLE_COLUMNS) and check its columns."""
    frame = pd.read_csv(path, dtype=_TEXT_COLUMNS)
    missing = [c for c in TABLE_COLUMNS[kind] if c not in frame.columns]
    if missing:
        raise LesionflowError(
            f"{path}: expected a {kind} table with column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}"
        )
    return frame


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


def key_value_table(mapping: Mapping[str, Any], value_name: str = "value") -> pd.DataFrame:
    """A two-column table (key, value) of a flat mapping such as locked.json."""
    return pd.DataFrame({"key": list(mapping), value_name: [format_value(v) for v in mapping.values()]})


def require_parameters(parameters: Mapping[str, Any]) -> None:
    """Raise naming every notebook parameter left at None (the notebook's defaults)."""
    unset = [name for name, value in parameters.items() if value is None]
    if unset:
        raise LesionflowError(f"analysis notebook: parameter(s) not set: {', '.join(unset)}")


# ---------------------------------------------------------------- run summary


# (summary key, label, key of its sample size when the metric has no <key>_n of its own, note)
_SUMMARY_ROWS = (
    ("n_images", "images", None, ""),
    ("n_gt_positive", "lesion-positive images", None, ""),
    ("n_gt_empty", "lesion-free images", None, ""),
    ("dice_pos", "Dice, lesion-positive images", "dice_pos_n", "mean over images with a lesion"),
    ("iou_pos", "IoU, lesion-positive images", "dice_pos_n", "mean over images with a lesion"),
    ("precision_pos", "pixel precision, lesion-positive images", None, "NaN where nothing predicted"),
    ("recall_pos", "pixel recall, lesion-positive images", None, "mean over images with a lesion"),
    ("hd95_pos", "HD95 (pixels), lesion-positive images", None, "images with both masks non-empty"),
    ("msd_pos", "mean surface distance (pixels)", None, "images with both masks non-empty"),
    ("dice_all", "Dice, all images", "n_images", None),
    (
        "false_positive_rate_empty",
        "false-positive rate, lesion-free images",
        "n_gt_empty",
        "share of lesion-free images with any predicted lesion pixel",
    ),
    ("fp_lesions_per_empty_image", "false-positive lesions per lesion-free image", None, ""),
    ("lesion_sensitivity", "lesion-wise sensitivity", None, "n = reference lesions"),
    ("lesion_precision", "lesion-wise precision", None, "n = predicted lesions"),
    ("lesion_f1", "lesion-wise F1", None, "harmonic mean of the two above"),
    ("presence_roc_auc", "lesion presence ROC-AUC", "n_images", "is there any lesion in the image"),
    ("presence_ap", "lesion presence average precision", "n_images", "positives = lesion images"),
    ("presence_sensitivity", "presence sensitivity at the locked threshold", None, ""),
    ("presence_specificity", "presence specificity at the locked threshold", None, ""),
)


def _interval(section: Mapping[str, Any], key: str) -> str:
    low, high = section.get(f"{key}_ci_low"), section.get(f"{key}_ci_high")
    if low is None and high is None:
        return ""
    return f"[{format_value(low, 3)}, {format_value(high, 3)}]"


def summary_table(section: Mapping[str, Any]) -> pd.DataFrame:
    """Key metrics of one summary.json section (val or test) with sample sizes and intervals.

    A missing key reads 'missing'; a null (undefined) metric reads 'undefined (n=..)'.
    """
    rows = []
    for key, label, n_key, note in _SUMMARY_ROWS:
        own_n = f"{key}_n"
        n = section.get(own_n) if own_n in section else (section.get(n_key, MISSING) if n_key else None)
        value = format_value(section[key], n=n) if key in section else MISSING
        if note is None:
            note = f"convention: {section.get('dice_all_convention', MISSING)}"
        rows.append(
            {
                "metric": label,
                "value": value,
                "interval": _interval(section, key),
                "n": "" if n is None else str(n),
                "note": note,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- quality bands


def dice_band(dice: float, bands: Sequence[float] = (0.4, 0.6)) -> str:
    """'bad' below bands[0], 'mid' below bands[1], 'good' from bands[1] on; NaN is 'undefined'."""
    if is_undefined(dice):
        return "undefined"
    low, high = bands
    if dice < low:
        return "bad"
    if dice < high:
        return "mid"
    return "good"


def band_labels(bands: Sequence[float]) -> dict[str, str]:
    low, high = bands
    return {
        "bad": f"bad: < {low:g}",
        "mid": f"mid: {low:g} to < {high:g}",
        "good": f"good: >= {high:g}",
    }


def shade_bands(ax, bands: Sequence[float]) -> None:
    edges = (0.0, *bands, 1.0)
    for name, low, high in zip(BAND_NAMES, edges[:-1], edges[1:], strict=True):
        ax.axhspan(low, high, color=BAND_COLOURS[name], alpha=0.12, linewidth=0)


# ---------------------------------------------------------------- split


def split_table(split_summary: pd.DataFrame) -> pd.DataFrame:
    """Images, lesion-positive and lesion-free counts and lesion rate per split, and a total row."""
    order = {name: i for i, name in enumerate(SPLIT_ORDER)}
    table = split_summary[["split", "n", "lesion_positive"]].copy()
    table = table.sort_values("split", key=lambda s: s.map(order).fillna(len(order)), kind="stable")
    total = pd.DataFrame(
        [{"split": "all", "n": table["n"].sum(), "lesion_positive": table["lesion_positive"].sum()}]
    )
    table = pd.concat([table, total], ignore_index=True)
    table["lesion_free"] = table["n"] - table["lesion_positive"]
    # Recomputed so the total row uses the same definition as the split rows.
    table["lesion_rate"] = (table["lesion_positive"] / table["n"].where(table["n"] > 0)).round(4)
    return table[["split", "n", "lesion_positive", "lesion_free", "lesion_rate"]]


def plot_split(split_summary: pd.DataFrame) -> Figure:
    """Three bar charts per split: images, lesion-positive images, lesion rate."""
    table = split_table(split_summary)
    table = table[table["split"] != "all"]
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, column, title in zip(
        axes,
        ("n", "lesion_positive", "lesion_rate"),
        ("images", "lesion-positive images", "lesion rate"),
        strict=True,
    ):
        ax.bar(table["split"], table[column], color="tab:blue")
        ax.set_title(title)
    axes[2].set_ylim(0, 1)
    return fig


def subject_overlap(split: pd.DataFrame) -> pd.DataFrame:
    """Subjects shared by each pair of splits; any count above 0 means a subject leaked."""
    subjects = {name: set(group["subject"]) for name, group in split.groupby("split")}
    names = [s for s in SPLIT_ORDER if s in subjects] + sorted(set(subjects) - set(SPLIT_ORDER))
    rows = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            shared = sorted(subjects[first] & subjects[second])
            rows.append(
                {
                    "splits": f"{first} / {second}",
                    "shared_subjects": len(shared),
                    "examples": ", ".join(shared[:5]),
                }
            )
    return pd.DataFrame(rows, columns=["splits", "shared_subjects", "examples"])


# ---------------------------------------------------------------- data report


def _with_split(table: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    splits = split.set_index("image_id")["split"]
    return table.assign(split=table["image_id"].map(splits).fillna("unsplit"))


def data_report_table(images: pd.DataFrame, lesions: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Per split: images, subjects, images per subject, lesion-positive images, the median lesion
    fraction of lesion-positive images, lesions and their median size (pixels)."""
    images, lesions = _with_split(images, split), _with_split(lesions, split)
    order = [s for s in SPLIT_ORDER if s in set(images["split"])]
    order += sorted(set(images["split"]) - set(order))
    rows = []
    for name in order:
        chosen = images[images["split"] == name]
        positive = chosen[chosen["lesion_pixels"] > 0]
        sizes = lesions.loc[lesions["split"] == name, "lesion_pixels"]
        per_subject = chosen.groupby("subject").size()
        rows.append(
            {
                "split": name,
                "images": len(chosen),
                "subjects": int(chosen["subject"].nunique()),
                "images per subject (max)": int(per_subject.max()),
                "lesion-positive images": len(positive),
                "median lesion fraction (positive images)": format_value(
                    float(positive["lesion_fraction"].median()) if len(positive) else None, 5
                ),
                "lesions": len(sizes),
                "median lesion size (pixels)": format_value(float(sizes.median()) if len(sizes) else None, 1),
            }
        )
    return pd.DataFrame(rows)


def plot_data_report(images: pd.DataFrame, lesions: pd.DataFrame, split: pd.DataFrame) -> Figure:
    """Images per subject, lesion-pixel fraction per image, lesions per image and lesion sizes, by split.

    Fractions and sizes span orders of magnitude in fundus images, so they are drawn on log axes;
    lesion-free images (fraction 0) are counted in the panel title instead.
    """
    images, lesions = _with_split(images, split), _with_split(lesions, split)
    names = [s for s in SPLIT_ORDER if s in set(images["split"])]
    fig = Figure(figsize=(14, 3.6), layout="constrained")
    per_subject_ax, fraction_ax, count_ax, size_ax = fig.subplots(1, 4)
    per_subject = images.groupby("subject").size()
    per_subject_ax.hist(per_subject, bins=np.arange(0.5, per_subject.max() + 1.5), color="tab:blue")
    per_subject_ax.set(xlabel="images per subject", ylabel="subjects", title="Images per subject")
    per_subject_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    per_subject_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    positive = images[images["lesion_pixels"] > 0]
    for ax, column, data, title in (
        (fraction_ax, "lesion_fraction", positive, "Lesion-pixel fraction per image"),
        (count_ax, "n_lesions", positive, "Lesions per lesion-positive image"),
        (size_ax, "lesion_pixels", lesions, "Lesion size"),
    ):
        groups = [data.loc[data["split"] == name, column].to_numpy(dtype=float) for name in names]
        shown = [(name, values) for name, values in zip(names, groups, strict=True) if len(values)]
        if shown:
            ax.boxplot([values for _, values in shown], tick_labels=[name for name, _ in shown])
        ax.set_title(title)
        ax.set_xlabel("split")
    fraction_ax.set_yscale("log")
    fraction_ax.set_ylabel("lesion pixels / image pixels")
    free = int((images["lesion_pixels"] == 0).sum())
    fraction_ax.set_title(f"Lesion-pixel fraction per image\n({free} lesion-free images not shown)")
    count_ax.set_ylabel("lesions (connected components)")
    count_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    size_ax.set_yscale("log")
    size_ax.set_ylabel("pixels per lesion")
    return fig


# ---------------------------------------------------------------- per-image metrics


def _reference_positive(per_image: pd.DataFrame) -> pd.DataFrame:
    # Dice is only meaningful where the reference has a lesion: lesion-free images are reported
    # as false-positive counts, never as Dice 1 (the trap of the hand-made reports).
    return per_image[(per_image["gt_pixels"] > 0) & per_image["dice"].notna()]


def head_tail(per_image: pd.DataFrame, n: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    per_image: pd.DataFrame, bands: Sequence[float] = (0.4, 0.5), title: str = "Dice per image"
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
            "size_bin (pixels)": row.get("size_bin"),
            "reference lesions": row.get("n_lesions"),
            "detection rate": format_value(row.get("rate"), n=row.get("n_lesions")),
            "interval": _interval(row, "rate"),
        }
        for row in section.get("detection_by_size", [])
    ]
    return pd.DataFrame(
        rows, columns=["size_bin (pixels)", "reference lesions", "detection rate", "interval"]
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
    ax.set_xlabel("reference lesion size (pixels)")
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


def false_positive_images(per_image: pd.DataFrame, n: int = 4) -> pd.DataFrame:
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
        for c in ("image_id", "subject", "pred_pixels", "presence_score", "presence_pred")
        if c in per_image.columns
    ]
    listed = hits[columns].sort_values("pred_pixels", ascending=False, kind="stable")
    return counts, listed.reset_index(drop=True)


# ---------------------------------------------------------------- error-analysis panels


def load_examples(
    ids: Sequence[str],
    manifest: pd.DataFrame,
    probs: Mapping[str, np.ndarray],
    locked: Mapping[str, Any],
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Images, reference masks, probability maps and locked post-processed predictions of ids.

    The prediction is made at full resolution, then all four are reduced to at most
    DISPLAY_SIZE pixels a side (see :func:`for_display`): a figure of a few 4288 x 2848
    photographs would otherwise take gigabytes.
    """
    # Imported here so the pure table and figure functions import without the image stack.
    from lesionflow.data.dataset import load_image, load_manifest_mask
    from lesionflow.evaluation.postprocess import apply_locked

    rows = manifest.set_index("image_id", drop=False)
    images, masks, maps, preds = [], [], [], []
    for image_id in ids:
        if image_id not in rows.index:
            raise LesionflowError(f"manifest: no row for test image id {image_id!r}")
        if image_id not in probs:
            raise LesionflowError(f"test probabilities: no map for image id {image_id!r}")
        row = rows.loc[image_id]
        prob = np.asarray(probs[image_id], dtype=np.float32)
        shown = for_display(
            load_image(row["image"]), load_manifest_mask(row), prob, apply_locked(prob, locked)[0]
        )
        for kept, value in zip((images, masks, maps, preds), shown, strict=True):
            kept.append(value)
    return images, masks, maps, preds


# Longest side, in pixels, of the pictures in example figures: enough for a 4-panel row.
DISPLAY_SIZE = 768


def for_display(
    image: np.ndarray, mask: np.ndarray, prob: np.ndarray, pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image, masks and map reduced to at most DISPLAY_SIZE pixels a side for a figure.

    The image and the probability map are area-averaged; a display pixel shows lesion when any
    pixel under it is lesion, so a few-pixel exudate stays visible. Smaller inputs are returned
    as they are.
    """
    from lesionflow.data.preprocess import resize_image  # the image stack, as in load_examples

    scale = min(1.0, DISPLAY_SIZE / max(mask.shape))
    if scale == 1:
        return image, mask, prob, pred

    def any_lesion(binary: np.ndarray) -> np.ndarray:
        return resize_image(binary[None].astype(np.float32), scale)[0] > 0

    return resize_image(image, scale), any_lesion(mask), resize_image(prob[None], scale)[0], any_lesion(pred)


def _display_image(image: np.ndarray) -> np.ndarray:
    # (C, H, W) -> what imshow takes: RGB as (H, W, 3), anything else as its first channel.
    if image.shape[0] == 3:
        return np.clip(np.moveaxis(image, 0, -1), 0, 1)
    return image[0]


def _overlay(mask: np.ndarray, colour: tuple[float, float, float], alpha: float = 0.5) -> np.ndarray:
    rgba = np.zeros((*mask.shape, 4), dtype=np.float32)
    rgba[mask] = (*colour, alpha)
    return rgba


def plot_examples(
    ids: Sequence[str],
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    probs: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
) -> Figure:
    """Grid with one row per image: image, image + reference (green), probability, prediction (red).

    The prediction panel also outlines the reference in green, so misses and false positives show.
    """
    titles = list(ids) if titles is None else list(titles)
    if not ids:
        # An empty group still gets a figure that says so, rather than a blank grid.
        fig = Figure(figsize=(6, 1.2), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no images in this group", ha="center", va="center")
        ax.set_axis_off()
        return fig
    n = len(ids)
    fig = Figure(figsize=(12, 3.2 * n), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False)
    headers = ("image", "image + reference", "probability", "prediction (locked)")
    for ax, header in zip(axes[0], headers, strict=True):
        ax.set_title(header)
    for row, (image, mask, prob, pred, title) in enumerate(
        zip(images, masks, probs, preds, titles, strict=True)
    ):
        shown = _display_image(image)
        cmap = "gray" if shown.ndim == 2 else None
        first, second, third, fourth = axes[row]
        first.imshow(shown, cmap=cmap)
        second.imshow(shown, cmap=cmap)
        second.imshow(_overlay(mask, (0.0, 1.0, 0.0)))
        third.imshow(prob, vmin=0, vmax=1, cmap="magma")
        fourth.imshow(shown, cmap=cmap)
        fourth.imshow(_overlay(pred, (1.0, 0.0, 0.0)))
        if mask.any() and not mask.all():  # contour of a constant mask is undefined
            fourth.contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
        first.set_ylabel(title, fontsize="small")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
