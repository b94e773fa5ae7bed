"""Image-level lesion presence from segmentation scores and a classifier, blended by a validation gamma.

Never chooses anything (area scale, gamma) from test data: the fitting functions take validation only.

Sources, each per image on [0, 1]: ``max_probability`` (the map's highest pixel probability, as is),
``lesion_area`` (pixels of the locked mask, mapped by ``area / (area + area_scale)``) and
``classifier`` (the sigmoid of the presence head's logit). The segmentation score is the mean of
the first two; the fused score is ``gamma * classifier + (1 - gamma) * segmentation``, that is the
three-way blend ``gamma, (1 - gamma) / 2, (1 - gamma) / 2`` of classifier, max probability, area.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

from lesionflow.evaluation.vectors import finite_vector
from lesionflow.pipeline.errors import LesionflowError

MAX_PROBABILITY, LESION_AREA, CLASSIFIER = "max_probability", "lesion_area", "classifier"
SEGMENTATION, FUSED = "segmentation", "fused"
OBJECTIVES = {"roc_auc": roc_auc_score, "ap": average_precision_score}
# AUC and AP depend on the ranking only, so neighbouring gammas often tie exactly; this absorbs
# float noise in the sums without merging genuinely different values.
_TIE_TOLERANCE = 1e-12
_TIE_RULE = "largest objective; ties to the gamma nearest 0.5, then the smaller gamma"


def _scores(values: ArrayLike, what: str) -> np.ndarray:
    return finite_vector(values, what, "presence scores must be finite numbers")


def fit_area_scale(val_lesion_area: ArrayLike) -> dict:
    """The area that scores 0.5: the median lesion area of the validation images with any lesion pixel.

    A typical predicted lesion then sits at 0.5 of the area score, where max probability has its
    natural midpoint, so the two average on comparable scales. The transform has one number to
    store and, unlike an empirical CDF of validation areas, no steps. Returns ``area_scale``, the
    rule used and ``n_val_with_area``; with no lesion pixel on any validation image the scale is 1
    (every validation area score is 0 whatever it is) and the rule says so.
    """
    areas = _scores(val_lesion_area, "validation lesion_area")
    if (areas < 0).any():
        raise LesionflowError("validation lesion_area: areas must be >= 0 pixels")
    with_area = areas[areas > 0]
    if with_area.size == 0:
        return {
            "area_scale": 1.0,
            "area_scale_rule": "no validation image has a lesion pixel; scale set to 1 pixel",
            "n_val_with_area": 0,
        }
    return {
        "area_scale": float(np.median(with_area)),
        "area_scale_rule": "median lesion area of validation images with any lesion pixel",
        "n_val_with_area": int(with_area.size),
    }


def area_score(lesion_area: ArrayLike, area_scale: float) -> np.ndarray:
    """``area / (area + area_scale)``: 0 for no lesion pixel, 0.5 at ``area_scale``, towards 1 above."""
    areas = _scores(lesion_area, "lesion_area")
    if (areas < 0).any():
        raise LesionflowError("lesion_area: areas must be >= 0 pixels")
    if not (math.isfinite(area_scale) and area_scale > 0):
        raise LesionflowError(f"area_scale must be a positive number, got {area_scale!r}")
    return areas / (areas + float(area_scale))


def presence_sources(
    prob_max: ArrayLike, lesion_area: ArrayLike, classifier: ArrayLike | None, area_scale: float
) -> dict[str, np.ndarray]:
    """Per-image presence scores of each source on [0, 1], keyed by source name.

    ``classifier`` holds the presence head's logits (None for a segmentation-only model: no
    classifier source); ``area_scale`` comes from :func:`fit_area_scale` on validation.
    """
    maxima = _scores(prob_max, "max_probability")
    if ((maxima < 0) | (maxima > 1)).any():
        raise LesionflowError("max_probability: probabilities must lie in [0, 1]")
    sources = {MAX_PROBABILITY: maxima, LESION_AREA: area_score(lesion_area, area_scale)}
    if classifier is not None:
        sources[CLASSIFIER] = expit(_scores(classifier, "classifier logit"))
    lengths = {name: len(values) for name, values in sources.items()}
    if len(set(lengths.values())) != 1:
        raise LesionflowError(f"presence sources differ in length: {lengths}")
    return sources


def segmentation_presence(sources: Mapping[str, np.ndarray]) -> np.ndarray:
    """The segmentation score: the mean of the max-probability and area scores."""
    return (np.asarray(sources[MAX_PROBABILITY]) + np.asarray(sources[LESION_AREA])) / 2


def fused_presence(sources: Mapping[str, np.ndarray], gamma: float | None) -> np.ndarray:
    """``gamma * classifier + (1 - gamma) * segmentation``; the segmentation score when gamma is NaN.

    A NaN gamma is what :func:`tune_gamma` locks when validation could not choose one; None is
    the same NaN read back from JSON, which writes it as null.
    """
    segmentation = segmentation_presence(sources)
    if gamma is None or math.isnan(gamma):
        return segmentation
    if not 0 <= gamma <= 1:
        raise LesionflowError(f"presence fusion gamma must lie in [0, 1] or be NaN, got {gamma!r}")
    if CLASSIFIER not in sources:
        raise LesionflowError(f"presence fusion gamma is {gamma}, but there is no classifier score to fuse")
    return gamma * np.asarray(sources[CLASSIFIER]) + (1 - gamma) * segmentation


def scores_by_source(sources: Mapping[str, np.ndarray], gamma: float | None) -> dict[str, np.ndarray]:
    """Every source, the segmentation score and the fused score (presence_fusion.presence_by_source
    gives their ROC-AUC and AP with intervals)."""
    return {
        **sources,
        SEGMENTATION: segmentation_presence(sources),
        FUSED: fused_presence(sources, gamma),
    }


def _labels(values: ArrayLike, n: int) -> np.ndarray:
    labels = np.asarray(values)
    if labels.ndim != 1 or len(labels) != n or not np.isin(labels, (0, 1)).all():
        raise LesionflowError(f"presence labels: expected {n} values of 0/1 (or bool), got {labels!r}")
    return labels.astype(bool)


def _metric(objective: str, labels: np.ndarray, scores: np.ndarray) -> float:
    """sklearn's ``objective`` of ``scores``; NaN unless both classes are present."""
    if labels.all() or not labels.any():
        return math.nan
    return float(OBJECTIVES[objective](labels, scores))


