"""Evaluation of several lesion classes: every binary metric per class, macro means, and confusion.

Each class is scored exactly as a binary run is, on its own channel (its locked settings, its
prediction, its reference), so a class's tables equal what a binary evaluation of that class
alone gives. Macro means average the classes whose value is defined, and say which; a class that
no image holds is NaN with its count, never a 0 pulling the mean down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lesionflow.data.lesion_classes import LesionClasses, check_channels
from lesionflow.evaluation import bootstrap
from lesionflow.evaluation.bootstrap import Estimate, Resampler
from lesionflow.evaluation.lesions import label_lesions
from lesionflow.evaluation.metrics import LesionMatching, ScoreTables
from lesionflow.evaluation.postprocess import apply_locked, locked_at_scale
from lesionflow.evaluation.summary import image_estimates, summarise
from lesionflow.io.geometry import Geometry
from lesionflow.pipeline.errors import LesionflowError

# The confusion tables' row and column for "no class": background pixels, missed lesions.
NONE = "none"
# The metrics whose macro mean over classes the summary gives.
MACRO_METRICS = (
    "dice_pos", "iou_pos", "lesion_sensitivity", "lesion_precision", "lesion_f1",
    "fp_lesions_per_empty_image", "false_positive_rate_empty", "presence_roc_auc", "presence_ap",
)  # fmt: skip


@dataclass(frozen=True)
class ClassPrediction:
    """The locked prediction of every channel of one image: masks (C, ...), presence scores, calls."""

    masks: np.ndarray
    scores: tuple[float, ...]
    present: tuple[bool, ...]


def predict_classes(
    probs: np.ndarray, locked: Mapping[str, Mapping], classes: LesionClasses
) -> ClassPrediction:
    """Apply each class's locked settings to its probability channel.

    For mutually exclusive classes a pixel that two classes call lesion goes to the one with the
    higher probability (the first class on a tie), so the prediction is a label map again.
    """
    probs = check_channels(probs, classes, "the probability map")
    missing = [name for name in classes.names if name not in locked]
    if missing:
        raise LesionflowError(f"the locked settings lack the class(es) {missing}")
    applied = [apply_locked(probs[c], locked[name]) for c, name in enumerate(classes.names)]
    masks = np.stack([mask for mask, _, _ in applied])
    if classes.exclusive and len(classes.names) > 1:
        masks = _one_class_per_pixel(masks, probs)
    return ClassPrediction(masks, tuple(s for _, s, _ in applied), tuple(p for _, _, p in applied))


def _one_class_per_pixel(masks: np.ndarray, probs: np.ndarray) -> np.ndarray:
    claimed = np.where(masks, probs, -np.inf)
    winner = np.argmax(claimed, axis=0)
    return masks & (np.arange(len(masks)).reshape((-1,) + (1,) * (masks.ndim - 1)) == winner)


class ClassTables:
    """One :class:`ScoreTables` per class, filled one image at a time (an image is never kept)."""

    def __init__(self, classes: LesionClasses, matching: LesionMatching, size_bins: Sequence[int]) -> None:
        self.classes = classes
        self.per_class = {name: ScoreTables(matching, size_bins) for name in classes.names}

    def add(
        self,
        image_id: str,
        subject: str,
        prediction: ClassPrediction,
        reference: np.ndarray,
        probs: np.ndarray,
        geometry: Geometry,
    ) -> None:
        """Score every class of one image: its channel of the prediction against its reference."""
        reference = check_channels(reference, self.classes, f"the reference of {image_id}")
        for c, name in enumerate(self.classes.names):
            self.per_class[name].add(
                image_id, subject, prediction.masks[c], reference[c], probs[c], geometry,
                presence_score=prediction.scores[c], presence_pred=prediction.present[c],
            )  # fmt: skip

    def tables(self) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
        """Per class: the per-image and per-lesion tables, as a binary evaluation writes them."""
        return {name: tables.tables() for name, tables in self.per_class.items()}


def score_classes(
    items: Iterable[tuple[str, np.ndarray, np.ndarray, Geometry]],
    subjects: Mapping[str, str],
    locked: Mapping[str, Mapping],
    classes: LesionClasses,
    matching: LesionMatching,
    size_bins: Sequence[int],
    scales: Mapping[str, float] | None = None,
) -> tuple[dict[str, tuple[pd.DataFrame, pd.DataFrame]], dict[str, pd.DataFrame]]:
    """Score ``(image_id, probabilities (C, ...), reference channels (C, ...), geometry)`` items.

    Returns each class's per-image and per-lesion tables, and the confusion tables between
    classes (``pixels`` and ``lesions``, see :func:`pixel_confusion` and :func:`lesion_confusion`)
    summed over the items. ``scales`` gives, per id, the resize of maps not at the original
    resolution (tiles), so that each class's locked pixel areas are applied at that scale.
    """
    tables = ClassTables(classes, matching, size_bins)
    pixels = lesions = None
    for image_id, probs, reference, geometry in items:
        rules = locked
        if scales is not None:
            dims = np.ndim(probs) - 1
            rules = {name: locked_at_scale(lock, scales[image_id], dims) for name, lock in locked.items()}
        prediction = predict_classes(probs, rules, classes)
        tables.add(image_id, subjects[image_id], prediction, reference, probs, geometry)
        reference = np.asarray(reference, dtype=bool)
        p = pixel_confusion(prediction.masks, reference, classes.names)
        q = lesion_confusion(prediction.masks, reference, classes.names, matching.connectivity)
        pixels, lesions = (p, q) if pixels is None else (pixels + p, lesions + q)
    if pixels is None:
        raise LesionflowError("no image to evaluate the classes on")
    return tables.tables(), {"pixels": pixels, "lesions": lesions}


def _labels(names: Sequence[str]) -> list[str]:
    return [*names, NONE]


def pixel_confusion(pred: np.ndarray, ref: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Pixels of each reference class (rows) predicted as each class (columns); ``none`` is no class.

    For mutually exclusive classes this is the confusion matrix (every pixel in one cell); where
    classes overlap, a pixel of two reference classes predicted as one counts in both rows.
    """
    pred = np.concatenate([pred, ~pred.any(axis=0, keepdims=True)])
    ref = np.concatenate([ref, ~ref.any(axis=0, keepdims=True)])
    # Pair by pair on the booleans: a matrix product would first copy every channel as 64-bit
    # integers (about 300 MB for the four channels of one full-size fundus photograph).
    counts = np.array([[np.count_nonzero(r & p) for p in pred] for r in ref], dtype=np.int64)
    return pd.DataFrame(counts, index=pd.Index(_labels(names), name="reference"), columns=_labels(names))


