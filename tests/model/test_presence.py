"""Tests of lesionflow.model.presence: TTA-averaged logits, validation ROC-AUC / AP and the table."""

import math

import numpy as np
import pytest
import torch
from scipy.special import expit, logit
from sklearn.metrics import average_precision_score, roc_auc_score

from lesionflow.model.presence import (
    TABLE_COLUMNS,
    highest_logit,
    mean_probability_logit,
    presence_metrics,
    presence_table,
)


def test_the_mean_probability_logit_is_the_logit_of_the_mean_sigmoid():
    logits = torch.tensor([[0.3, -2.0, 5.0], [1.1, -0.5, -3.0], [-0.7, 0.0, 2.5]])
    expected = logit(expit(logits.numpy().astype(np.float64)).mean(axis=0))
    np.testing.assert_allclose(mean_probability_logit(logits).numpy(), expected, rtol=1e-12)


def test_one_transform_gives_back_its_own_logit():
    logits = torch.tensor([[-4.0, 0.0, 0.25, 7.5]])
    np.testing.assert_allclose(mean_probability_logit(logits).numpy(), logits[0].numpy(), atol=1e-12)


def test_saturated_sigmoids_still_give_a_finite_logit():
    # float64 sigmoid of 60 is exactly 1, whose logit is infinite; the log-space mean is not.
    logits = torch.tensor([[60.0, -60.0], [80.0, -80.0]])
    combined = mean_probability_logit(logits).numpy()
    assert np.isfinite(combined).all()
    assert combined[0] == pytest.approx(60.0 + math.log(2), abs=1e-6)
    assert combined[1] == pytest.approx(-60.0 - math.log(2), abs=1e-6)


def test_the_highest_logit_is_the_max_and_nan_without_a_head_or_window():
    assert highest_logit([0.5, 2.0, -1.0]) == 2.0
    assert math.isnan(highest_logit([math.nan, math.nan]))
    assert math.isnan(highest_logit([]))


def test_presence_metrics_equal_scikit_learn():
    labels = [True, False, True, False, False, True]
    logits = [2.0, -1.0, 0.5, 0.7, -3.0, 0.7]
    metrics = presence_metrics(labels, logits)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels, logits))
    assert metrics["ap"] == pytest.approx(average_precision_score(labels, logits))


@pytest.mark.parametrize("label", [True, False])
def test_presence_metrics_are_nan_when_validation_has_one_class_only(label):
    metrics = presence_metrics([label] * 3, [0.1, 0.4, -2.0])
    assert math.isnan(metrics["roc_auc"]) and math.isnan(metrics["ap"])


def test_the_table_has_one_row_per_image_with_the_sigmoid_of_its_logit():
    table = presence_table(["a", "b"], [0.0, -2.0])
    assert list(table.columns) == TABLE_COLUMNS
    assert table["image_id"].tolist() == ["a", "b"]
    np.testing.assert_allclose(table["presence_probability"], [0.5, expit(-2.0)])


def test_the_table_of_a_model_without_a_head_holds_nan_scores():
    table = presence_table(["a", "b"], [math.nan, math.nan])
    assert table[["presence_logit", "presence_probability"]].isna().all().all()
