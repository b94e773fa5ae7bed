"""Segmentation, surface-distance and lesion-wise metrics per image, for 2D and 3D alike.

Must never turn an undefined value (for example Dice of an empty reference and an empty prediction)
into 0 or 1 silently: it is NaN, and every summary says how many values it averaged.

Conventions (also written into every ``summary.json`` under ``conventions``; docs/metrics.md says
why and how they differ from nnU-Net, MONAI and MetricsReloaded):

- dice and iou are NaN when reference and prediction are both empty (undefined, not 1);
  they are 0 when exactly one of them is empty.
- precision is NaN when the prediction is empty; recall is NaN when the reference is empty.
- hd95 and msd are NaN when either mask is empty (no surface to measure from); they are in the
  reference mask's physical units: millimetres for a NIfTI mask (its header's spacing), pixels for
  pictures and arrays, whose files carry no physical size (``distance_unit`` says which).
- ``*_volume_mm3`` and a lesion's ``volume_mm3`` are voxel counts times the product of the spacing;
  they are NaN (an empty cell) for pictures and arrays, never a pixel count under a mm³ name.
- pearson is NaN when the probability map (or prediction) or the reference is constant.
- ``*_pos`` metrics average over reference-positive images only; lesion-free images are judged
  by their false-positive burden instead.
- ``dice_all`` averages over all images and counts empty reference + empty prediction as 1;
  it is reported only with its convention string beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lesionflow.data.axis_columns import axis_cell
from lesionflow.evaluation.lesions import LesionMatch, match_lesions, size_bin_index, size_bin_labels
from lesionflow.evaluation.overlap import dice_from_counts, iou_from_counts
from lesionflow.evaluation.surface import surface_distances
from lesionflow.io.geometry import Geometry, pixel_geometry

PER_IMAGE_COLUMNS = [
    "image_id",
    "subject",
    "dice",
    "iou",
    "precision",
    "recall",
    "hd95",
    "msd",
    "pearson",
    "gt_pixels",
    "pred_pixels",
    "group",
    "gt_size_bin",
    "n_ref_lesions",
    "n_pred_lesions",
    "lesion_tp",
    "lesion_fn",
    "lesion_tp_pred",
    "lesion_fp",
    "fp_lesion_area",
    "presence_score",
    "presence_pred",
    # Appended after the 2D columns so every earlier column keeps its place.
    "spacing",
    "distance_unit",
    "gt_volume_mm3",
    "pred_volume_mm3",
]

# One row per reference lesion: what lesion-wise detection by size is computed from.
LESION_COLUMNS = ["image_id", "subject", "lesion", "size", "size_bin", "detected", "volume_mm3"]

# What hd95 and msd are measured in: the reference mask's physical unit, or its pixel grid.
PHYSICAL_UNIT, PIXEL_UNIT = "mm", "pixels"

# Reference (gt) x prediction: every image belongs to exactly one group, and each is reported apart.
GROUPS = ("gt_pos_pred_pos", "gt_pos_pred_empty", "gt_empty_pred_pos", "gt_empty_pred_empty")

DICE_ALL_CONVENTION = "empty reference and empty prediction count as 1; dice_pos excludes them"

CONVENTIONS = {
    "dice_iou": "NaN when reference and prediction are both empty; 0 when exactly one is empty",
    "precision": "NaN when the prediction is empty",
    "recall": "NaN when the reference is empty",
    "hd95": "symmetric 95th-percentile Hausdorff distance between mask edges, in distance_unit; "
    "NaN when either mask is empty",
    "msd": "symmetric mean surface distance (MONAI's definition), in distance_unit; "
    "NaN when either is empty",
    "distance_unit": "mm when the reference mask is a NIfTI volume (each axis scaled by its header's "
    "spacing, recorded per image in spacing), pixels (voxels) for pictures and arrays; a subset whose "
    "images differ says mixed",
    "volume_mm3": "gt_volume_mm3, pred_volume_mm3 and a lesion's volume_mm3 are voxel counts times the "
    "product of the spacing (mm², not mm³, for a 2D NIfTI); empty for pictures and arrays; gt_pixels, "
    "pred_pixels, size and size_bins stay in pixels (voxels)",
    "pearson": "Pearson r of probability map (or prediction) and reference over all pixels; "
    "NaN when either is constant",
    "pos": "*_pos metrics are means over images whose reference is non-empty",
    "dice_all": DICE_ALL_CONVENTION,
    "false_positive_rate_empty": "fraction of empty-reference images with any predicted pixel",
    "fp_lesions_per_empty_image": "mean number of predicted lesions on empty-reference images",
    "fp_area_per_empty_image": "mean predicted lesion area (pixels) on empty-reference images",
    "lesions": "connected components; a reference and a predicted lesion match when they overlap and "
    "the overlap (IoU, or fraction of the reference lesion covered) reaches min_overlap; "
    "many-to-one matches are allowed",
    "lesion_sensitivity": "detected reference lesions / reference lesions, pooled over images",
    "lesion_precision": "matched predicted lesions / predicted lesions, pooled over images",
    "lesion_f1": "harmonic mean of lesion sensitivity and lesion precision",
    "gt_size_bin": "size bin of an image's total reference area (all its lesions together)",
    "presence": "lesion presence = reference non-empty; ROC-AUC and AP as scikit-learn computes them, "
    "NaN when only one class is present",
    "means": "every mean excludes NaN values and reports how many values it used (_n) "
    "and how many it excluded (nan_counts)",
    "intervals": "percentile bootstrap over subjects, not images, so a subject's images stay together",
}


# ---------------------------------------------------------------------------------------------
# Batch functions: a stack (N, ...) of masks, any number of spatial dimensions.
# ---------------------------------------------------------------------------------------------


def _flat(stack: np.ndarray, dtype) -> np.ndarray:
    arr = np.asarray(stack, dtype=dtype)
    return arr.reshape(arr.shape[0], -1)


def overlap_counts(preds: np.ndarray, gts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (intersection, pred_pixels, gt_pixels) per image for stacks of shape (N, ...)."""
    p = _flat(preds, bool)
    g = _flat(gts, bool)
    inter = np.count_nonzero(p & g, axis=1)
    return inter, np.count_nonzero(p, axis=1), np.count_nonzero(g, axis=1)


