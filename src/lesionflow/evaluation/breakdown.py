"""Zero-Dice breakdown: why each image with Dice exactly 0 failed (false positive, miss, disjoint).

Several lesion classes are broken down class by class: an image is judged per class.

Must never count an undefined Dice (empty reference and empty prediction, NaN) as a zero.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.pipeline.artifacts import write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError

CASES = ("A_GT_empty_PRED_nonempty", "B_GT_nonempty_PRED_empty", "C_disjoint")
STATISTICS = ("count", "mean", "std", "min", "25%", "50%", "75%", "max")
REQUIRED_COLUMNS = ("image_id", "dice", "gt_pixels", "pred_pixels")
# The per-image table of a run of several lesion classes has one block of rows per class.
CLASS_COLUMN = "class"


def zero_dice_images(per_image: pd.DataFrame) -> pd.DataFrame:
    """Every image with Dice == 0 (NaN excluded), each assigned exactly one case of CASES."""
    zero = per_image[per_image["dice"].to_numpy(dtype=float) == 0].copy()
    gt = zero["gt_pixels"].to_numpy() > 0
    pred = zero["pred_pixels"].to_numpy() > 0
    # Dice 0 implies at least one mask non-empty and no overlap, so these three are exhaustive.
    zero["case"] = np.select([~gt & pred, gt & ~pred, gt & pred], list(CASES), default="unexpected")
    columns = [c for c in ("image_id", "subject") if c in zero] + [
        "case",
        "dice",
        "gt_pixels",
        "pred_pixels",
    ]
    # The size bin of a missed image's total reference area tells small misses from big ones.
    if "gt_size_bin" in zero:
        zero["gt_size_bin"] = zero["gt_size_bin"].fillna("").astype(str)
        columns.append("gt_size_bin")
    return zero[columns].sort_values(["case", "image_id"]).reset_index(drop=True)


def zero_dice_summary(zero_df: pd.DataFrame, n_images: int) -> pd.DataFrame:
    """One row per case (all three, count 0 allowed): counts, percentages, pixel statistics.

    Pixel statistics follow ``pandas.Series.describe``; they are NaN for an empty case
    (and std is NaN for a single image).
    """
    n_zero = len(zero_df)
    rows = []
    for case in CASES:
        members = zero_df[zero_df["case"] == case]
        row: dict = {
            "case": case,
            "count": len(members),
            # 0 of 0 is undefined, not 0 %.
            "percent_of_zero_dice": 100.0 * len(members) / n_zero if n_zero else np.nan,
            "percent_of_images": 100.0 * len(members) / n_images if n_images else np.nan,
        }
        for column in ("gt_pixels", "pred_pixels"):
            described = members[column].astype(float).describe()
            for stat in STATISTICS:
                value = described.get(stat, np.nan)
                row[f"{column}_{stat}"] = int(value) if stat == "count" else float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def zero_dice_record(per_image: pd.DataFrame, zero_df: pd.DataFrame, summary: pd.DataFrame) -> dict:
    """Everything of the breakdown in one JSON-ready mapping, with the images Dice could not judge."""
    dice = pd.to_numeric(per_image["dice"], errors="coerce")
    by_bin: dict = {}
    if "gt_size_bin" in zero_df:
        missed = zero_df[zero_df["gt_pixels"] > 0]
        for case, members in missed.groupby("case"):
            by_bin[case] = {str(k): int(v) for k, v in members["gt_size_bin"].value_counts().items()}
    return {
        "n_images": int(len(per_image)),
        "n_zero_dice": int(len(zero_df)),
        # Both masks empty: Dice is undefined, so these are neither zero nor counted above.
        "n_dice_undefined": int(dice.isna().sum()),
        "cases": summary.to_dict(orient="records"),
        "missed_by_size_bin": by_bin,
        "images": zero_df.to_dict(orient="records"),
    }


def run_breakdown(per_image_csv: str | os.PathLike, out_dir: str | os.PathLike) -> pd.DataFrame:
    """Write ``zero_dice_images.csv``, ``zero_dice_summary.csv`` and ``zero_dice.json``."""
    path = Path(per_image_csv)
    if not path.is_file():
        raise LesionflowError(f"per-image table {path} does not exist")
    per_image = pd.read_csv(path, dtype={"image_id": str, "subject": str, "gt_size_bin": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in per_image.columns]
    if missing:
        raise LesionflowError(f"per-image table {path} lacks the columns {missing}")
    out = Path(out_dir)
    if CLASS_COLUMN in per_image.columns:
        return _class_breakdown(per_image, out)
    zero = zero_dice_images(per_image)
    summary = zero_dice_summary(zero, len(per_image))
    write_csv(zero, out / "zero_dice_images.csv")
    write_csv(summary, out / "zero_dice_summary.csv")
    write_json(out / "zero_dice.json", zero_dice_record(per_image, zero, summary))
    return summary


def _class_breakdown(per_image: pd.DataFrame, out: Path) -> pd.DataFrame:
    """The breakdown of each lesion class of a table with a ``class`` column, class by class: the
    tables gain a ``class`` column first, the record one section per class."""
    zeros, summaries, records = [], [], {}
    for name, table in per_image.groupby(CLASS_COLUMN, sort=False):
        table = table.drop(columns=CLASS_COLUMN)
        zero = zero_dice_images(table)
        summary = zero_dice_summary(zero, len(table))
        records[str(name)] = zero_dice_record(table, zero, summary)
        zeros.append(zero.assign(**{CLASS_COLUMN: name}))
        summaries.append(summary.assign(**{CLASS_COLUMN: name}))
    zero, summary = (_class_first(pd.concat(parts, ignore_index=True)) for parts in (zeros, summaries))
    write_csv(zero, out / "zero_dice_images.csv")
    write_csv(summary, out / "zero_dice_summary.csv")
    write_json(out / "zero_dice.json", {"classes": records})
    return summary


def _class_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[[CLASS_COLUMN, *[c for c in table.columns if c != CLASS_COLUMN]]]
