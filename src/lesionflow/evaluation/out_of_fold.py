"""Pooled out-of-fold metrics of a k-fold recipe: every fold's validation images, each predicted by the
model that did not train on it and scored with its fold's locked settings, summarised as one set.

Must never pool test images or a fold twice: each development image is in exactly one fold's val.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from lesionflow.evaluation.bootstrap import Resampler
from lesionflow.evaluation.leaderboard_columns import PAIRED_METRICS
from lesionflow.evaluation.summary import summarise
from lesionflow.pipeline.artifacts import read_json, write_csv
from lesionflow.pipeline.errors import LesionflowError

# Counts copied beside the pooled metrics.
POOLED_COUNTS = ("n_images", "n_subjects", "n_gt_positive")


def _read(path: str | os.PathLike) -> pd.DataFrame:
    if not Path(path).is_file():
        raise LesionflowError(f"out-of-fold table {path} not found")
    return pd.read_csv(path, dtype={"image_id": str, "subject": str})


def pooled_row(
    runs: list[str],
    per_image: Mapping[str, str | os.PathLike],
    lesions: Mapping[str, str | os.PathLike],
    bootstrap: Mapping,
    size_bins: list[int],
) -> dict:
    """The pooled validation metrics of the fold runs ``runs`` (their per_image_val and lesions_val
    tables), with subject-bootstrap intervals from the compare section's ``bootstrap``, lesions
    binned by the runs' evaluate.size_bins."""
    tables = [_read(per_image[run]) for run in runs]
    pooled = pd.concat(tables, ignore_index=True)
    repeated = sorted(set(pooled.loc[pooled["image_id"].duplicated(), "image_id"]))
    if repeated:
        raise LesionflowError(f"out-of-fold: images {repeated[:5]} are in the val of two folds of {runs}")
    pooled_lesions = pd.concat([_read(lesions[run]) for run in runs], ignore_index=True)
    resampler = Resampler.from_subjects(
        pooled["subject"].tolist(), bootstrap["n_resamples"], bootstrap["seed"], bootstrap["confidence"],
        "compare.bootstrap",
    )  # fmt: skip
    summary = summarise(pooled, pooled_lesions, resampler, size_bins)
    row: dict = {"n_folds": len(runs), "runs": ", ".join(runs)}
    row.update({count: summary[count] for count in POOLED_COUNTS})
    for metric in PAIRED_METRICS:
        for suffix in ("", "_ci_low", "_ci_high", "_n"):
            row[f"oof_{metric}{suffix}"] = summary.get(metric + suffix, float("nan"))
    return row


def write_out_of_fold(
    groups: Mapping[str, str],
    per_image: Mapping[str, str | os.PathLike],
    lesions: Mapping[str, str | os.PathLike],
    summaries: Mapping[str, str | os.PathLike],
    bootstrap: Mapping,
    out_dir: str | os.PathLike,
) -> pd.DataFrame:
    """Write ``leaderboard_folds.csv``: per recipe of a k-fold config (``groups``: fold run ->
    recipe), its pooled out-of-fold validation metrics; no rows without folds. ``summaries`` are
    the fold runs' evaluate summaries (their lesion size bins)."""
    by_recipe: dict[str, list[str]] = {}
    for run in per_image:
        by_recipe.setdefault(groups.get(run, run), []).append(run)
    rows = []
    for recipe, runs in by_recipe.items():
        size_bins = read_json(summaries[runs[0]])["settings"]["size_bins"]
        rows.append({"group": recipe, **pooled_row(runs, per_image, lesions, bootstrap, size_bins)})
    columns = ["group", "n_folds", "runs", *POOLED_COUNTS] + [
        f"oof_{metric}{suffix}" for metric in PAIRED_METRICS for suffix in ("", "_ci_low", "_ci_high", "_n")
    ]
    table = pd.DataFrame(rows, columns=columns)
    write_csv(table, Path(out_dir) / "leaderboard_folds.csv")
    return table
