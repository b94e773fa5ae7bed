"""Presence fusion of a dual-head run in the tune and evaluate stages: the classifier's score blended
with the segmentation's, gamma chosen on validation (fusion.json), applied as locked to val and test.

Must never choose anything on test images, nor invent a classifier score: a run without a presence
head locks no gamma (null, with the reason) and keeps its presence score as tuning chose it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lesionflow.evaluation import bootstrap
from lesionflow.evaluation.fusion import fit_area_scale, presence_sources, scores_by_source, tune_gamma
from lesionflow.evaluation.postprocess import binarize
from lesionflow.pipeline.artifacts import open_arrays, read_json
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

FUSION_KEYS = ("gammas", "objective")
# The per-image columns evaluate adds for each presence source (presence_<source>).
COLUMN_PREFIX = "presence_"
# Per-image presence columns that are not a source's score.
NOT_SOURCES = ("presence_score", "presence_pred")


def classifier_logits(path: str | os.PathLike, image_ids: Sequence[str]) -> np.ndarray | None:
    """The presence classifier's logit of each of ``image_ids`` from the infer stage's
    ``<subset>_presence.csv``; None for a model without a presence head (every score empty)."""
    table = pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")
    missing = sorted(set(image_ids) - set(table.index))
    if missing:
        raise LesionflowError(f"{path}: lacks the image ids {missing[:5]}")
    logits = table.loc[list(image_ids), "presence_logit"].to_numpy(dtype=float)
    if np.isnan(logits).all():
        return None
    if np.isnan(logits).any():
        raise LesionflowError(f"{path}: the presence classifier scored only some images")
    return logits


def tune_fusion(
    max_prob: np.ndarray, lesion_area: np.ndarray, truth: np.ndarray, logits: np.ndarray | None, tune: Mapping
) -> dict:
    """The locked fusion of validation images: the area scale and gamma (NaN, with the reason,
    without a classifier or with one class only), from their max probability, their locked mask's
    area before presence gating, their reference presence and the classifier's logits."""
    fusion = complete_section(tune, "fusion", FUSION_KEYS)
    area = fit_area_scale(lesion_area)
    sources = presence_sources(max_prob, lesion_area, logits, area["area_scale"])
    return {**area, **tune_gamma(sources, truth, fusion["gammas"], fusion["objective"])}


def read_fusion(path: str | os.PathLike) -> dict:
    """``fusion.json`` of the tune stage, checked to have been chosen on validation."""
    record = read_json(path)
    if record.get("chosen_on") != "validation" or "area_scale" not in record:
        raise LesionflowError(f"fusion file {path} was not written by the tune stage on validation")
    return record


def locked_areas(probs_path: str | os.PathLike, image_ids: Sequence[str], locked: Mapping) -> tuple:
    """Each image's max probability and its locked mask's area before presence gating, reading the
    maps one at a time."""
    max_prob, area = [], []
    with open_arrays(probs_path) as probs:
        for image_id in image_ids:
            prob = np.asarray(probs[image_id], dtype=np.float32)
            max_prob.append(float(prob.max()))
            mask = binarize(prob, locked["threshold"], locked["min_lesion_area"], locked["connectivity"])
            area.append(int(np.count_nonzero(mask)))
    return np.array(max_prob), np.array(area, dtype=float)


def with_fused_presence(
    table: pd.DataFrame, probs_path: str | os.PathLike, logits: np.ndarray, locked: Mapping, fusion: Mapping
) -> pd.DataFrame:
    """The per-image table with a ``presence_<source>`` column per source (max probability, lesion
    area, classifier, segmentation, fused) and ``presence_score`` set to the fused score."""
    image_ids = table["image_id"].astype(str).tolist()
    max_prob, area = locked_areas(probs_path, image_ids, locked)
    sources = presence_sources(max_prob, area, logits, fusion["area_scale"])
    gamma = fusion.get("gamma")
    scores = scores_by_source(sources, np.nan if gamma is None else gamma)
    table = table.copy()
    for name, values in scores.items():
        table[COLUMN_PREFIX + name] = values
    table["presence_score"] = scores["fused"]
    return table


def presence_by_source(table: pd.DataFrame, resampler: bootstrap.Resampler) -> dict:
    """ROC-AUC and AP of every ``presence_<source>`` column, with subject-bootstrap intervals."""
    truth = table["gt_pixels"].to_numpy(dtype=float) > 0
    subjects = table["subject"].astype(str).to_numpy()
    out = {}
    for column in [c for c in table.columns if c.startswith(COLUMN_PREFIX) and c not in NOT_SOURCES]:
        scores = table[column].to_numpy(dtype=float)
        name = column.removeprefix(COLUMN_PREFIX)
        out[name] = {
            **bootstrap.describe(bootstrap.roc_auc(truth, scores, subjects, resampler), "roc_auc"),
            **bootstrap.describe(bootstrap.average_precision(truth, scores, subjects, resampler), "ap"),
        }
    return out

