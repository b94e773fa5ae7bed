"""Choose pixel threshold, minimum lesion area and presence threshold on validation; lock them.

Never reads test-split predictions: run_tune refuses any probability file holding a non-val id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from lesionflow.data.class_masks import load_class_masks, manifest_classes
from lesionflow.data.manifest import read_manifest, read_manifest_mask
from lesionflow.data.subsets import read_split
from lesionflow.evaluation.overlap import dice_from_counts, iou_from_counts, segmentation_summary
from lesionflow.evaluation.postprocess import PRESENCE_SOURCES, component_sizes
from lesionflow.evaluation.presence_fusion import classifier_logits, tune_fusion
from lesionflow.io.geometry import Loaded
from lesionflow.pipeline.artifacts import open_arrays, write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError

OBJECTIVES = ("dice_pos", "iou_pos", "dice_all")
# As the schema's tune.connectivity: 1 = faces only up to 3 = every neighbour in 3D; a value is
# valid only up to the number of spatial axes of the masks (check_connectivity).
CONNECTIVITIES = (1, 2, 3)


# ---------------------------------------------------------------------------------------------
# Settings and boundary checks
# ---------------------------------------------------------------------------------------------


def check_tune_settings(settings: Mapping) -> dict:
    """Validate the ``tune`` settings section; return it with sorted, de-duplicated grids."""
    if "tune" in settings and isinstance(settings["tune"], Mapping):
        settings = settings["tune"]
    required = ("objective", "thresholds", "min_lesion_areas", "presence_score", "connectivity")
    missing = [key for key in required if key not in settings]
    if missing:
        raise LesionflowError(f"tune settings miss the keys {['tune.' + k for k in missing]}")
    if settings["objective"] not in OBJECTIVES:
        raise LesionflowError(
            f"tune.objective must be one of {list(OBJECTIVES)}, got {settings['objective']!r}"
        )
    if settings["presence_score"] not in PRESENCE_SOURCES:
        raise LesionflowError(
            f"tune.presence_score must be one of {list(PRESENCE_SOURCES)}, "
            f"got {settings['presence_score']!r}"
        )
    connectivity = settings["connectivity"]
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise LesionflowError(
            f"tune.connectivity must be one of {list(CONNECTIVITIES)}, got {connectivity!r}"
        )
    thresholds = settings["thresholds"]
    if (
        not isinstance(thresholds, Sequence)
        or not thresholds
        or not all(isinstance(t, int | float) and 0 < t < 1 for t in thresholds)
    ):
        raise LesionflowError(
            f"tune.thresholds must be a non-empty list of numbers in (0, 1), got {thresholds!r}"
        )
    areas = settings["min_lesion_areas"]
    if (
        not isinstance(areas, Sequence)
        or not areas
        or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in areas)
    ):
        raise LesionflowError(
            f"tune.min_lesion_areas must be a non-empty list of integers >= 0, got {areas!r}"
        )
    # Sorted grids make "first in grid order" mean "lowest threshold, smallest area" on ties.
    return {
        "objective": settings["objective"],
        "thresholds": sorted({float(t) for t in thresholds}),
        "min_lesion_areas": sorted({int(a) for a in areas}),
        "presence_score": settings["presence_score"],
        "connectivity": int(settings["connectivity"]),
    }


def check_connectivity(connectivity: int, maps: Sequence[np.ndarray]) -> None:
    """Raise unless ``connectivity`` is at most the number of spatial axes of every map."""
    ndims = sorted({np.ndim(m) for m in maps})
    if ndims and connectivity > ndims[0]:
        raise LesionflowError(
            f"tune.connectivity is {connectivity}, but the probability maps have {ndims[0]} spatial "
            f"axes; for {ndims[0]}-D masks it must be from 1 to {ndims[0]}"
        )


def check_probs_in_split(
    probs: Mapping[str, np.ndarray], split: pd.DataFrame, subset: str, probs_path: os.PathLike
) -> None:
    """Raise unless the probability file holds exactly the ids of ``subset`` in the split.

    This is the guard that keeps test predictions out of tuning (and val out of test).
    """
    split_of = dict(zip(split["image_id"], split["split"], strict=True))
    wrong = sorted(i for i in probs if split_of.get(i) != subset)
    if wrong:
        shown = ", ".join(f"{i} ({split_of.get(i, 'not in split.csv')})" for i in wrong[:5])
        raise LesionflowError(
            f"{probs_path} holds {len(wrong)} image ids outside the {subset!r} split, "
            f"e.g. {shown}; only {subset} predictions may be used here"
        )
    expected = {i for i, s in split_of.items() if s == subset}
    absent = sorted(expected - set(probs))
    if absent:
        raise LesionflowError(
            f"{probs_path} lacks predictions for {len(absent)} {subset} image ids, "
            f"e.g. {', '.join(absent[:5])}"
        )


class ReferenceMasks(Mapping[str, Loaded]):
    """The reference masks of some image ids of a manifest, each read from its file when looked up.

    Nothing is cached: a caller that keeps one mask at a time holds one mask, whatever the number of
    images. Values are bool arrays with their geometry (spacing in mm for NIfTI, 1 for pictures):
    for a manifest of several lesion classes, each image's class stack ``(n_classes, *spatial)``.
    """

    def __init__(self, manifest: str | os.PathLike, ids: Sequence[str]) -> None:
        table = read_manifest(manifest).set_index("image_id", drop=False)
        absent = [i for i in ids if i not in table.index]
        if absent:
            raise LesionflowError(f"manifest {manifest} has no rows for image ids {absent[:5]}")
        self._rows = {image_id: table.loc[image_id] for image_id in ids}
        self.classes = manifest_classes(manifest)

    def __getitem__(self, image_id: str) -> Loaded:
        array, geometry = read_manifest_mask(self._rows[image_id])
        if self.classes is not None:  # the mask is their union; its geometry is the stack's
            return Loaded(load_class_masks(self._rows[image_id]), geometry)
        return Loaded(np.asarray(array, dtype=bool), geometry)

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def path(self, image_id: str) -> str:
        """The mask file of ``image_id``, for messages."""
        return str(self._rows[image_id]["mask"])

    def checked(self, image_id: str, shape: tuple) -> Loaded:
        """The mask of ``image_id``; raises, naming its file, unless it has its map's ``shape``."""
        mask = self[image_id]
        if tuple(mask.array.shape) != tuple(shape):
            raise LesionflowError(
                f"mask {self.path(image_id)} of image {image_id} has shape {mask.array.shape}, "
                f"its probability map has shape {tuple(shape)}"
            )
        return mask