def lesion_confusion(
    pred: np.ndarray, ref: np.ndarray, names: Sequence[str], connectivity: int
) -> pd.DataFrame:
    """Reference lesions of each class (rows) by the predicted class that covers most of them
    (columns); ``none``: no predicted class touches the lesion (missed). A haemorrhage predicted
    as an exudate counts in the haemorrhage row, exudate column. The ``none`` row counts predicted
    lesions that touch no reference lesion of any class, by predicted class."""
    counts = np.zeros((len(names) + 1, len(names) + 1), dtype=np.int64)
    flat_pred = pred.reshape(len(names), -1)
    for c in range(len(names)):
        labels, n = label_lesions(ref[c], connectivity)
        if not n:
            continue
        flat = labels.ravel()
        # Pixels of each reference lesion (rows) predicted as each class (columns).
        overlap = np.stack(
            [np.bincount(flat[flat_pred[k]], minlength=n + 1)[1:] for k in range(len(names))], axis=1
        )
        best = np.where(overlap.max(axis=1) > 0, overlap.argmax(axis=1), len(names))
        counts[c] += np.bincount(best, minlength=len(names) + 1)
    anything = ref.any(axis=0)
    for k in range(len(names)):
        labels, n = label_lesions(pred[k], connectivity)
        if n:
            touched = np.unique(labels[anything & (labels > 0)])
            counts[len(names), k] += n - touched.size
    return pd.DataFrame(counts, index=pd.Index(_labels(names), name="reference"), columns=_labels(names))


def macro_estimate(estimates: Mapping[str, Estimate]) -> tuple[Estimate, list[str]]:
    """The mean over classes of one metric, and the classes it averages: those whose value is
    defined. In each resample it is the mean over the same classes, and undefined (NaN) when one of
    them is, so the interval never mixes different sets of classes."""
    defined = [name for name, est in estimates.items() if not np.isnan(est.value)]
    if not defined:
        first = next(iter(estimates.values()))
        samples = np.full(np.asarray(first.samples).shape, np.nan)
        return Estimate(float("nan"), samples, 0, first.confidence), []
    chosen = [estimates[name] for name in defined]
    macro = bootstrap.derived(lambda *values: sum(values) / len(values), *chosen)
    return macro, defined


def class_summaries(
    tables: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]],
    resampler: Resampler,
    size_bins: Sequence[int],
) -> dict:
    """Each class's ``summarise`` section, and the macro mean of :data:`MACRO_METRICS` with its
    interval, the number of classes it averages and their names (``macro``); its ``_n`` is the
    smallest number of images (or lesions) behind any of those classes' values."""
    out: dict = {"classes": {}, "macro": {}}
    estimates: dict[str, dict[str, Estimate]] = {}
    for name, (per_image, lesions) in tables.items():
        out["classes"][name] = summarise(per_image, lesions, resampler, size_bins)
        estimates[name] = image_estimates(per_image, resampler)
    for metric in MACRO_METRICS:
        macro, defined = macro_estimate({name: est[metric] for name, est in estimates.items()})
        described = bootstrap.describe(macro, metric)
        described[f"{metric}_n_classes"] = len(defined)
        described[f"{metric}_classes"] = defined
        out["macro"].update(described)
    return out
