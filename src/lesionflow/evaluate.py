"""The evaluate stage: apply the settings locked on validation to val and test, score every image.

Must never choose or change a setting: test predictions are read once, with locked.json as is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.artifacts import load_arrays, read_json, write_csv, write_json
from lesionflow.errors import LesionflowError
from lesionflow.metrics import CONVENTIONS, per_image_table, summarise
from lesionflow.postprocess import apply_locked
from lesionflow.split import read_split
from lesionflow.tune import check_probs_in_split, load_reference_masks

LOCKED_KEYS = (
    "threshold",
    "min_lesion_area",
    "presence_threshold",
    "presence_score",
    "connectivity",
)


def read_locked(path: str | os.PathLike) -> dict:
    """Read ``locked.json`` and check it holds every setting evaluation applies."""
    if not Path(path).is_file():
        raise LesionflowError(f"locked settings file {path} does not exist")
    locked = read_json(path)
    missing = [key for key in LOCKED_KEYS if locked.get(key) is None]
    if missing:
        raise LesionflowError(f"locked settings file {path} lacks the keys {missing}")
    if locked.get("chosen_on") != "validation":
        raise LesionflowError(
            f"locked settings file {path} says chosen_on={locked.get('chosen_on')!r}; "
            "only settings chosen on validation may be applied"
        )
    return locked


def score_subset(
    probs: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    subjects: Mapping[str, str],
    locked: Mapping,
) -> pd.DataFrame:
    """Apply ``locked`` to every probability map and return the per-image metrics table."""
    ids = sorted(probs)
    preds, scores, calls = [], [], []
    for image_id in ids:
        mask, score, present = apply_locked(probs[image_id], locked)
        preds.append(mask)
        scores.append(score)
        calls.append(present)
    return per_image_table(
        ids,
        [subjects[i] for i in ids],
        preds,
        [masks[i] for i in ids],
        [np.asarray(probs[i], dtype=np.float32) for i in ids],
        scores,
        calls,
    )


def _load_subset(
    manifest: str | os.PathLike, split_df: pd.DataFrame, probs_path: str | os.PathLike, subset: str
) -> tuple[dict, dict]:
    if not Path(probs_path).is_file():
        raise LesionflowError(f"probability file {probs_path} does not exist")
    probs = load_arrays(probs_path)
    check_probs_in_split(probs, split_df, subset, probs_path)
    shapes = {i: p.shape for i, p in probs.items()}
    return probs, load_reference_masks(manifest, sorted(probs), shapes)


def run_evaluate(
    manifest: str | os.PathLike,
    split: str | os.PathLike,
    probs_val_path: str | os.PathLike,
    probs_test_path: str | os.PathLike,
    locked_path: str | os.PathLike,
    settings: Mapping,
    out_dir: str | os.PathLike,
) -> dict:
    """Write ``per_image_val.csv``, ``per_image_test.csv`` and ``summary.json``; return the summary.

    ``settings`` is the ``evaluate`` section (``{}`` today; ``{"evaluate": {...}}`` is accepted).
    """
    if "evaluate" in settings and isinstance(settings["evaluate"], Mapping):
        settings = settings["evaluate"]
    if settings:
        raise LesionflowError(
            f"evaluate settings: unknown keys {['evaluate.' + str(k) for k in settings]}"
        )
    locked = read_locked(locked_path)
    split_df = read_split(split)
    subjects = dict(zip(split_df["image_id"], split_df["subject"], strict=True))
    out = Path(out_dir)
    summary: dict = {}
    for subset, path in (("val", probs_val_path), ("test", probs_test_path)):
        probs, masks = _load_subset(manifest, split_df, path, subset)
        table = score_subset(probs, masks, subjects, locked)
        write_csv(table, out / f"per_image_{subset}.csv")
        summary[subset] = summarise(table)
    summary["locked"] = locked
    summary["conventions"] = dict(CONVENTIONS)
    write_json(out / "summary.json", summary)
    return summary