def dice_per_image(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Dice per image of two bool stacks (N, ...); NaN where both masks are empty."""
    return dice_from_counts(*overlap_counts(preds, gts))


def iou_per_image(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """IoU per image of two bool stacks (N, ...); NaN where both masks are empty."""
    return iou_from_counts(*overlap_counts(preds, gts))


def precision_per_image(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Precision per image; NaN where the prediction is empty (nothing was claimed)."""
    inter, pred_pixels, _ = overlap_counts(preds, gts)
    return np.where(pred_pixels > 0, inter / np.maximum(pred_pixels, 1), np.nan)


def recall_per_image(preds: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Recall per image; NaN where the reference is empty (nothing to find)."""
    inter, _, gt_pixels = overlap_counts(preds, gts)
    return np.where(gt_pixels > 0, inter / np.maximum(gt_pixels, 1), np.nan)


def pearson_per_image(values: np.ndarray, gts: np.ndarray) -> np.ndarray:
    """Pearson r per image between a map (probabilities or mask) and the reference mask.

    NaN where either is constant over the image (the correlation is undefined).
    """
    x = _flat(values, np.float64)
    y = _flat(gts, np.float64)
    n = x.shape[1]
    # Test constancy exactly rather than via a variance that float rounding can leave non-zero.
    constant = (x.min(axis=1) == x.max(axis=1)) | (y.min(axis=1) == y.max(axis=1))
    # Raw moments: one pass and no centred copies of a full-size image (this runs on every test image).
    sx, sy = x.sum(axis=1), y.sum(axis=1)
    num = np.einsum("ij,ij->i", x, y) - sx * sy / n
    var_x = np.einsum("ij,ij->i", x, x) - sx * sx / n
    var_y = np.einsum("ij,ij->i", y, y) - sy * sy / n
    undefined = constant | (var_x <= 0) | (var_y <= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / np.sqrt(np.where(undefined, 1.0, var_x * var_y))
    return np.where(undefined, np.nan, np.clip(r, -1.0, 1.0))


# ---------------------------------------------------------------------------------------------
# One image and a table of images
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LesionMatching:
    """How lesions are found (connectivity) and matched (criterion, min_overlap).

    Built from evaluate.lesion_matching by :func:`lesionflow.evaluation.evaluate.lesion_matching`
    (a null connectivity there means the one tuning locked), so no default is restated here.
    """

    connectivity: int
    criterion: str
    min_overlap: float


def image_group(gt_pixels: int, pred_pixels: int) -> str:
    """The image's group in :data:`GROUPS`: reference empty or not x prediction empty or not."""
    gt = "gt_pos" if gt_pixels > 0 else "gt_empty"
    pred = "pred_pos" if pred_pixels > 0 else "pred_empty"
    return f"{gt}_{pred}"


def _symmetric_hd95_msd(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float] | None
) -> tuple[float, float]:
    # One pass over the edges gives both distances; NaN when either mask has no surface.
    to_gt, to_pred = surface_distances(pred, gt, spacing)
    if not (to_gt.size and to_pred.size):
        return float("nan"), float("nan")
    hd = max(np.percentile(to_gt, 95), np.percentile(to_pred, 95))
    return float(hd), float(np.concatenate([to_gt, to_pred]).mean())


def score_image(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray | None = None,
    *,
    matching: LesionMatching,
    spacing: Sequence[float] | None = None,
) -> tuple[dict, LesionMatch]:
    """Every per-image metric of one image (2D or 3D) and its lesion match.

    ``prob`` is the probability map used for Pearson r; the binary prediction is used when it is
    None. See the module docstring for the NaN conventions.
    """
    p = np.asarray(pred, dtype=bool)[None]
    g = np.asarray(gt, dtype=bool)[None]
    inter, pred_pixels, gt_pixels = overlap_counts(p, g)
    values = p if prob is None else np.asarray(prob)[None]
    hd95, msd = _symmetric_hd95_msd(p[0], g[0], spacing)
    match = match_lesions(
        p[0], g[0], matching.connectivity, matching.criterion, matching.min_overlap
    )
    tp, n_pred, n_gt = int(inter[0]), int(pred_pixels[0]), int(gt_pixels[0])
    row = {
        "dice": float(dice_from_counts(inter, pred_pixels, gt_pixels)[0]),
        "iou": float(iou_from_counts(inter, pred_pixels, gt_pixels)[0]),
        "precision": tp / n_pred if n_pred else float("nan"),
        "recall": tp / n_gt if n_gt else float("nan"),
        "hd95": hd95,
        "msd": msd,
        "pearson": float(pearson_per_image(values, g)[0]),
        "gt_pixels": n_gt,
        "pred_pixels": n_pred,
        "group": image_group(n_gt, n_pred),
        "n_ref_lesions": match.n_ref,
        "n_pred_lesions": match.n_pred,
        "lesion_tp": match.tp,
        "lesion_fn": match.fn,
        "lesion_tp_pred": match.tp_pred,
        "lesion_fp": match.fp,
        "fp_lesion_area": match.fp_area,
    }
    return row, match


def image_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    prob: np.ndarray | None = None,
    *,
    matching: LesionMatching,
) -> dict:
    """Every per-image metric of one image as a dict (see :func:`score_image`)."""
    return score_image(pred, gt, prob, matching=matching)[0]


