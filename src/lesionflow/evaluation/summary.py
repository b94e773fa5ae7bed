"""Split-level summaries of per-image and per-lesion tables, each metric with a subject-bootstrap interval.

Must never average an undefined value as 0 or 1, nor resample images of one subject independently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from lesionflow.evaluation import bootstrap
from lesionflow.evaluation.bootstrap import Estimate, Resampler
from lesionflow.evaluation.lesions import size_bin_labels, volume_bin_index, volume_bin_labels
from lesionflow.evaluation.metrics import DICE_ALL_CONVENTION, GROUPS, PHYSICAL_UNIT, PIXEL_UNIT
from lesionflow.evaluation.overlap import dice_all_values

# Means over reference-positive images: summary name -> per-image column.
POSITIVE_MEANS = {
    "dice_pos": "dice",
    "iou_pos": "iou",
    "precision_pos": "precision",
    "recall_pos": "recall",
    "hd95_pos": "hd95",
    "msd_pos": "msd",
}
# Means over lesion-free (empty-reference) images: the false-positive burden.
EMPTY_MEANS = {
    "fp_lesions_per_empty_image": "lesion_fp",
    "fp_area_per_empty_image": "fp_lesion_area",
}
LESION_COUNTS = ("n_ref_lesions", "n_pred_lesions", "lesion_tp", "lesion_fn", "lesion_tp_pred", "lesion_fp")
# What distance_unit says when a subset's images were measured in different units.
MIXED_UNITS = "mixed"


def _numbers(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").astype("float64").to_numpy()


def _called(per_image: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(known, called): whether a presence call exists for each image, and the call."""
    raw = per_image["presence_pred"]
    # CSV round trips turn booleans into strings or objects; normalise them here, once.
    text = raw.astype(str).str.lower()
    known = raw.notna().to_numpy() & text.isin(["true", "false", "1", "0", "1.0", "0.0"]).to_numpy()
    called = text.isin(["true", "1", "1.0"]).to_numpy()
    return known, called


