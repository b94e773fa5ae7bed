"""Tests of lesionflow.evaluation.overlap (what tuning scores by) against MONAI and hand-computed
edge cases."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_dice, compute_iou
from tiny_data import random_mask_stack

from lesionflow.evaluation.overlap import dice_from_counts, iou_from_counts, segmentation_summary


def _counts(preds, gts):
    p, g = preds.reshape(len(preds), -1), gts.reshape(len(gts), -1)
    return (p & g).sum(1), p.sum(1), g.sum(1)


def _monai(metric, preds, gts):
    return metric(
        torch.from_numpy(preds[:, None].astype(np.float32)),
        torch.from_numpy(gts[:, None].astype(np.float32)),
        ignore_empty=False,
    ).numpy()[:, 0]


def test_dice_and_iou_from_counts_are_nan_only_when_both_masks_are_empty():
    # both empty, prediction only, reference only, disjoint, identical, 2 of 3 and 4 pixels shared
    inter = np.array([0, 0, 0, 0, 3, 2])
    pred = np.array([0, 2, 0, 1, 3, 3])
    gt = np.array([0, 0, 2, 1, 3, 4])
    dice, iou = dice_from_counts(inter, pred, gt), iou_from_counts(inter, pred, gt)
    assert math.isnan(dice[0]) and math.isnan(iou[0])
    np.testing.assert_allclose(dice[1:], [0, 0, 0, 1, 2 * 2 / 7])
    np.testing.assert_allclose(iou[1:], [0, 0, 0, 1, 2 / 5])


@pytest.mark.parametrize("metric, ours", [(compute_dice, dice_from_counts), (compute_iou, iou_from_counts)])
def test_dice_and_iou_from_counts_equal_monai_except_that_empty_empty_is_nan_not_one(metric, ours):
    preds, gts = random_mask_stack(seed=1)
    values, theirs = ours(*_counts(preds, gts)), _monai(metric, preds, gts)
    defined = ~np.isnan(values)
    np.testing.assert_allclose(values[defined], theirs[defined], rtol=1e-6)
    assert (~defined).sum() == 1 and theirs[~defined][0] == 1


def test_segmentation_summary_for_tuning_excludes_empty_references_from_dice_pos():
    # positive and hit exactly, positive and missed, empty with a false positive, empty and correct
    table = pd.DataFrame(
        {
            "dice": [1.0, 0.0, 0.0, math.nan],
            "iou": [1.0, 0.0, 0.0, math.nan],
            "gt_pixels": [2, 1, 0, 0],
            "pred_pixels": [2, 0, 1, 0],
        }
    )
    summary = segmentation_summary(table)
    assert summary["dice_pos"] == pytest.approx(0.5) and summary["dice_pos_n"] == 2
    assert summary["iou_pos"] == pytest.approx(0.5) and summary["iou_pos_n"] == 2
    # dice values 1, 0, 0, NaN -> with the dice_all convention 1, 0, 0, 1.
    assert summary["dice_all"] == pytest.approx(0.5) and summary["dice_all_n"] == 4
    assert summary["false_positive_rate_empty"] == pytest.approx(0.5)
    assert (summary["n_gt_positive"], summary["n_gt_empty"]) == (2, 2)


def test_dice_all_equals_monai_mean_with_ignore_empty_false():
    preds, gts = random_mask_stack(seed=5)
    inter, pred_pixels, gt_pixels = _counts(preds, gts)
    table = pd.DataFrame(
        {
            "dice": dice_from_counts(inter, pred_pixels, gt_pixels),
            "iou": iou_from_counts(inter, pred_pixels, gt_pixels),
            "gt_pixels": gt_pixels,
            "pred_pixels": pred_pixels,
        }
    )
    theirs = _monai(compute_dice, preds, gts).mean()
    assert segmentation_summary(table)["dice_all"] == pytest.approx(float(theirs), rel=1e-6)