def distance_unit(geometry: Geometry) -> str:
    """:data:`PHYSICAL_UNIT` for a mask read with an affine (NIfTI), :data:`PIXEL_UNIT` otherwise.

    Pictures and arrays have unit spacing and no affine (``io.geometry.pixel_geometry``): their
    spacing is a pixel, not a length.
    """
    return PHYSICAL_UNIT if geometry.affine is not None else PIXEL_UNIT


def voxel_volume_mm3(geometry: Geometry) -> float:
    """The volume of one voxel (area of one pixel of a 2D NIfTI) in mm³; NaN without physical spacing."""
    if distance_unit(geometry) != PHYSICAL_UNIT:
        return float("nan")
    return float(np.prod(np.asarray(geometry.spacing, dtype=np.float64)))


class ScoreTables:
    """The per-image and per-lesion tables, built one image at a time.

    Only the rows are kept, never an image, so a caller that reads one image, adds it and drops it
    holds one image's memory whatever the number of images. ``size_bins`` are evaluate.size_bins.
    """

    def __init__(self, matching: LesionMatching, size_bins: Sequence[int]) -> None:
        self.matching = matching
        self.size_bins = list(size_bins)
        self._labels = size_bin_labels(self.size_bins)
        self._rows: list[dict] = []
        self._lesions: list[pd.DataFrame] = []

    def add(
        self,
        image_id: str,
        subject: str,
        pred: np.ndarray,
        gt: np.ndarray,
        prob: np.ndarray | None,
        geometry: Geometry,
        *,
        presence_score: float | None,
        presence_pred: bool | None,
    ) -> None:
        """Score one image; a presence score or call that is None is left NaN.

        ``prob`` is the map Pearson r is computed from (None: the prediction). ``geometry`` is the
        reference mask's: its spacing scales hd95, msd and the mm³ volumes.
        """
        row, match = score_image(pred, gt, prob, matching=self.matching, spacing=geometry.spacing)
        voxel = voxel_volume_mm3(geometry)
        row = {"image_id": str(image_id), "subject": str(subject), **row}
        row["gt_size_bin"] = (
            self._labels[int(size_bin_index(np.array([row["gt_pixels"]]), self.size_bins)[0])]
            if row["gt_pixels"] > 0
            else ""
        )
        row["presence_score"] = np.nan if presence_score is None else float(presence_score)
        row["presence_pred"] = np.nan if presence_pred is None else bool(presence_pred)
        row["spacing"] = axis_cell(float(s) for s in geometry.spacing)
        row["distance_unit"] = distance_unit(geometry)
        row["gt_volume_mm3"] = row["gt_pixels"] * voxel
        row["pred_volume_mm3"] = row["pred_pixels"] * voxel
        self._rows.append(row)
        if match.n_ref:
            bins = size_bin_index(match.ref_sizes, self.size_bins)
            self._lesions.append(
                pd.DataFrame(
                    {
                        "image_id": str(image_id),
                        "subject": str(subject),
                        "lesion": np.arange(1, match.n_ref + 1),
                        "size": match.ref_sizes,
                        "size_bin": [self._labels[b] for b in bins],
                        "detected": match.ref_detected,
                        "volume_mm3": match.ref_sizes * voxel,
                    }
                )
            )

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The per-image table (:data:`PER_IMAGE_COLUMNS`) and per-lesion table (:data:`LESION_COLUMNS`)."""
        per_image = pd.DataFrame(self._rows, columns=PER_IMAGE_COLUMNS)
        lesions = (
            pd.concat(self._lesions, ignore_index=True)
            if self._lesions
            else pd.DataFrame({c: pd.Series(dtype=object) for c in LESION_COLUMNS})
        )
        return per_image, lesions[LESION_COLUMNS]


def score_images(
    ids: Sequence[str],
    subjects: Sequence[str],
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    probs: Sequence[np.ndarray] | None = None,
    presence_scores: Sequence[float] | None = None,
    presence_preds: Sequence[bool] | None = None,
    *,
    matching: LesionMatching,
    size_bins: Sequence[int],
    geometries: Sequence[Geometry] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-image table (:data:`PER_IMAGE_COLUMNS`) and per-reference-lesion table (:data:`LESION_COLUMNS`).

    Images may differ in shape, so they are scored one at a time (see :class:`ScoreTables`).
    Missing presence scores or predictions are left NaN (never derived silently). ``size_bins``
    are evaluate.size_bins. ``geometries`` are the reference masks' (None: pixel geometry, so
    distances are in pixels and mm³ volumes are empty).
    """
    tables = ScoreTables(matching, size_bins)
    for i, image_id in enumerate(ids):
        tables.add(
            image_id,
            subjects[i],
            preds[i],
            gts[i],
            None if probs is None else probs[i],
            pixel_geometry(np.shape(gts[i])) if geometries is None else geometries[i],
            presence_score=None if presence_scores is None else presence_scores[i],
            presence_pred=None if presence_preds is None else presence_preds[i],
        )
    return tables.tables()