def paired_images(
    probs: Mapping[str, np.ndarray], masks: ReferenceMasks
) -> Iterator[tuple[str, np.ndarray, Loaded]]:
    """``(image_id, probability map, reference mask)`` in image-id order, read one pair at a time.

    With lazy ``probs`` (``artifacts.open_arrays``) a subset is never held at once. Shapes are
    checked as in :meth:`ReferenceMasks.checked`.
    """
    for image_id in sorted(probs):
        prob = probs[image_id]
        yield image_id, prob, masks.checked(image_id, prob.shape)


# ---------------------------------------------------------------------------------------------
# Pure tuning
# ---------------------------------------------------------------------------------------------


def youden_threshold(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """Presence threshold maximising Youden's J (TPR - FPR); None when only one class exists."""
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return None
    fpr, tpr, thresholds = roc_curve(truth, scores)
    # Index 0 is sklearn's "+inf" point (nothing called present); skip it so the
    # threshold stays a real score. argmax takes the first maximum: deterministic.
    j = tpr[1:] - fpr[1:]
    return float(thresholds[1:][int(np.argmax(j))])


def _component_counts(
    prob: np.ndarray, gt: np.ndarray, threshold: float, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per connected component of ``prob >= threshold``: its size and its overlap with ``gt``."""
    labels, sizes = component_sizes(prob >= threshold, connectivity)
    # Labels of the reference pixels only: weights=gt would copy the whole mask as float64
    # (128 MiB for a 256-cube volume).
    overlap = np.bincount(labels[np.asarray(gt, dtype=bool)], minlength=len(sizes))
    return sizes[1:], overlap[1:]


@dataclass(frozen=True)
class ImageCounts:
    """What tuning needs of one validation image, so maps are read once and then dropped.

    ``pred`` and ``inter`` (thresholds x areas) are the predicted pixels and their overlap with
    the reference once components under each area are removed; ``area_at_t`` (thresholds) the
    predicted pixels before removal.
    """

    gt_pixels: int
    max_prob: float
    area_at_t: np.ndarray
    pred: np.ndarray
    inter: np.ndarray


def image_counts(prob: np.ndarray, gt: np.ndarray, settings: Mapping) -> ImageCounts:
    """The :class:`ImageCounts` of one image over the grid of the ``tune`` settings."""
    cfg = check_tune_settings(settings)
    prob = np.asarray(prob, dtype=np.float32)
    gt = np.asarray(gt, dtype=bool)
    check_connectivity(cfg["connectivity"], [prob])
    thresholds, areas = cfg["thresholds"], cfg["min_lesion_areas"]
    # From component statistics, so each threshold is labelled once whatever the number of areas.
    pred = np.zeros((len(thresholds), len(areas)))
    inter = np.zeros_like(pred)
    area_at_t = np.zeros(len(thresholds))
    for ti, t in enumerate(thresholds):
        sizes, overlap = _component_counts(prob, gt, t, cfg["connectivity"])
        area_at_t[ti] = sizes.sum()
        for ai, a in enumerate(areas):
            keep = sizes >= a
            pred[ti, ai] = sizes[keep].sum()
            inter[ti, ai] = overlap[keep].sum()
    return ImageCounts(int(np.count_nonzero(gt)), float(prob.max()), area_at_t, pred, inter)


def tune_on_validation(
    probs: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], settings: Mapping
) -> tuple[dict, pd.DataFrame]:
    """Grid-search threshold x min_lesion_area with presence gating on validation images.

    Each image is read once, in image-id order, and reduced to its :class:`ImageCounts`; see
    :func:`tune_on_counts` for the choice.
    """
    cfg = check_tune_settings(settings)
    return tune_on_counts([image_counts(probs[i], masks[i], cfg) for i in sorted(probs)], cfg)


def tune_on_counts(counts: Sequence[ImageCounts], settings: Mapping) -> tuple[dict, pd.DataFrame]:
    """Choose the grid point from the per-image counts of the validation images (in image-id order).

    For each pixel threshold the presence threshold is chosen by Youden's J on the presence
    scores against reference presence; with one class only, it falls back to "any pixel at the
    pixel threshold" and records why. Ties go to the first grid point (lowest threshold, then
    smallest area). Returns the ``locked`` dict and the grid table (one row per combination).
    """
    cfg = check_tune_settings(settings)
    if not counts:
        raise LesionflowError("no validation probability maps to tune on")
    thresholds, areas = cfg["thresholds"], cfg["min_lesion_areas"]
    gt_pixels = np.array([c.gt_pixels for c in counts])
    truth = gt_pixels > 0
    max_prob = np.array([c.max_prob for c in counts])
    # [t, a, i] and [t, i], as the grid below reads them.
    pred = np.stack([c.pred for c in counts], axis=-1)
    inter = np.stack([c.inter for c in counts], axis=-1)
    area_at_t = np.stack([c.area_at_t for c in counts], axis=-1)

    rows = []
    for ti, t in enumerate(thresholds):
        scores = max_prob if cfg["presence_score"] == "max_probability" else area_at_t[ti]
        chosen = youden_threshold(truth, scores)
        if chosen is None:
            rule = "fallback_pixel_threshold"
            reason = (
                f"validation has only {'lesion-positive' if truth.all() else 'lesion-free'} "
                "images, so Youden's J is undefined; presence = any pixel at the pixel threshold"
            )
            chosen = t if cfg["presence_score"] == "max_probability" else 1.0
        else:
            rule, reason = "youden_j", "maximises TPR - FPR of presence on validation"
        present = scores >= chosen
        for ai, a in enumerate(areas):
            p = np.where(present, pred[ti, ai], 0)
            n = np.where(present, inter[ti, ai], 0)
            table = pd.DataFrame(
                {
                    "dice": dice_from_counts(n, p, gt_pixels),
                    "iou": iou_from_counts(n, p, gt_pixels),
                    "gt_pixels": gt_pixels,
                    "pred_pixels": p,
                }
            )
            summary = segmentation_summary(table)
            rows.append(
                {
                    "threshold": t,
                    "min_lesion_area": a,
                    "presence_threshold": chosen,
                    "presence_threshold_rule": rule,
                    "presence_threshold_reason": reason,
                    "objective": cfg["objective"],
                    "objective_value": summary[cfg["objective"]],
                    "dice_pos": summary["dice_pos"],
                    "iou_pos": summary["iou_pos"],
                    "dice_all": summary["dice_all"],
                    "false_positive_rate_empty": summary["false_positive_rate_empty"],
                    "n_gt_positive": summary["n_gt_positive"],
                    "n_gt_empty": summary["n_gt_empty"],
                }
            )
    grid = pd.DataFrame(rows)
    values = grid["objective_value"].to_numpy(dtype=float)
    if np.isnan(values).all():
        raise LesionflowError(
            f"tune.objective {cfg['objective']!r} is undefined on every grid point: validation "
            f"has {int(truth.sum())} lesion-positive images of {len(counts)}"
        )
    best = int(np.argmax(np.where(np.isnan(values), -np.inf, values)))
    grid["selected"] = np.arange(len(grid)) == best
    row = grid.iloc[best]
    locked = {
        "threshold": float(row["threshold"]),
        "min_lesion_area": int(row["min_lesion_area"]),
        "presence_threshold": float(row["presence_threshold"]),
        "presence_threshold_rule": str(row["presence_threshold_rule"]),
        "presence_threshold_reason": str(row["presence_threshold_reason"]),
        "presence_score": cfg["presence_score"],
        "connectivity": cfg["connectivity"],
        "objective": cfg["objective"],
        "objective_value": float(row["objective_value"]),
        "n_val_images": len(counts),
        "chosen_on": "validation",
    }
    return locked, grid


# ---------------------------------------------------------------------------------------------
# Stage entry
# ---------------------------------------------------------------------------------------------


def run_tune(
    manifest: str | os.PathLike,
    split: str | os.PathLike,
    probs_path: str | os.PathLike,
    settings: Mapping,
    out_dir: str | os.PathLike,
    presence_path: str | os.PathLike | None = None,
) -> dict:
    """Tune on validation probabilities; write ``locked.json`` and ``tuning_grid.csv``, and with
    ``presence_path`` (the infer stage's ``val_presence.csv``) ``fusion.json``: the presence fusion
    of a dual-head model, or why there is none.

    Maps and masks are read one image at a time and reduced to :class:`ImageCounts`, so memory is
    one image plus a few numbers per image and grid point.
    """
    cfg = check_tune_settings(settings)
    split_df = read_split(split)
    if not Path(probs_path).is_file():
        raise LesionflowError(f"probability file {probs_path} does not exist")
    with open_arrays(probs_path) as probs:
        check_probs_in_split(probs, split_df, "val", probs_path)
        masks = ReferenceMasks(manifest, sorted(probs))
        counts = [image_counts(prob, mask.array, cfg) for _, prob, mask in paired_images(probs, masks)]
        image_ids = sorted(probs)
    locked, grid = tune_on_counts(counts, cfg)
    out = Path(out_dir)
    write_csv(grid, out / "tuning_grid.csv")
    if presence_path is not None:
        logits = classifier_logits(presence_path, image_ids)
        write_json(out / "fusion.json", locked_fusion(counts, locked, cfg, logits, settings))
    write_json(out / "locked.json", locked)
    return locked


def locked_fusion(
    counts: Sequence[ImageCounts], locked: Mapping, cfg: Mapping, logits, settings: Mapping
) -> dict:
    """The presence fusion locked on validation (fusion.json), from the images' tuning ``counts``
    and ``locked`` settings, and the classifier's ``logits`` (None without a presence head)."""
    # The sources are the max probability and the locked mask's area before gating (at the grid
    # point chosen), beside the classifier.
    t = cfg["thresholds"].index(locked["threshold"])
    a = cfg["min_lesion_areas"].index(locked["min_lesion_area"])
    area = np.array([c.pred[t, a] for c in counts], dtype=float)
    truth = np.array([c.gt_pixels > 0 for c in counts])
    tune = settings["tune"] if "tune" in settings else settings
    return tune_fusion(np.array([c.max_prob for c in counts]), area, truth, logits, tune)
