"""Tests of lesionflow.evaluation.summary: split summaries with counts, NaN conventions and
subject intervals.
"""

import math

import numpy as np
import pandas as pd
import pytest
from schema_settings import evaluate_resampler, lesion_matching
from sklearn.metrics import average_precision_score, roc_auc_score

from lesionflow.evaluation.metrics import DICE_ALL_CONVENTION, GROUPS, score_images
from lesionflow.evaluation.overlap import segmentation_summary
from lesionflow.evaluation.summary import (
    distance_unit_of,
    paired_estimates,
    summarise,
    volume_detection_estimates,
)
from lesionflow.io.geometry import Geometry


def _mask(shape, *points):
    mask = np.zeros(shape, dtype=bool)
    for point in points:
        mask[point] = True
    return mask


def _tables(subjects=("a", "b", "c", "d")):
    shape = (8, 8)
    gts = [
        _mask(shape, (1, 1), (1, 2), (5, 5)),  # two lesions, one hit exactly, one missed
        _mask(shape, (4, 4)),  # positive, missed entirely
        _mask(shape),  # empty, one false-positive lesion
        _mask(shape),  # empty, correct empty
    ]
    preds = [_mask(shape, (1, 1), (1, 2)), _mask(shape), _mask(shape, (6, 6)), _mask(shape)]
    probs = [p.astype(np.float32) * 0.9 + 0.05 for p in preds]
    scores = [0.9, 0.2, 0.8, 0.1]
    calls = [True, False, True, False]
    ids = ["a_1", "b_1", "c_1", "d_1"]
    return score_images(
        ids, list(subjects), preds, gts, probs, scores, calls, matching=lesion_matching(), size_bins=[2]
    )


def _summary(per_image, lesions, n_resamples=200):
    resampler = evaluate_resampler(per_image["subject"].tolist(), n_resamples=n_resamples)
    return summarise(per_image, lesions, resampler, size_bins=[2])


def test_summary_counts_the_four_image_groups_and_every_lesion():
    summary = _summary(*_tables())
    assert (summary["n_images"], summary["n_gt_positive"], summary["n_gt_empty"]) == (4, 2, 2)
    assert summary["groups"] == {group: 1 for group in GROUPS}
    assert (summary["n_ref_lesions"], summary["lesion_tp"], summary["lesion_fn"]) == (3, 1, 2)
    assert (summary["n_pred_lesions"], summary["lesion_fp"]) == (2, 1)


def test_summary_dice_pos_excludes_empty_references_and_dice_all_states_its_convention():
    summary = _summary(*_tables())
    assert summary["dice_pos"] == pytest.approx(2 * 2 / (3 + 2) / 2) and summary["dice_pos_n"] == 2
    # dice values 0.8, 0, 0, NaN -> with the dice_all convention 0.8, 0, 0, 1.
    assert summary["dice_all"] == pytest.approx(1.8 / 4) and summary["dice_all_n"] == 4
    assert summary["dice_all_convention"] == DICE_ALL_CONVENTION
    assert summary["nan_counts"]["precision_pos"] == 1  # the missed image predicted nothing
    assert summary["hd95_pos_n"] == 1 and summary["nan_counts"]["hd95_pos"] == 1


def test_summary_judges_lesion_free_images_by_false_positive_burden():
    summary = _summary(*_tables())
    assert summary["false_positive_rate_empty"] == pytest.approx(0.5)
    assert summary["false_positive_rate_empty_n"] == 2
    assert summary["fp_lesions_per_empty_image"] == pytest.approx(0.5)
    assert summary["fp_area_per_empty_image"] == pytest.approx(0.5)