def _f1(precision: np.ndarray, sensitivity: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        total = precision + sensitivity
        return np.where(total > 0, 2 * precision * sensitivity / np.where(total > 0, total, 1), np.nan)


def image_estimates(per_image: pd.DataFrame, resampler: Resampler) -> dict[str, Estimate]:
    """Every image-level summary metric of a per-image table as an :class:`Estimate`."""
    subjects = per_image["subject"].astype(str).to_numpy()
    gt_pos = per_image["gt_pixels"].to_numpy() > 0
    pred_pos = per_image["pred_pixels"].to_numpy() > 0
    out: dict[str, Estimate] = {}

    for name, column in POSITIVE_MEANS.items():
        out[name] = bootstrap.mean(_numbers(per_image, column)[gt_pos], subjects[gt_pos], resampler)
    out["pearson_mean"] = bootstrap.mean(_numbers(per_image, "pearson"), subjects, resampler)
    out["dice_all"] = bootstrap.mean(dice_all_values(per_image), subjects, resampler)

    empty = ~gt_pos
    out["false_positive_rate_empty"] = bootstrap.mean(
        pred_pos[empty].astype(float), subjects[empty], resampler
    )
    for name, column in EMPTY_MEANS.items():
        out[name] = bootstrap.mean(_numbers(per_image, column)[empty], subjects[empty], resampler)
    out["fp_lesions_per_image"] = bootstrap.mean(_numbers(per_image, "lesion_fp"), subjects, resampler)

    out["lesion_sensitivity"] = bootstrap.ratio(
        _numbers(per_image, "lesion_tp"), _numbers(per_image, "n_ref_lesions"), subjects, resampler
    )
    out["lesion_precision"] = bootstrap.ratio(
        _numbers(per_image, "lesion_tp_pred"), _numbers(per_image, "n_pred_lesions"), subjects, resampler
    )
    out["lesion_f1"] = bootstrap.derived(_f1, out["lesion_precision"], out["lesion_sensitivity"])

    scores = _numbers(per_image, "presence_score")
    scored = ~np.isnan(scores)
    out["presence_roc_auc"] = bootstrap.roc_auc(
        gt_pos[scored], scores[scored], subjects[scored], resampler
    )
    out["presence_ap"] = bootstrap.average_precision(
        gt_pos[scored], scores[scored], subjects[scored], resampler
    )
    known, called = _called(per_image)
    positive, negative = gt_pos & known, ~gt_pos & known
    out["presence_sensitivity"] = bootstrap.mean(
        called[positive].astype(float), subjects[positive], resampler
    )
    out["presence_specificity"] = bootstrap.mean(
        (~called[negative]).astype(float), subjects[negative], resampler
    )
    return out


def _detection_by_bin(
    lesions: pd.DataFrame, bins: np.ndarray, labels: Sequence[str], resampler: Resampler
) -> dict[str, Estimate]:
    """Detection rate of the lesions whose bin (one per row of ``lesions``) is each label."""
    subjects = lesions["subject"].astype(str).to_numpy()
    detected = lesions["detected"].astype(str).str.lower().isin(["true", "1", "1.0"]).to_numpy()
    return {
        label: bootstrap.mean(detected[bins == label].astype(float), subjects[bins == label], resampler)
        for label in labels
    }


def detection_estimates(
    lesions: pd.DataFrame, size_bins: Sequence[int], resampler: Resampler
) -> dict[str, Estimate]:
    """Detection rate of reference lesions per size bin (label -> Estimate), every bin present."""
    bins = lesions["size_bin"].astype(str).to_numpy()
    return _detection_by_bin(lesions, bins, size_bin_labels(size_bins), resampler)


def volume_detection_estimates(
    lesions: pd.DataFrame, edges_mm3: Sequence[float], resampler: Resampler
) -> dict[str, Estimate]:
    """Detection rate of reference lesions per volume bin in mm³ (evaluate.size_bins_mm3).

    Lesions without a physical volume (an empty ``volume_mm3``: pictures, arrays) are in no bin.
    """
    labels = volume_bin_labels(edges_mm3)
    index = volume_bin_index(_numbers(lesions, "volume_mm3"), edges_mm3)
    bins = np.array([labels[i] if i >= 0 else "" for i in index], dtype=object)
    return _detection_by_bin(lesions, bins, labels, resampler)


def detection_records(estimates: Mapping[str, Estimate]) -> list[dict]:
    """The ``detection_by_size`` records of per-bin estimates: size_bin, rate, interval, n_lesions."""
    return [
        {"size_bin": label, **_rename(bootstrap.describe(estimate, "rate"))}
        for label, estimate in estimates.items()
    ]


def volume_detection(
    per_image: pd.DataFrame, lesions: pd.DataFrame, edges_mm3: Sequence[float], resampler: Resampler
) -> dict:
    """The summary keys of the detection breakdown by lesion volume (evaluate.size_bins_mm3).

    ``detection_by_size_mm3`` holds ``detection_by_size`` records when every image has a physical
    spacing; otherwise it is null and ``detection_by_size_mm3_reason`` says why (pictures, arrays
    and preprocessed ``.npy`` tiles have no mm³), rather than bins that silently leave lesions out.
    """
    unit = distance_unit_of(per_image)
    if unit not in (PHYSICAL_UNIT, None):
        return {
            "detection_by_size_mm3": None,
            "detection_by_size_mm3_reason": f"distances and sizes of these images are in {unit}, "
            "not mm: their masks have no physical spacing (pictures, arrays or preprocessed tiles)",
        }
    estimates = volume_detection_estimates(lesions, edges_mm3, resampler)
    return {"detection_by_size_mm3": detection_records(estimates)}


def distance_unit_of(per_image: pd.DataFrame) -> str | None:
    """The unit of a per-image table's hd95 and msd: one unit, :data:`MIXED_UNITS`, or None for no image.

    A table written before the ``distance_unit`` column existed measured in pixels.
    """
    if "distance_unit" not in per_image.columns:
        return PIXEL_UNIT if len(per_image) else None
    units = sorted(set(per_image["distance_unit"].astype(str)))
    if not units:
        return None
    return units[0] if len(units) == 1 else MIXED_UNITS


def _nan_counts(per_image: pd.DataFrame) -> dict[str, int]:
    """How many undefined values each mean left out, so a reader can see what was excluded."""
    gt_pos = per_image["gt_pixels"].to_numpy() > 0
    counts = {
        name: int(np.isnan(_numbers(per_image, column)[gt_pos]).sum())
        for name, column in POSITIVE_MEANS.items()
    }
    counts["pearson_mean"] = int(np.isnan(_numbers(per_image, "pearson")).sum())
    counts["presence_score"] = int(np.isnan(_numbers(per_image, "presence_score")).sum())
    counts["presence_pred"] = int((~_called(per_image)[0]).sum())
    return counts


def _describe_all(estimates: Mapping[str, Estimate]) -> dict:
    out: dict = {}
    for name, estimate in estimates.items():
        out.update(bootstrap.describe(estimate, name))
    return out


def summarise(
    per_image: pd.DataFrame,
    lesions: pd.DataFrame,
    resampler: Resampler,
    size_bins: Sequence[int],
) -> dict:
    """The ``summary.json`` section of one subset: counts, every metric with n and interval.

    Intervals come from ``resampler`` (subjects of ``per_image``); ``lesions`` is the
    per-reference-lesion table of the same images.
    """
    gt_pos = per_image["gt_pixels"].to_numpy() > 0
    groups = per_image["group"].astype(str).value_counts()
    out: dict = {
        "n_images": int(len(per_image)),
        "n_subjects": int(per_image["subject"].nunique()),
        "n_gt_positive": int(gt_pos.sum()),
        "n_gt_empty": int((~gt_pos).sum()),
        "groups": {group: int(groups.get(group, 0)) for group in GROUPS},
    }
    out.update({name: int(_numbers(per_image, name).sum()) for name in LESION_COUNTS})
    estimates = image_estimates(per_image, resampler)
    out.update(_describe_all(estimates))
    out["dice_all_convention"] = DICE_ALL_CONVENTION
    scored = ~np.isnan(_numbers(per_image, "presence_score"))
    out["presence_n_positive"] = int((gt_pos & scored).sum())
    out["presence_n_negative"] = int((~gt_pos & scored).sum())
    out["detection_by_size"] = detection_records(detection_estimates(lesions, size_bins, resampler))
    out["nan_counts"] = _nan_counts(per_image)
    out["distance_unit"] = distance_unit_of(per_image)
    return out


def _rename(described: dict) -> dict:
    # In the per-bin records "rate_n" reads better as the number of reference lesions in the bin.
    described["n_lesions"] = described.pop("rate_n")
    return described


def resampler_record(resampler: Resampler, seed: int) -> dict:
    """What a reader needs to reproduce the intervals."""
    return {
        "unit": "subject",
        "method": "percentile",
        "n_resamples": int(resampler.counts.shape[0]),
        "n_subjects": len(resampler.subjects),
        "seed": int(seed),
        "confidence": float(resampler.confidence),
    }


def paired_estimates(
    per_image: pd.DataFrame,
    baseline: pd.DataFrame,
    resampler: Resampler,
    metrics: Sequence[str],
) -> dict[str, Estimate]:
    """Difference (run - baseline) of each metric over the same resamples of shared images."""
    ours = image_estimates(per_image, resampler)
    theirs = image_estimates(baseline, resampler)
    return {name: bootstrap.difference(ours[name], theirs[name]) for name in metrics}

