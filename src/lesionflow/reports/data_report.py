"""The analysis notebook's split and data sections: images, subjects and lesions per split.

Must never re-split or re-measure: it reads the split and data stages' tables as written.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lesionflow.reports.labels import METRIC_NAMES, format_value

SPLIT_ORDER = ("train", "val", "test")


def _split_names(names: Iterable[str]) -> list[str]:
    # Pipeline order first, then any other split name (e.g. 'unsplit') alphabetically.
    present = set(names)
    return [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))


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
        (METRIC_NAMES["n_images"], METRIC_NAMES["n_gt_positive"], "lesion rate"),
        strict=True,
    ):
        values = table[column].astype(float).to_numpy()
        bars = ax.bar(table["split"], values, color="tab:blue")
        # Counts as integers, the rate with two decimals: the numbers people quote from this figure.
        fmt = "{:.2f}" if column == "lesion_rate" else "{:.0f}"
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2)
        ax.set_title(title)
        top = 1.0 if column == "lesion_rate" else float(np.nanmax(values)) if len(values) else 1.0
        ax.set_ylim(0, top * 1.18)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle("Split grouped by subject, stratified by lesion presence")
    return fig


def subject_overlap(split: pd.DataFrame) -> pd.DataFrame:
    """Subjects shared by each pair of splits; any count above 0 means a subject leaked."""
    subjects = {name: set(group["subject"]) for name, group in split.groupby("split")}
    names = _split_names(subjects)
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
    rows = []
    for name in _split_names(images["split"]):
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