def _checked_grid(grid: Sequence[float]) -> list[float]:
    try:
        values = [float(g) for g in grid]
    except (TypeError, ValueError):
        values = []
    if not values or not all(0 <= g <= 1 for g in values):
        raise LesionflowError(
            f"tune.fusion.gammas must be a non-empty list of numbers in [0, 1], got {grid!r}"
        )
    return sorted(set(values))


def _chosen_index(gammas: Sequence[float], values: np.ndarray) -> int:
    """Index of the best value; ties to the gamma nearest 0.5, then the smaller gamma."""
    best = np.nanmax(values)
    tied = [i for i, v in enumerate(values) if v >= best - _TIE_TOLERANCE]
    return min(tied, key=lambda i: (abs(gammas[i] - 0.5), gammas[i]))


def _undefined(reason: str, record: dict) -> dict:
    return {
        **record,
        "gamma": math.nan,
        "objective_value": math.nan,
        "reason": reason,
        "fallback": SEGMENTATION,
    }


def tune_gamma(
    val_sources: Mapping[str, np.ndarray],
    val_labels: ArrayLike,
    grid: Sequence[float],
    objective: str,
) -> dict:
    """Choose the fusion gamma on validation: the grid value whose fused score maximises ``objective``.

    ``objective`` is ``roc_auc`` or ``ap`` (scikit-learn). Ties go to the gamma nearest 0.5 (equal
    weight, the least committed blend), then to the smaller gamma. Returns the locked record:
    gamma, objective and its value, n_pos/n_neg, the grid as records and the rule. With one class
    only in validation, or no classifier, gamma is NaN with the reason, and
    :func:`fused_presence` then gives the segmentation score.
    """
    if objective not in OBJECTIVES:
        raise LesionflowError(f"tune.fusion.objective must be one of {list(OBJECTIVES)}, got {objective!r}")
    gammas = _checked_grid(grid)
    segmentation = segmentation_presence(val_sources)
    labels = _labels(val_labels, len(segmentation))
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    record = {
        "objective": objective,
        "rule": _TIE_RULE,
        "segmentation_score": f"mean of {MAX_PROBABILITY} and {LESION_AREA}",
        "n_pos": n_pos,
        "n_neg": n_neg,
        "n_val_images": len(labels),
        "chosen_on": "validation",
    }
    if CLASSIFIER not in val_sources:
        return _undefined("no classifier score; presence is the segmentation score", {**record, "grid": []})
    values = np.array([_metric(objective, labels, fused_presence(val_sources, g)) for g in gammas])
    table = [{"gamma": g, "objective_value": float(v)} for g, v in zip(gammas, values, strict=True)]
    if np.isnan(values).all():
        only = "lesion-positive" if n_neg == 0 else "lesion-free"
        reason = (
            f"validation has only {only} images, so {objective} is undefined; "
            "presence is the segmentation score"
        )
        return _undefined(reason, {**record, "grid": [{**row, "selected": False} for row in table]})
    chosen = _chosen_index(gammas, values)
    grid_records = [{**row, "selected": i == chosen} for i, row in enumerate(table)]
    return {
        **record,
        "gamma": gammas[chosen],
        "objective_value": float(values[chosen]),
        "reason": f"maximises {objective} of the fused presence score on validation",
        "fallback": None,
        "grid": grid_records,
    }
