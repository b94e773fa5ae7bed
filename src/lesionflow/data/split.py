"""The split stage: train / val / test grouped by subject, stratified by lesion presence or score bin.

It must never put one subject's images into two subsets: that leaks the patient into evaluation.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from lesionflow.data.folds import with_folds
from lesionflow.data.manifest import PATH_ATTR, SUBSETS, lesion_presence, manifest_has_masks, read_manifest
from lesionflow.data.score_column import SCORE_COLUMN, check_score_bins, score_bins
from lesionflow.data.split_summary import split_summary
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

# A manifest column that fixes each image's subset (a published split, or nnU-Net's folds written
# out): when the data stage's manifest has it, the split stage uses it instead of drawing one.
SPLIT_COLUMN = "split"
# More folds let fractions such as 0.7 / 0.15 / 0.15 be met exactly, but each fold must still
# hold a few subjects of each stratum for the stratification to mean anything.
MAX_FOLDS = 20
# The split settings, as the schema's split section lists them.
SETTING_KEYS = ("train", "val", "test", "seed", "nnunet_splits", "fold", "stratify", "score_bins", "folds")
STRATIFY = ("auto", "presence", "score")
SCORE_BIN_COLUMN = "score_bin"


def _check_fractions(fractions: Mapping[str, Any]) -> dict[str, float]:
    checked = {}
    for name, value in fractions.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < 1:
            raise LesionflowError(f"split.{name}: expected a number between 0 and 1, got {value!r}")
        checked[name] = float(value)
    total = sum(checked.values())
    if abs(total - 1.0) > 1e-6:
        raise LesionflowError(
            "split.train, split.val, split.test: expected fractions that sum to 1, "
            f"got {' + '.join(f'{v:g}' for v in checked.values())} = {total:g}"
        )
    return checked


def _folds_per_subset(fractions: Mapping[str, float], n_groups: int) -> dict[str, int]:
    """How many of K equal folds each subset gets, with K the smallest that fits the fractions best.

    The split works at fold granularity, so fractions are met to within about 1/(2K).
    """
    best: tuple[float, int, dict[str, int]] | None = None
    for n_folds in range(len(fractions), min(MAX_FOLDS, n_groups) + 1):
        counts = {name: max(1, round(f * n_folds)) for name, f in fractions.items()}
        counts["train"] = n_folds - counts["val"] - counts["test"]
        if counts["train"] < 1:
            continue
        error = sum(
            abs(Fraction(counts[name], n_folds) - Fraction(f)) for name, f in fractions.items()
        )
        if best is None or error < best[0] - 1e-9:
            best = (float(error), n_folds, counts)
    if best is None:
        raise LesionflowError(
            f"split: the dataset has {n_groups} subject(s); at least 3 are needed for "
            "train, val and test without sharing a subject"
        )
    return best[2]


def _dealt_subsets(
    subjects: np.ndarray, strata: np.ndarray, fractions: Mapping[str, float], seed: int
) -> list[str]:
    """Each image's subset: whole folds of one StratifiedGroupKFold dealt to test, val, then train."""
    folds = _folds_per_subset(fractions, len(np.unique(subjects)))
    n_folds = sum(folds.values())
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=int(seed))
    fold_of_image = np.empty(len(subjects), dtype=int)
    for fold, (_, held_out) in enumerate(splitter.split(subjects, strata, groups=subjects)):
        fold_of_image[held_out] = fold
    # Folds 0.. go to test, then val, then train; the splitter has already shuffled subjects.
    subset_of_fold = ["test"] * folds["test"] + ["val"] * folds["val"] + ["train"] * folds["train"]
    return [subset_of_fold[fold] for fold in fold_of_image]


def _presence_needs_masks(manifest_df: pd.DataFrame) -> None:
    """Raise LesionflowError naming split.stratify when the manifest has no masks to stratify by."""
    if not manifest_has_masks(manifest_df):
        manifest = manifest_df.attrs.get(PATH_ATTR, "the data manifest")
        raise LesionflowError(
            f"split.stratify: 'presence' stratifies by lesion presence, which needs masks, but "
            f"manifest {manifest} has none (no mask column); set split.stratify: score or auto"
        )


