"""The analyse stage: tables, figures and rule-based verdicts for one run, and the notebook runner.

It must never compute a metric the evaluate stage did not: it only reads, arranges and plots them,
and judges them only by rules given as parameters.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lesionflow.artifacts import atomic_path
from lesionflow.errors import LesionflowError

BAND_NAMES = ("bad", "mid", "good")
BAND_COLOURS = {"bad": "tab:red", "mid": "gold", "good": "tab:green"}
EPOCH_METRICS = ("loss", "dice", "iou", "pearson")
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

# Rules training_verdicts knows; a config key outside this list is a typo, not a silent no-op.
VERDICT_RULES: dict[str, str] = {
    "good_val_dice": "good performance if best val Dice > {value}",
    "overfit_loss_ratio": "overfitting if final val loss / final train loss > {value}",
    "improving_last_epochs": "still improving if the best val Dice is in the last {value} epochs",
}

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


def _is_undefined(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def format_value(value: Any, digits: int = 4, n: Any = None) -> str:
    """A number as text; None/NaN as 'undefined (n=..)' so a missing Dice is never read as 0."""
    if _is_undefined(value):
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
    return pd.DataFrame(
        {"key": list(mapping), value_name: [format_value(v) for v in mapping.values()]}
    )


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


# ---------------------------------------------------------------- training report


def dice_band(dice: float, bands: Sequence[float] = (0.4, 0.6)) -> str:
    """'bad' below bands[0], 'mid' below bands[1], 'good' from bands[1] on; NaN is 'undefined'."""
    if _is_undefined(dice):
        return "undefined"
    low, high = bands
    if dice < low:
        return "bad"
    if dice < high:
        return "mid"
    return "good"


def _band_labels(bands: Sequence[float]) -> dict[str, str]:
    low, high = bands
    return {
        "bad": f"bad: < {low:g}",
        "mid": f"mid: {low:g} to < {high:g}",
        "good": f"good: >= {high:g}",
    }


def _shade_bands(ax, bands: Sequence[float]) -> None:
    edges = (0.0, *bands, 1.0)
    for name, low, high in zip(BAND_NAMES, edges[:-1], edges[1:], strict=True):
        ax.axhspan(low, high, color=BAND_COLOURS[name], alpha=0.12, linewidth=0)


def _best_epoch(metrics_by_epoch: pd.DataFrame) -> int | None:
    val = metrics_by_epoch["val_dice"]
    if val.notna().sum() == 0:
        return None
    return int(metrics_by_epoch.loc[val.idxmax(), "epoch"])


def plot_epoch_curves(
    metrics_by_epoch: pd.DataFrame,
    bands: Sequence[float] = (0.4, 0.6),
    best_epoch: int | None = None,
) -> Figure:
    """One panel per metric (loss, dice, iou, pearson), train vs val over epochs.

    Dice and IoU panels are shaded by quality band; the best epoch (by val Dice unless given, e.g.
    from train_summary.json) is a dotted vertical line on every panel.
    """
    if best_epoch is None:
        best_epoch = _best_epoch(metrics_by_epoch)
    fig = Figure(figsize=(12, 7), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, metric in zip(axes, EPOCH_METRICS, strict=True):
        for subset, style in (("train", "-"), ("val", "--")):
            column = f"{subset}_{metric}"
            if column in metrics_by_epoch.columns:
                ax.plot(metrics_by_epoch["epoch"], metrics_by_epoch[column], style, label=subset)
        if metric in ("dice", "iou"):
            _shade_bands(ax, bands)
            ax.set_ylim(0, 1)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.legend(fontsize="small")
    return fig


def plot_lr(lr_by_step: pd.DataFrame) -> Figure:
    """Learning rate over optimiser steps, and the training loss per step beside it when logged."""
    panels = ["lr"] + (["loss"] if "loss" in lr_by_step.columns else [])
    fig = Figure(figsize=(6 * len(panels), 3.5), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, column in zip(axes, panels, strict=True):
        ax.plot(lr_by_step["step"], lr_by_step[column], linewidth=1)
        ax.set_xlabel("step")
        ax.set_title("learning rate" if column == "lr" else "training loss per step")
    axes[0].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return fig


def _final(metrics_by_epoch: pd.DataFrame, column: str) -> Any:
    if len(metrics_by_epoch) == 0 or column not in metrics_by_epoch.columns:
        return None
    return metrics_by_epoch[column].iloc[-1]


def _summary_value(summary: Mapping[str, Any], key: str, fallback: Any = None) -> Any:
    # train_summary.json is the record of the run; the per-epoch table only fills its gaps.
    if key in summary:
        return summary[key]
    return MISSING if fallback is None else fallback


def _megabytes(value: Any, when_null: str) -> str:
    # null means the quantity was not measured (e.g. GPU memory on a CPU run), not zero.
    if value is None:
        return when_null
    return MISSING if value == MISSING else f"{format_value(value, 0)} MB"


def training_report(
    train_summary: Mapping[str, Any], metrics_by_epoch: pd.DataFrame, rules: Mapping[str, Any]
) -> pd.DataFrame:
    """Key training metrics (quantity, value, rule) from train_summary.json and the epoch table.

    The rule column shows the configured rule that judges a row, so numbers and thresholds sit
    side by side.
    """
    _check_rules(rules)
    seconds = _summary_value(train_summary, "wall_time_s")
    time_text = (
        f"{seconds:.1f} s ({seconds / 60:.1f} min)"
        if isinstance(seconds, int | float) and not _is_undefined(seconds)
        else format_value(seconds)
    )
    epochs = format_value(_summary_value(train_summary, "epochs_run", len(metrics_by_epoch)))
    if train_summary.get("stopped_early"):
        epochs += " (stopped early)"
    final_train = _summary_value(
        train_summary, "final_train_loss", _final(metrics_by_epoch, "train_loss")
    )
    final_val = _summary_value(
        train_summary, "final_val_loss", _final(metrics_by_epoch, "val_loss")
    )
    best = _summary_value(train_summary, "best_val_dice_pos")
    best_epoch = _summary_value(train_summary, "best_epoch")
    gpu = train_summary.get("peak_gpu_memory_mb", MISSING)
    device = train_summary.get("device", MISSING)
    rss = train_summary.get("peak_rss_mb", MISSING)

    def rule_text(name: str) -> str:
        return VERDICT_RULES[name].format(value=rules[name]) if name in rules else ""

    rows = [
        ("total training time", time_text, ""),
        ("iterations", format_value(_summary_value(train_summary, "iterations")), ""),
        ("epochs run", epochs, rule_text("improving_last_epochs")),
        ("final train loss", format_value(final_train), ""),
        ("final val loss", format_value(final_val), rule_text("overfit_loss_ratio")),
        (
            "best val Dice (lesion-positive images)",
            f"{format_value(best)} at epoch {format_value(best_epoch)}",
            rule_text("good_val_dice"),
        ),
        ("peak GPU memory", _megabytes(gpu, f"not measured (device {device})"), ""),
        ("peak RSS", _megabytes(rss, "not measured"), ""),
        ("device", format_value(device), ""),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value", "rule"])


def _check_rules(rules: Mapping[str, Any]) -> None:
    for name, value in rules.items():
        if name not in VERDICT_RULES:
            raise LesionflowError(
                f"verdict_rules.{name}: unknown rule; known rules are {', '.join(VERDICT_RULES)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LesionflowError(f"verdict_rules.{name}: expected a number, got {value!r}")


def training_verdicts(metrics_by_epoch: pd.DataFrame, rules: Mapping[str, Any]) -> list[str]:
    """Conclusions from the epoch table, one per configured rule, each stating rule and numbers."""
    _check_rules(rules)
    verdicts = []
    best_epoch = _best_epoch(metrics_by_epoch) if len(metrics_by_epoch) else None
    if "good_val_dice" in rules:
        rule = VERDICT_RULES["good_val_dice"].format(value=rules["good_val_dice"])
        if best_epoch is None:
            verdicts.append(f"Rule '{rule}': undefined, no finite val Dice in the epoch table.")
        else:
            best = float(metrics_by_epoch["val_dice"].max())
            met = best > rules["good_val_dice"]
            sign = ">" if met else "<="
            verdicts.append(
                f"Rule '{rule}': {'met' if met else 'not met'}; best val Dice {best:.4f} "
                f"(epoch {best_epoch}) {sign} {rules['good_val_dice']}."
            )
    if "overfit_loss_ratio" in rules:
        rule = VERDICT_RULES["overfit_loss_ratio"].format(value=rules["overfit_loss_ratio"])
        train, val = _final(metrics_by_epoch, "train_loss"), _final(metrics_by_epoch, "val_loss")
        if _is_undefined(train) or _is_undefined(val) or float(train) <= 0:
            verdicts.append(
                f"Rule '{rule}': undefined; final train loss {format_value(train)}, "
                f"final val loss {format_value(val)}."
            )
        else:
            ratio = float(val) / float(train)
            met = ratio > rules["overfit_loss_ratio"]
            sign = ">" if met else "<="
            verdicts.append(
                f"Rule '{rule}': {'met' if met else 'not met'}; {float(val):.4f} / "
                f"{float(train):.4f} = {ratio:.2f} {sign} {rules['overfit_loss_ratio']}."
            )
    if "improving_last_epochs" in rules:
        window = int(rules["improving_last_epochs"])
        rule = VERDICT_RULES["improving_last_epochs"].format(value=window)
        if best_epoch is None:
            verdicts.append(f"Rule '{rule}': undefined, no finite val Dice in the epoch table.")
        else:
            last = int(metrics_by_epoch["epoch"].iloc[-1])
            met = best_epoch > last - window
            verdicts.append(
                f"Rule '{rule}': {'met' if met else 'not met'}; best val Dice at epoch "
                f"{best_epoch}, last epoch {last}" + ("; more epochs may raise it." if met else ".")
            )
    return verdicts


def epoch_log(metrics_by_epoch: pd.DataFrame, max_rows: int = 20) -> pd.DataFrame:
    """Every k-th epoch (k chosen so at most about ``max_rows`` rows), plus the best and last.

    The chosen k is in ``.attrs['every']``; the 'mark' column flags the best and last epochs.
    """
    n = len(metrics_by_epoch)
    every = max(1, math.ceil(n / max_rows))
    best, keep = _best_epoch(metrics_by_epoch) if n else None, np.arange(n) % every == 0
    epochs = metrics_by_epoch["epoch"].to_numpy()
    keep |= (epochs == best) | (np.arange(n) == n - 1)
    log = metrics_by_epoch.loc[keep].copy()
    log["mark"] = [
        ", ".join(m for m, hit in (("best", e == best), ("last", e == epochs[-1])) if hit)
        for e in log["epoch"]
    ]
    log = log.reset_index(drop=True)
    log.attrs["every"] = every
    return log


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
    labels = _band_labels(bands)
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
    """Images, reference masks, probability maps and locked post-processed predictions of ids."""
    # Imported here so the pure table and figure functions import without the image stack.
    from lesionflow.dataset import load_image, load_manifest_mask
    from lesionflow.postprocess import apply_locked

    rows = manifest.set_index("image_id", drop=False)
    images, masks, maps, preds = [], [], [], []
    for image_id in ids:
        if image_id not in rows.index:
            raise LesionflowError(f"manifest: no row for test image id {image_id!r}")
        if image_id not in probs:
            raise LesionflowError(f"test probabilities: no map for image id {image_id!r}")
        row = rows.loc[image_id]
        prob = np.asarray(probs[image_id], dtype=np.float32)
        images.append(load_image(row["image"]))
        masks.append(load_manifest_mask(row))
        maps.append(prob)
        preds.append(apply_locked(prob, locked)[0])
    return images, masks, maps, preds


def _display_image(image: np.ndarray) -> np.ndarray:
    # (C, H, W) -> what imshow takes: RGB as (H, W, 3), anything else as its first channel.
    if image.shape[0] == 3:
        return np.clip(np.moveaxis(image, 0, -1), 0, 1)
    return image[0]


def _overlay(
    mask: np.ndarray, colour: tuple[float, float, float], alpha: float = 0.5
) -> np.ndarray:
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
    n = max(len(ids), 1)
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


# ---------------------------------------------------------------- the stage


def run_analyse(
    notebook_path: str | os.PathLike,
    parameters: Mapping[str, Any],
    out_dir: str | os.PathLike,
    cwd: str | os.PathLike | None = None,
) -> None:
    """Execute the analysis notebook with papermill; write analysis.ipynb and analysis.html.

    Both are written atomically. If a cell fails, the executed notebook is kept as
    analysis.failed.ipynb for its traceback, no analysis.ipynb/.html is left, and a
    LesionflowError names the notebook, the cell and its error. Relative paths in
    ``parameters`` are resolved from ``cwd`` (default: the current directory).
    """
    import nbformat
    import papermill
    from nbconvert import HTMLExporter
    from papermill.exceptions import PapermillExecutionError

    notebook_path = Path(notebook_path)
    if not notebook_path.is_file():
        raise LesionflowError(f"analysis notebook {notebook_path} does not exist")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {"ipynb": out_dir / "analysis.ipynb", "html": out_dir / "analysis.html"}
    failed = out_dir / "analysis.failed.ipynb"
    failed.unlink(missing_ok=True)
    with atomic_path(outputs["ipynb"]) as tmp:
        try:
            with warnings.catch_warnings():
                # The temporary name ends in .tmp by design (see atomic_path), not .ipynb.
                warnings.filterwarnings("ignore", message=".*does not end in one of")
                executed = papermill.execute_notebook(
                    str(notebook_path),
                    str(tmp),
                    parameters=dict(parameters),
                    kernel_name="python3",
                    progress_bar=False,
                    cwd=None if cwd is None else str(cwd),
                )
        except PapermillExecutionError as err:
            if tmp.exists():
                os.replace(tmp, failed)
            for stale in outputs.values():
                # An older report beside a failed run would pass for this run's result.
                stale.unlink(missing_ok=True)
            raise LesionflowError(
                f"analysis notebook {notebook_path} failed at cell In [{err.exec_count}]: "
                f"{err.ename}: {err.evalue} (executed notebook with traceback: {failed})"
            ) from err
        body, _ = HTMLExporter().from_notebook_node(nbformat.from_dict(executed))
    with atomic_path(outputs["html"]) as tmp:
        tmp.write_text(body, encoding="utf-8")
