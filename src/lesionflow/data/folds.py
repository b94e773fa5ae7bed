"""k-fold cross-validation: the development images (all but test) dealt into folds by the split stage,
and each fold's subsets written by the fold stage for the runs of that fold.

Must never put a subject in two folds nor a test image in any fold: the test set stays held out, and
every fold's validation images are its own fold, chosen before any model sees them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from lesionflow.data.score_column import SCORE_COLUMN
from lesionflow.data.split_summary import split_summary
from lesionflow.data.subsets import read_split
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError

FOLD_COLUMN = "fold"
DEVELOPMENT = ("train", "val")


def with_folds(split_df: pd.DataFrame, n_folds: int, seed: int, strata: np.ndarray) -> pd.DataFrame:
    """``split_df`` with its train and val images (the development set) dealt into ``n_folds``
    subject-grouped folds stratified by ``strata`` (one label per image), in a ``fold`` column
    (empty for test images), and all of them in ``train``: each fold's runs take their fold as val.
    """
    development = split_df["split"].isin(DEVELOPMENT).to_numpy()
    subjects = split_df["subject"].astype(str).to_numpy()[development]
    n_subjects = len(np.unique(subjects))
    if n_folds > n_subjects:
        raise LesionflowError(
            f"split.folds: {n_folds} folds need at least {n_folds} subjects outside the test set; "
            f"there are {n_subjects}"
        )
    labels = np.asarray(strata)[development].astype(str)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=int(seed))
    folds = np.full(len(split_df), -1)
    development_rows = np.flatnonzero(development)
    for fold, (_, held_out) in enumerate(splitter.split(subjects, labels, groups=subjects)):
        folds[development_rows[held_out]] = fold
    out = split_df.copy()
    out.loc[development, "split"] = "train"
    out[FOLD_COLUMN] = pd.array(np.where(folds >= 0, folds, None), dtype="Int64")
    return out


def fold_subsets(table: pd.DataFrame, fold_of: Mapping[str, int], key: str, fold: int) -> pd.DataFrame:
    """``table`` with the images of ``fold`` (by their ``key`` column, e.g. a tile's
    ``source_image_id``) in val and the rest of the development set in train; test as it was."""
    folds = table[key].astype(str).map(fold_of)
    out = table.copy()
    development = folds.notna()
    out.loc[development, "split"] = np.where(folds[development] == fold, "val", "train")
    return out


def run_fold(
    split_path: str | os.PathLike,
    items_split_path: str | os.PathLike,
    images_path: str | os.PathLike,
    settings: Mapping[str, Any],
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """The fold stage: write ``split.csv`` (source images), ``items_split.csv`` (the preprocess
    stage's items) and ``images.csv`` (its image table) with fold ``settings["fold"]``'s subsets, its
    summary by the split's ``score_bins``,
    ``split_summary.csv`` and ``fold.json``; return the counts."""
    missing = [key for key in ("fold", "score_bins") if key not in settings]
    if missing:
        raise LesionflowError(
            f"fold settings: missing {missing}; the plan passes the run's fold and split.score_bins"
        )
    fold = settings["fold"]
    split_df = read_split(split_path)
    if FOLD_COLUMN not in split_df.columns:
        raise LesionflowError(f"split file {split_path} has no '{FOLD_COLUMN}' column: set split.folds")
    n_folds = int(split_df[FOLD_COLUMN].max()) + 1
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < n_folds:
        raise LesionflowError(f"fold: expected a fold of {split_path} (0 to {n_folds - 1}), got {fold!r}")
    fold_of = {
        image_id: int(value)
        for image_id, value in zip(split_df["image_id"], split_df[FOLD_COLUMN], strict=True)
        if pd.notna(value)
    }
    items = read_split(items_split_path)
    images = pd.read_csv(images_path, dtype={"image_id": str, "subject": str, "split": str})
    out = Path(out_dir)
    chosen = fold_subsets(split_df, fold_of, "image_id", fold)
    artifacts.write_csv(chosen, out / "split.csv")
    artifacts.write_csv(fold_subsets(items, fold_of, "source_image_id", fold), out / "items_split.csv")
    artifacts.write_csv(fold_subsets(images, fold_of, "image_id", fold), out / "images.csv")
    cuts = settings["score_bins"] if SCORE_COLUMN in chosen.columns else None
    artifacts.write_csv(split_summary(chosen, cuts), out / "split_summary.csv")
    counts = chosen["split"].value_counts().to_dict()
    artifacts.write_json(out / "fold.json", {"fold": fold, "n_folds": n_folds, "images_per_subset": counts})
    print(f"fold {fold} of {n_folds}: {counts}", file=sys.stderr)
    return {"fold": fold, "n_folds": n_folds, "images_per_subset": counts}