def test_lesion_sensitivity_precision_and_f1_pool_lesions_over_images():
    summary = _summary(*_tables())
    assert summary["lesion_sensitivity"] == pytest.approx(1 / 3)
    assert summary["lesion_precision"] == pytest.approx(1 / 2)
    assert summary["lesion_f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    by_bin = {row["size_bin"]: row for row in summary["detection_by_size"]}
    assert by_bin["<2"]["rate"] == 0 and by_bin["<2"]["n_lesions"] == 2
    assert by_bin[">=2"]["rate"] == 1 and by_bin[">=2"]["n_lesions"] == 1


def test_presence_auc_and_ap_match_sklearn():
    per_image, lesions = _tables()
    summary = _summary(per_image, lesions)
    truth = per_image["gt_pixels"] > 0
    assert summary["presence_roc_auc"] == pytest.approx(roc_auc_score(truth, per_image["presence_score"]))
    assert summary["presence_ap"] == pytest.approx(
        average_precision_score(truth, per_image["presence_score"])
    )
    assert summary["presence_sensitivity"] == pytest.approx(0.5)
    assert summary["presence_specificity"] == pytest.approx(0.5)
    assert (summary["presence_n_positive"], summary["presence_n_negative"]) == (2, 2)


def test_every_metric_has_an_n_and_an_interval():
    summary = _summary(*_tables())
    for name in ("dice_pos", "iou_pos", "hd95_pos", "lesion_f1", "presence_roc_auc", "dice_all"):
        assert f"{name}_n" in summary
        low, high = summary[f"{name}_ci_low"], summary[f"{name}_ci_high"]
        assert low <= high or (math.isnan(low) and math.isnan(high))


def test_point_values_equal_the_point_summary_used_for_tuning():
    per_image, lesions = _tables()
    summary, point = _summary(per_image, lesions), segmentation_summary(per_image)
    for name in ("dice_pos", "iou_pos", "dice_all", "false_positive_rate_empty"):
        assert summary[name] == pytest.approx(point[name]) and summary[f"{name}_n"] == point[f"{name}_n"]


def test_undefined_metrics_are_nan_with_n_zero_never_zero_or_one():
    per_image, lesions = _tables()
    positive_only = _summary(per_image.iloc[:2], lesions)
    assert math.isnan(positive_only["presence_roc_auc"]) and math.isnan(positive_only["presence_ap"])
    assert math.isnan(positive_only["presence_roc_auc_ci_low"])
    assert math.isnan(positive_only["false_positive_rate_empty"])
    assert positive_only["false_positive_rate_empty_n"] == 0
    empty_only = _summary(per_image.iloc[2:], lesions.iloc[:0])
    assert math.isnan(empty_only["dice_pos"]) and empty_only["dice_pos_n"] == 0
    assert math.isnan(empty_only["lesion_sensitivity"])


def test_intervals_resample_subjects_so_duplicated_images_do_not_narrow_them():
    # Every subject scanned twice with identical results: an image-level bootstrap would
    # narrow the interval; resampling subjects must give exactly the interval of one image each.
    rng = np.random.default_rng(0)
    n = 30
    single = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "subject": [f"s{k:02d}" for k in range(n)],
            "dice": rng.random(n),
            "iou": rng.random(n),
        }
    )
    for column in ("precision", "recall", "hd95", "msd", "pearson", "presence_score"):
        single[column] = rng.random(n)
    for column in ("n_ref_lesions", "lesion_tp", "n_pred_lesions", "lesion_tp_pred"):
        single[column] = 1
    single["lesion_fp"] = single["fp_lesion_area"] = single["lesion_fn"] = 0
    single["gt_pixels"], single["pred_pixels"] = 10, 10
    single["group"], single["presence_pred"] = "gt_pos_pred_pos", True
    twice = pd.concat([single, single.assign(image_id=single["image_id"] + "b")], ignore_index=True)
    lesions = pd.DataFrame(columns=["image_id", "subject", "lesion", "size", "size_bin", "detected"])
    one, two = _summary(single, lesions, 500), _summary(twice, lesions, 500)
    assert two["dice_pos_n"] == 2 * one["dice_pos_n"]
    assert two["dice_pos_ci_low"] == pytest.approx(one["dice_pos_ci_low"])
    assert two["dice_pos_ci_high"] == pytest.approx(one["dice_pos_ci_high"])


def test_paired_difference_of_a_run_with_itself_is_zero_with_a_zero_interval():
    per_image, _ = _tables()
    resampler = evaluate_resampler(per_image["subject"].tolist(), n_resamples=100)
    deltas = paired_estimates(per_image, per_image, resampler, ["dice_pos", "lesion_f1"])
    for estimate in deltas.values():
        assert estimate.value == 0
        assert np.nanmax(np.abs(estimate.samples)) == 0


def test_summary_survives_a_csv_round_trip(tmp_path):
    per_image, lesions = _tables()
    per_image.to_csv(tmp_path / "per_image.csv", index=False)
    lesions.to_csv(tmp_path / "lesions.csv", index=False)
    again = pd.read_csv(tmp_path / "per_image.csv", dtype={"image_id": str, "subject": str})
    lesions_again = pd.read_csv(tmp_path / "lesions.csv", dtype={"image_id": str, "subject": str})
    a, b = _summary(per_image, lesions), _summary(again, lesions_again)
    for key in ("dice_pos", "presence_roc_auc", "presence_sensitivity", "dice_all", "lesion_f1"):
        assert a[key] == pytest.approx(b[key])
    assert a["detection_by_size"] == b["detection_by_size"]


def _volume_tables(spacing=(0.5, 1.0, 2.0)):
    """Two volumes: lesions of 1, 8 and 27 voxels (1 mm³ each voxel), the 8-voxel one missed."""
    gt = np.zeros((8, 8, 8), dtype=bool)
    gt[0, 0, 0] = True
    gt[2:4, 2:4, 2:4] = True
    gt[5:8, 5:8, 5:8] = True
    pred = gt.copy()
    pred[2:4, 2:4, 2:4] = False
    geometry = Geometry(gt.shape, spacing, np.diag([*spacing, 1.0]))
    return score_images(
        ["v1", "v2"], ["a", "b"], [pred, pred], [gt, gt], matching=lesion_matching(connectivity=1),
        size_bins=[2], geometries=[geometry, geometry],
    )


def test_detection_by_volume_bins_uses_mm3_of_each_lesion():
    per_image, lesions = _volume_tables()
    resampler = evaluate_resampler(per_image["subject"].tolist(), n_resamples=50)
    # 1, 8 and 27 voxels of 1 mm³: volumes 1, 8 and 27 mm³ in bins <2, 2 to <10 and >=10.
    estimates = volume_detection_estimates(lesions, [2, 10], resampler)
    assert list(estimates) == ["<2", "2 to <10", ">=10"]
    assert [estimates[b].value for b in estimates] == [1.0, 0.0, 1.0]
    assert [estimates[b].n for b in estimates] == [2, 2, 2]
    assert summarise(per_image, lesions, resampler, [2])["distance_unit"] == "mm"


def test_distance_unit_is_mm_pixels_mixed_or_pixels_for_a_table_without_the_column():
    volumes, _ = _volume_tables()
    pictures, _ = _tables()
    assert distance_unit_of(volumes) == "mm" and distance_unit_of(pictures) == "pixels"
    assert distance_unit_of(pd.concat([volumes, pictures])) == "mixed"
    assert distance_unit_of(pictures.drop(columns="distance_unit")) == "pixels"
    assert distance_unit_of(pictures.iloc[:0]) is None
