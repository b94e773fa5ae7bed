"""Tests of lesionflow.model.scores: batch Dice, IoU and Pearson r against hand-computed values and
lesionflow.evaluation.metrics.
"""

import numpy as np
import pytest
import torch

from lesionflow.evaluation import metrics
from lesionflow.model.scores import batch_scores, mean_score


def test_batch_scores_match_hand_computed_dice_iou_and_skip_lesion_free_images():
    target = torch.zeros((2, 1, 4, 4))
    target[0, 0, :2, :2] = 1  # 4 lesion pixels; image 1 is lesion-free
    probs = torch.zeros((2, 1, 4, 4))
    probs[0, 0, :2, :1] = 0.9  # 2 of them found
    probs[0, 0, 3, 3] = 0.8  # plus one false positive
    scores = batch_scores(probs, target)
    assert scores["dice"].tolist() == pytest.approx([2 * 2 / (3 + 4)])
    assert scores["iou"].tolist() == pytest.approx([2 / 5])
    expected_r = np.corrcoef(probs[0].flatten().numpy(), target[0].flatten().numpy())[0, 1]
    assert scores["pearson"].tolist() == pytest.approx([expected_r], abs=1e-5)


def test_batch_scores_agree_with_lesionflow_metrics_on_random_maps():
    rng = np.random.default_rng(0)
    probs = rng.random((6, 1, 9, 7)).astype(np.float32)
    target = rng.random((6, 1, 9, 7)) > 0.7
    target[2] = False  # a lesion-free image is left out
    scores = batch_scores(torch.from_numpy(probs), torch.from_numpy(target).float())
    keep = target.reshape(6, -1).any(axis=1)
    pred = probs[:, 0] >= 0.5
    np.testing.assert_allclose(scores["dice"], metrics.dice_per_image(pred, target[:, 0])[keep])
    np.testing.assert_allclose(scores["iou"], metrics.iou_per_image(pred, target[:, 0])[keep])
    np.testing.assert_allclose(
        scores["pearson"], metrics.pearson_per_image(probs[:, 0], target[:, 0])[keep], atol=1e-5
    )


def test_mean_score_skips_undefined_scores_and_is_nan_without_any():
    assert mean_score([np.array([0.2, np.nan]), np.array([0.4])]) == pytest.approx(0.3)
    assert np.isnan(mean_score([]))
    assert np.isnan(mean_score([np.array([np.nan])]))
