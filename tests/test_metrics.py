"""Tests of lesionflow.metrics against MONAI, scikit-learn, scipy and hand-computed edge cases."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_dice, compute_iou
from scipy.stats import pearsonr
from sklearn.metrics import average_precision_score, roc_auc_score

from lesionflow.metrics import (
    DICE_ALL_CONVENTION,
    PER_IMAGE_COLUMNS,
    dice_per_image,
    image_metrics,
    iou_per_image,
    pearson_per_image,
    per_image_table,
    precision_per_image,
    recall_per_image,
    summarise,
)


def _mask(shape, *points):
    mask = np.zeros(shape, dtype=bool)
    for point in points:
        mask[point] = True
    return mask


def _random_stack(n=12, shape=(16, 16), seed=0):
    rng = np.random.default_rng(seed)
    preds = rng.random((n, *shape)) > 0.7
    gts = rng.random((n, *shape)) > 0.8
    preds[0] = False  # empty prediction, non-empty reference
    gts[1] = False  # non-empty prediction, empty reference
    preds[2] = gts[2] = False  # both empty
    return preds, gts


# --- hand-made edge cases -------------------------------------------------------------------


def test_dice_is_nan_when_reference_and_prediction_are_empty():
    empty = _mask((8, 8))
    result = image_metrics(empty, empty)
    assert math.isnan(result["dice"]) and math.isnan(result["iou"])
    assert math.isnan(result["precision"]) and math.isnan(result["recall"])
    assert math.isnan(result["pearson"])


def test_dice_is_zero_when_reference_is_empty_and_prediction_has_one_pixel():
    result = image_metrics(_mask((8, 8), (3, 3)), _mask((8, 8)))
    assert result["dice"] == 0 and result["iou"] == 0
    assert result["precision"] == 0
    assert math.isnan(result["recall"])  # nothing to find
    assert (result["gt_pixels"], result["pred_pixels"]) == (0, 1)


def test_dice_is_zero_when_prediction_is_empty_and_reference_has_one_pixel():
    result = image_metrics(_mask((8, 8)), _mask((8, 8), (3, 3)))
    assert result["dice"] == 0 and result["iou"] == 0
    assert math.isnan(result["precision"])  # nothing claimed
    assert result["recall"] == 0


def test_dice_is_one_when_masks_are_identical():
    mask = _mask((8, 8), (1, 1), (1, 2), (5, 5))
    result = image_metrics(mask, mask)
    assert result["dice"] == result["iou"] == result["precision"] == result["recall"] == 1
    assert result["pearson"] == pytest.approx(1.0)


def test_dice_is_zero_when_masks_are_disjoint():
    result = image_metrics(_mask((8, 8), (0, 0)), _mask((8, 8), (7, 7)))
    assert result["dice"] == 0 and result["iou"] == 0
    assert result["precision"] == 0 and result["recall"] == 0


def test_dice_and_iou_hand_computed_on_partial_overlap():
    pred = _mask((6, 6), (0, 0), (0, 1), (0, 2))
    gt = _mask((6, 6), (0, 1), (0, 2), (0, 3), (0, 4))
    result = image_metrics(pred, gt)
    assert result["dice"] == pytest.approx(2 * 2 / (3 + 4))
    assert result["iou"] == pytest.approx(2 / 5)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 4)


def test_metrics_are_the_same_code_for_a_3d_volume():
    pred = np.zeros((5, 6, 7), dtype=bool)
    gt = np.zeros_like(pred)
    pred[1:3, 1:3, 1:3] = True  # 8 voxels
    gt[2:4, 1:3, 1:3] = True  # 8 voxels, 4 shared
    result = image_metrics(pred, gt)
    assert result["dice"] == pytest.approx(0.5)
    assert result["iou"] == pytest.approx(4 / 12)
    assert (result["gt_pixels"], result["pred_pixels"]) == (8, 8)


def test_pearson_is_nan_when_probability_map_is_constant():
    gt = _mask((8, 8), (2, 2))
    assert math.isnan(image_metrics(gt, gt, np.full((8, 8), 0.3, dtype=np.float32))["pearson"])


# --- independent implementations ------------------------------------------------------------


def test_dice_matches_monai_except_that_empty_empty_is_nan_not_one():
    preds, gts = _random_stack()
    ours = dice_per_image(preds, gts)
    # MONAI with ignore_empty=False scores empty reference + empty prediction as 1 and
    # empty reference + any prediction as 0; with ignore_empty=True, any empty reference is NaN.
    theirs = compute_dice(
        torch.from_numpy(preds[:, None].astype(np.float32)),
        torch.from_numpy(gts[:, None].astype(np.float32)),
        ignore_empty=False,
    ).numpy()[:, 0]
    both_empty = ~preds.reshape(len(preds), -1).any(1) & ~gts.reshape(len(gts), -1).any(1)
    np.testing.assert_allclose(ours[~both_empty], theirs[~both_empty], rtol=1e-6)
    assert np.isnan(ours[both_empty]).all() and (theirs[both_empty] == 1).all()


def test_iou_matches_monai_except_that_empty_empty_is_nan_not_one():
    preds, gts = _random_stack(seed=1)
    ours = iou_per_image(preds, gts)
    theirs = compute_iou(
        torch.from_numpy(preds[:, None].astype(np.float32)),
        torch.from_numpy(gts[:, None].astype(np.float32)),
        ignore_empty=False,
    ).numpy()[:, 0]
    defined = ~np.isnan(ours)
    np.testing.assert_allclose(ours[defined], theirs[defined], rtol=1e-6)
    assert (~defined).sum() == 1 and theirs[~defined][0] == 1


def test_dice_matches_monai_on_a_3d_stack():
    preds, gts = _random_stack(n=4, shape=(6, 7, 8), seed=2)
    ours = dice_per_image(preds, gts)
    theirs = compute_dice(
        torch.from_numpy(preds[:, None].astype(np.float32)),
        torch.from_numpy(gts[:, None].astype(np.float32)),
        ignore_empty=True,
    ).numpy()[:, 0]
    # ignore_empty=True is NaN for every empty reference; compare where the reference has lesion.
    has_lesion = gts.reshape(len(gts), -1).any(1)
    np.testing.assert_allclose(ours[has_lesion], theirs[has_lesion], rtol=1e-6)


def test_precision_and_recall_match_hand_counts_per_image():
    preds, gts = _random_stack(seed=3)
    for i in range(len(preds)):
        tp = (preds[i] & gts[i]).sum()
        p, g = preds[i].sum(), gts[i].sum()
        expected_precision = tp / p if p else np.nan
        expected_recall = tp / g if g else np.nan
        np.testing.assert_equal(precision_per_image(preds, gts)[i], expected_precision)
        np.testing.assert_equal(recall_per_image(preds, gts)[i], expected_recall)


def test_pearson_matches_scipy_and_is_nan_for_a_constant_reference():
    rng = np.random.default_rng(4)
    probs = rng.random((5, 10, 10)).astype(np.float32)
    gts = rng.random((5, 10, 10)) > 0.6
    gts[3] = False
    ours = pearson_per_image(probs, gts)
    for i in range(5):
        if i == 3:
            assert math.isnan(ours[i])
        else:
            expected = pearsonr(probs[i].ravel().astype(float), gts[i].ravel().astype(float))[0]
            assert ours[i] == pytest.approx(expected, abs=1e-9)


# --- tables and summaries -------------------------------------------------------------------


def _table():
    shape = (8, 8)
    gts = [
        _mask(shape, (1, 1), (1, 2)),  # positive, hit exactly
        _mask(shape, (4, 4)),  # positive, missed
        _mask(shape),  # empty, false positive
        _mask(shape),  # empty, correct empty
    ]
    preds = [gts[0].copy(), _mask(shape), _mask(shape, (6, 6)), _mask(shape)]
    probs = [p.astype(np.float32) * 0.9 + 0.05 for p in preds]
    scores = [0.9, 0.2, 0.8, 0.1]
    calls = [True, False, True, False]
    return per_image_table(
        ["a_1", "b_1", "c_1", "d_1"], list("abcd"), preds, gts, probs, scores, calls
    )


def test_per_image_table_has_exactly_the_contract_columns():
    table = _table()
    assert list(table.columns) == PER_IMAGE_COLUMNS
    assert table["gt_pixels"].tolist() == [2, 1, 0, 0]
    assert table["pred_pixels"].tolist() == [2, 0, 1, 0]


def test_summary_dice_pos_excludes_empty_references_and_dice_all_counts_empty_empty_as_one():
    summary = summarise(_table())
    assert (summary["n_images"], summary["n_gt_positive"], summary["n_gt_empty"]) == (4, 2, 2)
    assert summary["dice_pos"] == pytest.approx(0.5) and summary["dice_pos_n"] == 2
    assert summary["iou_pos"] == pytest.approx(0.5) and summary["iou_pos_n"] == 2
    # dice values 1, 0, 0, NaN -> with the convention 1, 0, 0, 1.
    assert summary["dice_all"] == pytest.approx(0.5) and summary["dice_all_n"] == 4
    assert summary["dice_all_convention"] == DICE_ALL_CONVENTION
    assert summary["false_positive_rate_empty"] == pytest.approx(0.5)
    assert summary["false_positive_rate_empty_n"] == 2
    assert summary["nan_counts"]["dice_pos"] == 0
    assert summary["nan_counts"]["precision_pos"] == 1  # the missed image predicted nothing


def test_summary_dice_all_equals_monai_mean_with_ignore_empty_false():
    preds, gts = _random_stack(seed=5)
    table = per_image_table(
        [str(i) for i in range(len(preds))], ["s"] * len(preds), list(preds), list(gts)
    )
    theirs = compute_dice(
        torch.from_numpy(preds[:, None].astype(np.float32)),
        torch.from_numpy(gts[:, None].astype(np.float32)),
        ignore_empty=False,
    ).mean()
    assert summarise(table)["dice_all"] == pytest.approx(float(theirs), rel=1e-6)


def test_summary_presence_auc_and_ap_match_sklearn():
    table = _table()
    summary = summarise(table)
    truth = table["gt_pixels"] > 0
    assert summary["presence_roc_auc"] == pytest.approx(
        roc_auc_score(truth, table["presence_score"])
    )
    assert summary["presence_ap"] == pytest.approx(
        average_precision_score(truth, table["presence_score"])
    )
    assert summary["presence_sensitivity"] == pytest.approx(0.5)
    assert summary["presence_specificity"] == pytest.approx(0.5)
    assert (summary["presence_n_positive"], summary["presence_n_negative"]) == (2, 2)


def test_summary_is_nan_not_zero_when_a_class_is_absent():
    table = _table().iloc[:2]  # lesion-positive images only
    summary = summarise(table)
    assert math.isnan(summary["presence_roc_auc"]) and math.isnan(summary["presence_ap"])
    assert math.isnan(summary["false_positive_rate_empty"])
    assert summary["false_positive_rate_empty_n"] == 0
    assert math.isnan(summary["presence_specificity"]) and summary["presence_specificity_n"] == 0
    empty_only = summarise(_table().iloc[2:])
    assert math.isnan(empty_only["dice_pos"]) and empty_only["dice_pos_n"] == 0


def test_summary_survives_a_csv_round_trip(tmp_path):
    path = tmp_path / "per_image.csv"
    _table().to_csv(path, index=False)
    again = pd.read_csv(path, dtype={"image_id": str, "subject": str})
    a, b = summarise(_table()), summarise(again)
    for key in ("dice_pos", "presence_roc_auc", "presence_sensitivity", "dice_all"):
        assert a[key] == pytest.approx(b[key])