def _drawn_split(
    manifest_df: pd.DataFrame, train: float, val: float, test: float, seed: int, strata: np.ndarray | None
) -> pd.DataFrame:
    """The split stratified by ``strata`` (one label per image), or by lesion presence when None.

    ``lesion_positive`` is NA throughout when the manifest has no masks (presence is unknown).
    """
    if strata is None:
        _presence_needs_masks(manifest_df)
    fractions = _check_fractions({"train": train, "val": val, "test": test})
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise LesionflowError(f"split.seed: expected an integer >= 0, got {seed!r}")
    positive = lesion_presence(manifest_df).to_numpy()
    subjects = manifest_df["subject"].astype(str).to_numpy()
    subsets = _dealt_subsets(subjects, positive if strata is None else strata, fractions, seed)
    split_df = pd.DataFrame(
        {
            "image_id": manifest_df["image_id"].astype(str).to_numpy(),
            "subject": subjects,
            "split": subsets,
            "lesion_positive": positive,
        }
    )
    empty = [name for name in SUBSETS if not (split_df["split"] == name).any()]
    if empty:
        raise LesionflowError(
            f"split.{empty[0]}: no subject ended up in this subset; the dataset has too few "
            "subjects for these fractions"
        )
    return split_df


def make_split(
    manifest_df: pd.DataFrame,
    train: float,
    val: float,
    test: float,
    seed: int,
) -> pd.DataFrame:
    """Assign every image to train, val or test: ``image_id, subject, split, lesion_positive``.

    One scikit-learn StratifiedGroupKFold (groups = subjects, classes = lesion presence of each
    image, shuffled with ``seed``) cuts the data into K folds; whole folds are dealt to test, val
    and train in proportion to the fractions. No subject is ever in two subsets; fractions are
    met approximately because subjects are not divided. A manifest without masks has no lesion
    presence: LesionflowError naming split.stratify.
    """
    return _drawn_split(manifest_df, train, val, test, seed, None)


