"""The analysis notebook's split and data sections: images, subjects and lesions per split.

Must never re-split or re-measure: it reads the split and data stages' tables as written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lesionflow.data.axis_columns import axis_values
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.labels import METRIC_NAMES, format_value

SPLIT_ORDER = ("train", "val", "test")
# Spatial axes of a volume: its lesion sizes are in mL. Pictures have no physical size (their
# spacing is [1.0, 1.0]) and keep pixels.
VOLUME_DIMS = 3
MM3_PER_ML = 1000.0


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


# ---------------------------------------------------------------- lesion sizes


class SizeUnit(NamedTuple):
    """How lesion sizes are reported: the unit, what an image is made of, and decimals shown."""

    unit: str
    element: str
    digits: int


PIXELS = SizeUnit("pixels", "pixel", 1)
MILLILITRES = SizeUnit("mL", "voxel", 3)


def voxel_volumes_ml(table: pd.DataFrame, source: str) -> pd.Series | None:
    """Millilitres per voxel of each row of ``table``: the product of its ``spacing`` (mm) / 1000.

    None when the table has no ``spacing`` column or holds pictures, whose sizes stay in pixels.
    ``source`` names the table in errors: a cell that is not a list of numbers, or a table that
    mixes pictures and volumes, is a LesionflowError.
    """
    if "spacing" not in table.columns:
        return None
    spacings = [axis_values(cell, f"{source}, column 'spacing'") for cell in table["spacing"]]
    dims = {len(spacing) for spacing in spacings}
    if len(dims) > 1:
        raise LesionflowError(
            f"{source}, column 'spacing': mixes images with {' and '.join(map(str, sorted(dims)))} axes"
        )
    if dims != {VOLUME_DIMS}:
        return None
    return pd.Series([math.prod(spacing) / MM3_PER_ML for spacing in spacings], index=table.index)


def lesion_sizes(images: pd.DataFrame, lesions: pd.DataFrame) -> tuple[pd.Series, pd.Series, SizeUnit]:
    """Lesion size of each image and of each lesion (data stage's images.csv and lesions.csv rows).

    For volumes (a ``spacing`` column with three axes) sizes are in mL, lesion voxels x the
    voxel volume; otherwise they are the ``lesion_pixels`` counts as they are.
    """
    per_voxel = voxel_volumes_ml(images, "images.csv")
    if per_voxel is None:
        return images["lesion_pixels"], lesions["lesion_pixels"], PIXELS
    by_image = pd.Series(per_voxel.to_numpy(), index=images["image_id"].to_numpy())
    return (
        images["lesion_pixels"] * per_voxel,
        lesions["lesion_pixels"] * lesions["image_id"].map(by_image),
        MILLILITRES,
    )


def with_lesion_volume(per_image: pd.DataFrame, source: str) -> pd.DataFrame:
    """A per-image metrics table of volumes with the reference and predicted lesion volumes in mL
    (``gt_volume_ml``, ``pred_volume_ml``).

    They are the evaluate stage's ``gt_volume_mm3`` and ``pred_volume_mm3`` / 1000, in their
    place, where the table has them (NaN stays NaN: no physical size); else voxels x voxel
    volume, appended. The last columns are the ones a notebook shows of a wide table. A table of
    pictures, or one without a ``spacing`` column, is returned as it is. ``source`` names the
    table in errors.
    """
    per_voxel = voxel_volumes_ml(per_image, source)
    if per_voxel is None:
        return per_image
    table = per_image.copy()
    for name in ("gt", "pred"):
        measured, shown = f"{name}_volume_mm3", f"{name}_volume_ml"
        if measured in table.columns:
            table[measured] = table[measured] / MM3_PER_ML
            table = table.rename(columns={measured: shown})
        else:
            table[shown] = table[f"{name}_pixels"] * per_voxel
    return table


# ---------------------------------------------------------------- data report


def _with_split(table: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    splits = split.set_index("image_id")["split"]
    return table.assign(split=table["image_id"].map(splits).fillna("unsplit"))


def _sized(
    images: pd.DataFrame, lesions: pd.DataFrame, split: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, SizeUnit]:
    # Both tables with their split and a lesion_size column in the unit of lesion_sizes.
    per_image, per_lesion, unit = lesion_sizes(images, lesions)
    images = _with_split(images, split).assign(lesion_size=per_image)
    return images, _with_split(lesions, split).assign(lesion_size=per_lesion), unit


def _median_text(values: pd.Series, digits: int) -> str:
    return format_value(float(values.median()) if len(values) else None, digits)


def data_report_table(images: pd.DataFrame, lesions: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Per split: images, subjects, images per subject, lesion-positive images, the median lesion
    fraction of lesion-positive images, lesions and their median size (pixels; mL for volumes,
    which also get the median lesion volume of their lesion-positive images), and how the images
    were read (a 16-bit, RGBA or palette picture unlike an 8-bit RGB one) when ``images`` says."""
    images, lesions, unit = _sized(images, lesions, split)
    rows = []
    for name in _split_names(images["split"]):
        chosen = images[images["split"] == name]
        positive = chosen[chosen["lesion_pixels"] > 0]
        sizes = lesions.loc[lesions["split"] == name, "lesion_size"]
        per_subject = chosen.groupby("subject").size()
        row = {
            "split": name,
            "images": len(chosen),
            "subjects": int(chosen["subject"].nunique()),
            "images per subject (max)": int(per_subject.max()),
            "lesion-positive images": len(positive),
            "median lesion fraction (positive images)": _median_text(positive["lesion_fraction"], 5),
            "lesions": len(sizes),
            f"median lesion size ({unit.unit})": _median_text(sizes, unit.digits),
        }
        if unit is MILLILITRES:
            # A picture's total lesion area adds little to its fraction; a volume's in mL is
            # what lesion-load studies report.
            row["median lesion volume (positive images, mL)"] = _median_text(positive["lesion_size"], 3)
        if "read_as" in chosen.columns:  # tables of data stages before it had the column lack it
            row["images read as"] = reading_text(chosen["read_as"])
        rows.append(row)
    return pd.DataFrame(rows)


def reading_text(read_as: pd.Series) -> str:
    """How a split's images were read, most frequent first: ``8-bit RGB: / 255 (40); 16-bit grey:
    / 65535 (2)``, from the data stage's ``read_as`` cells."""
    counts = read_as.value_counts(sort=False)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return "; ".join(f"{how} ({count})" for how, count in ranked)


def plot_data_report(images: pd.DataFrame, lesions: pd.DataFrame, split: pd.DataFrame) -> Figure:
    """Images per subject, lesion fraction per image, lesions per image and lesion sizes, by split.

    Fractions and sizes span orders of magnitude in fundus images, so they are drawn on log axes;
    lesion-free images (fraction 0) are counted in the panel title instead. Sizes are in pixels,
    or in mL for volumes.
    """
    images, lesions, unit = _sized(images, lesions, split)
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
        (fraction_ax, "lesion_fraction", positive, ""),
        (count_ax, "n_lesions", positive, "Lesions per lesion-positive image"),
        (size_ax, "lesion_size", lesions, "Lesion size"),
    ):
        groups = [data.loc[data["split"] == name, column].to_numpy(dtype=float) for name in names]
        shown = [(name, values) for name, values in zip(names, groups, strict=True) if len(values)]
        if shown:
            ax.boxplot([values for _, values in shown], tick_labels=[name for name, _ in shown])
        ax.set_title(title)
        ax.set_xlabel("split")
    fraction_ax.set_yscale("log")
    fraction_ax.set_ylabel(f"lesion {unit.element}s / image {unit.element}s")
    free = int((images["lesion_pixels"] == 0).sum())
    fraction_ax.set_title(f"Lesion-{unit.element} fraction per image\n({free} lesion-free images not shown)")
    count_ax.set_ylabel("lesions (connected components)")
    count_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    size_ax.set_yscale("log")
    size_ax.set_ylabel(f"{unit.unit} per lesion")
    return fig
