"""Choose pixel threshold, minimum lesion area and presence threshold on validation; lock them.

Never reads test-split predictions: run_tune refuses any probability file holding a non-val id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from lesionflow.data.manifest import load_manifest_mask, read_manifest
from lesionflow.data.subsets import read_split
from lesionflow.evaluation.overlap import dice_from_counts, iou_from_counts, segmentation_summary
from lesionflow.evaluation.postprocess import PRESENCE_SOURCES, component_sizes
from lesionflow.pipeline.artifacts import load_arrays, write_csv, write_json
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


def load_reference_masks(
    manifest: str | os.PathLike, ids: Sequence[str], shapes: Mapping[str, tuple] | None = None
) -> dict[str, np.ndarray]:
    """Load the reference masks of ``ids`` from the manifest; check shapes against ``shapes``."""
    table = read_manifest(manifest).set_index("image_id", drop=False)
    absent = [i for i in ids if i not in table.index]
    if absent:
        raise LesionflowError(f"manifest {manifest} has no rows for image ids {absent[:5]}")
    masks = {}
    for image_id in ids:
        row = table.loc[image_id]
        mask = np.asarray(load_manifest_mask(row), dtype=bool)
        if shapes is not None and tuple(mask.shape) != tuple(shapes[image_id]):
            raise LesionflowError(
                f"mask {row['mask']} of image {image_id} has shape {mask.shape}, "
                f"its probability map has shape {tuple(shapes[image_id])}"
            )
        masks[image_id] = mask
    return masks


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
    overlap = np.bincount(labels.ravel(), weights=gt.ravel(), minlength=len(sizes))
    return sizes[1:], overlap[1:]


def tune_on_validation(
    probs: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], settings: Mapping
) -> tuple[dict, pd.DataFrame]:
    """Grid-search threshold x min_lesion_area with presence gating on validation images.

    For each pixel threshold the presence threshold is chosen by Youden's J on the presence
    scores against reference presence; with one class only, it falls back to "any pixel at the
    pixel threshold" and records why. Ties go to the first grid point (lowest threshold, then
    smallest area). Returns the ``locked`` dict and the grid table (one row per combination).
    """
    cfg = check_tune_settings(settings)
    ids = sorted(probs)
    if not ids:
        raise LesionflowError("no validation probability maps to tune on")
    thresholds, areas = cfg["thresholds"], cfg["min_lesion_areas"]
    gts = [np.asarray(masks[i], dtype=bool) for i in ids]
    maps = [np.asarray(probs[i], dtype=np.float32) for i in ids]
    check_connectivity(cfg["connectivity"], maps)
    gt_pixels = np.array([np.count_nonzero(g) for g in gts])
    truth = gt_pixels > 0
    max_prob = np.array([float(p.max()) for p in maps])

    # counts[t, a, i]: predicted pixels and overlap per image, from component statistics so
    # each (image, threshold) is labelled once whatever the number of areas.
    pred = np.zeros((len(thresholds), len(areas), len(ids)))
    inter = np.zeros_like(pred)
    area_at_t = np.zeros((len(thresholds), len(ids)))
    for i, (prob, gt) in enumerate(zip(maps, gts, strict=True)):
        for ti, t in enumerate(thresholds):
            sizes, overlap = _component_counts(prob, gt, t, cfg["connectivity"])
            area_at_t[ti, i] = sizes.sum()
            for ai, a in enumerate(areas):
                keep = sizes >= a
                pred[ti, ai, i] = sizes[keep].sum()
                inter[ti, ai, i] = overlap[keep].sum()

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
            f"has {int(truth.sum())} lesion-positive images of {len(ids)}"
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
        "n_val_images": len(ids),
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
) -> dict:
    """Tune on validation probabilities; write ``locked.json`` and ``tuning_grid.csv``."""
    cfg = check_tune_settings(settings)
    split_df = read_split(split)
    if not Path(probs_path).is_file():
        raise LesionflowError(f"probability file {probs_path} does not exist")
    probs = load_arrays(probs_path)
    check_probs_in_split(probs, split_df, "val", probs_path)
    masks = load_reference_masks(manifest, sorted(probs), {i: p.shape for i, p in probs.items()})
    locked, grid = tune_on_validation(probs, masks, cfg)
    out = Path(out_dir)
    write_csv(grid, out / "tuning_grid.csv")
    write_json(out / "locked.json", locked)
    return locked