def manifest_scores(manifest_df: pd.DataFrame) -> np.ndarray:
    """The data manifest's ``score`` column as floats; LesionflowError if a cell is not a number."""
    values = pd.to_numeric(manifest_df[SCORE_COLUMN], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise LesionflowError(
            f"manifest column '{SCORE_COLUMN}': {bad.size} cell(s) are not finite numbers, e.g. "
            f"{manifest_df[SCORE_COLUMN].iloc[bad[0]]!r} of image {manifest_df['image_id'].iloc[bad[0]]!r}; "
            "the data stage writes this column from data.score_column"
        )
    return values


def with_scores(split_df: pd.DataFrame, scores: np.ndarray, cuts: list[float]) -> pd.DataFrame:
    """``split_df`` with each image's ``score`` and ``score_bin`` label (see scores.score_bin_labels)."""
    return split_df.assign(**{SCORE_COLUMN: scores, SCORE_BIN_COLUMN: score_bins(scores, cuts)})


def make_score_split(
    manifest_df: pd.DataFrame,
    train: float,
    val: float,
    test: float,
    seed: int,
    cuts: list[float],
) -> pd.DataFrame:
    """Assign every image to train, val or test, balancing the score bins that ``cuts`` make.

    As :func:`make_split`, with each image's score bin as its class (so a subject's visits, in
    one group, stay in one subset even when their bins differ); the table gains ``score`` and
    ``score_bin``. ``cuts`` is ``split.score_bins``, checked.
    """
    cuts = check_score_bins(cuts, "split.score_bins")
    scores = manifest_scores(manifest_df)
    strata = np.asarray(score_bins(scores, cuts))
    return with_scores(_drawn_split(manifest_df, train, val, test, seed, strata), scores, cuts)


def fixed_split(manifest_df: pd.DataFrame) -> pd.DataFrame:
    """The split that the manifest's ``split`` column gives: ``image_id, subject, split, lesion_positive``.

    ``lesion_positive`` is NA throughout when the manifest has no masks.

    Checked as a drawn split is: every row is in train, val or test (the manifest check reports
    bad cells row by row), no subject is in two subsets, and no subset is empty. Raises
    LesionflowError naming the column and the first offending subject, with their count.
    """
    subsets = manifest_df[SPLIT_COLUMN].astype(str).str.strip()
    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        raise LesionflowError(
            f"manifest column '{SPLIT_COLUMN}': values {unknown} are not {', '.join(SUBSETS)}"
        )
    subjects = manifest_df["subject"].astype(str)
    per_subject = subsets.groupby(subjects.to_numpy()).unique()
    shared = per_subject[per_subject.map(len) > 1]
    if len(shared):
        first = shared.index[0]
        raise LesionflowError(
            f"manifest column '{SPLIT_COLUMN}': {len(shared)} subject(s) have images in two subsets, "
            f"e.g. subject {first!r} in {' and '.join(sorted(shared.iloc[0]))}; a subject's images "
            "must share one subset, or the patient leaks into evaluation"
        )
    empty = [name for name in SUBSETS if not (subsets == name).any()]
    if empty:
        raise LesionflowError(
            f"manifest column '{SPLIT_COLUMN}': no image is in {empty[0]}; train, val and test "
            "each need images"
        )
    return pd.DataFrame(
        {
            "image_id": manifest_df["image_id"].astype(str).to_numpy(),
            "subject": subjects.to_numpy(),
            "split": subsets.to_numpy(),
            "lesion_positive": lesion_presence(manifest_df).to_numpy(),
        }
    )


def _nnunet_folds(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """The folds of an nnU-Net ``splits_final.json``, checked; LesionflowError naming the file."""
    expected = 'a list of {"train": [case ids], "val": [case ids]}, one per fold'
    try:
        folds = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LesionflowError(f"split.nnunet_splits: cannot read {path} ({err})") from None
    well_formed = isinstance(folds, list) and folds and all(
        isinstance(fold, dict)
        and all(isinstance(fold.get(part), list) for part in ("train", "val"))
        and all(isinstance(case, str) for part in ("train", "val") for case in fold[part])
        for fold in folds
    )
    if not well_formed:
        raise LesionflowError(f"split.nnunet_splits: {path} is not an nnU-Net splits file ({expected})")
    return folds


def nnunet_subsets(path: str | os.PathLike, fold: int, image_ids: pd.Series) -> list[str]:
    """Each image's subset from fold ``fold`` of an nnU-Net splits file: train, val, else test.

    The cases it names must be image ids of the manifest, and none may be in both train and val.
    """
    folds = _nnunet_folds(path)
    if not 0 <= fold < len(folds):
        raise LesionflowError(
            f"split.fold: {fold}, but {path} has {len(folds)} folds (0 to {len(folds) - 1})"
        )
    train, val = set(folds[fold]["train"]), set(folds[fold]["val"])
    ids = set(image_ids.astype(str))
    unknown = sorted((train | val) - ids)
    if unknown:
        raise LesionflowError(
            f"split.nnunet_splits: fold {fold} of {path} names {len(unknown)} case(s) that are not "
            f"image ids of the manifest, e.g. {', '.join(unknown[:5])}"
        )
    both = sorted(train & val)
    if both:
        raise LesionflowError(
            f"split.nnunet_splits: fold {fold} of {path} puts {len(both)} case(s) in train and val, "
            f"e.g. {', '.join(both[:5])}"
        )
    return ["train" if i in train else "val" if i in val else "test" for i in image_ids.astype(str)]


def _by_score(stratify: Any, has_scores: bool, manifest_path: str | os.PathLike) -> bool:
    """Whether the drawn split is stratified by score bin (else by lesion presence).

    ``auto`` is score whenever there are scores, so also for a manifest without masks, which
    always has them (``manifest.read_manifest``); ``presence`` without masks is refused by
    :func:`run_split`, naming split.stratify.
    """
    if stratify not in STRATIFY:
        raise LesionflowError(f"split.stratify: expected one of {', '.join(STRATIFY)}, got {stratify!r}")
    if stratify == "score" and not has_scores:
        raise LesionflowError(
            f"split.stratify: 'score' needs scores, but the data manifest {manifest_path} has no "
            f"'{SCORE_COLUMN}' column; set data.score_column, or split.stratify: presence"
        )
    return has_scores if stratify == "auto" else stratify == "score"


def run_split(
    manifest_path: str | os.PathLike, settings: Mapping[str, Any], out_dir: str | os.PathLike
) -> None:
    """The split stage: write ``split.csv`` and ``split_summary.csv``.

    A ``split`` column in the manifest fixes every image's subset (:func:`fixed_split`); the
    fractions and seed are then not used. Otherwise the split is drawn by :func:`make_split`
    (``stratify: presence``) or :func:`make_score_split` (``score``); ``auto`` is score when the
    data manifest has a ``score`` column (the data stage's, from data.score_column). With scores,
    ``split.csv`` gains ``score`` and ``score_bin`` and the summary the score columns, whichever
    way the split was made. A manifest without masks gets NA ``lesion_positive`` cells and
    summary counts; ``stratify: presence`` is then refused, even for a split the manifest fixes.
    With ``folds`` the train and val images are dealt into that many subject-grouped folds (a
    ``fold`` column; all of them in train), whose subsets each fold's runs get from the fold stage.
    The split is drawn by the analysis notebook, not here: plotting code in this stage would put a
    figure edit into the key of every stage after it, training included.
    """
    unknown = [key for key in settings if key not in SETTING_KEYS]
    if unknown:
        raise LesionflowError(f"split.{unknown[0]}: unknown setting; expected {', '.join(SETTING_KEYS)}")
    settings = complete_section({"split": settings}, "split", SETTING_KEYS)
    out = Path(out_dir)
    manifest_df = read_manifest(manifest_path)
    has_scores = SCORE_COLUMN in manifest_df.columns
    by_score = _by_score(settings["stratify"], has_scores, manifest_path)
    if settings["stratify"] == "presence":
        _presence_needs_masks(manifest_df)
    cuts = check_score_bins(settings["score_bins"], "split.score_bins")
    if settings["nnunet_splits"] is not None:
        if SPLIT_COLUMN in manifest_df.columns:
            raise LesionflowError(
                f"split.nnunet_splits: the manifest has a '{SPLIT_COLUMN}' column too; give the "
                "split one way, not both"
            )
        subsets = nnunet_subsets(settings["nnunet_splits"], settings["fold"], manifest_df["image_id"])
        manifest_df = manifest_df.assign(**{SPLIT_COLUMN: subsets})
    fractions = {key: settings[key] for key in ("train", "val", "test", "seed")}
    if SPLIT_COLUMN in manifest_df.columns:
        split_df = fixed_split(manifest_df)
        print(f"split: the manifest's '{SPLIT_COLUMN}' column fixes every subset", file=sys.stderr)
    elif by_score:
        split_df = make_score_split(manifest_df, **fractions, cuts=cuts)
    else:
        split_df = make_split(manifest_df, **fractions)
    if has_scores and SCORE_BIN_COLUMN not in split_df.columns:
        split_df = with_scores(split_df, manifest_scores(manifest_df), cuts)
    if settings["folds"] is not None:
        # The development images (train and val) are dealt into folds stratified as the split was.
        strata = split_df[SCORE_BIN_COLUMN] if by_score else split_df["lesion_positive"]
        split_df = with_folds(split_df, int(settings["folds"]), int(settings["seed"]), strata.to_numpy())
    summary_df = split_summary(split_df, cuts if has_scores else None)
    artifacts.write_csv(split_df, out / "split.csv")
    artifacts.write_csv(summary_df, out / "split_summary.csv")
