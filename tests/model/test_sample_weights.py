"""Tests of lesionflow.model.sample_weights: inverse-frequency weights of score bins; the weighted loss."""

import numpy as np
import pytest
import torch

# The weights count in the split's score bins: one bin convention for both.
from lesionflow.data.score_column import score_bin_index as score_bins
from lesionflow.data.score_column import score_bin_labels as bin_labels
from lesionflow.model.sample_weights import inverse_frequency_weights, training_weights
from lesionflow.model.score_epoch import weighted_loss
from lesionflow.pipeline.errors import LesionflowError

CUTS = [2, 5, 10]


def test_a_score_on_a_cut_point_belongs_to_the_upper_bin():
    bins = score_bins([0, 1.999, 2, 4.9, 5, 10, 34], CUTS)
    assert bins.tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert bin_labels(CUTS) == ["<2", "[2, 5)", "[5, 10)", ">=10"]


def test_inverse_frequency_weights_follow_n_over_k_times_bin_count_by_hand():
    # Bins: four scores < 2, none in [2, 5), one in [5, 10), one >= 10: N = 6, K = 3 non-empty.
    weights = inverse_frequency_weights([0, 0, 0, 1, 6, 12], CUTS)
    np.testing.assert_allclose(weights, [6 / 12] * 4 + [6 / 3, 6 / 3])
    assert weights.mean() == pytest.approx(1.0)


def test_every_non_empty_bin_carries_the_same_total_weight():
    scores = np.random.default_rng(0).gamma(1.0, 3.0, size=200)
    weights = inverse_frequency_weights(scores, CUTS)
    bins = score_bins(scores, CUTS)
    totals = [weights[bins == b].sum() for b in np.unique(bins)]
    np.testing.assert_allclose(totals, [len(scores) / len(totals)] * len(totals))
    assert weights.mean() == pytest.approx(1.0)


def test_none_weighs_every_sample_one_and_the_summary_lists_each_bins_weight():
    ones, summary = training_weights("none", [0, 3, 12], CUTS)
    np.testing.assert_array_equal(ones, [1, 1, 1])
    assert summary["method"] == "none"
    weights, summary = training_weights("inverse_frequency", [0, 0, 0, 1, 6, 12], CUTS)
    assert summary["cut_points"] == [2.0, 5.0, 10.0]
    assert summary["bins"] == [
        {"bin": "<2", "n": 4, "weight": 0.5},
        {"bin": "[2, 5)", "n": 0, "weight": None},
        {"bin": "[5, 10)", "n": 1, "weight": 2.0},
        {"bin": ">=10", "n": 1, "weight": 2.0},
    ]


@pytest.mark.parametrize("cuts", [[], [5, 2], [2, 2], ["a"], [1, float("inf")]])
def test_bad_cut_points_name_train_weight_bins(cuts):
    with pytest.raises(LesionflowError, match=r"train\.weight_bins"):
        training_weights("inverse_frequency", [1.0, 2.0], cuts)


def test_unknown_method_names_train_sample_weights():
    with pytest.raises(LesionflowError, match=r"train\.sample_weights"):
        training_weights("balanced", [1.0], CUTS)


def test_the_batch_loss_is_the_mean_of_weight_times_per_sample_loss():
    predicted = torch.tensor([[1.0], [2.0], [5.0], [0.0]])
    target = torch.tensor([[0.0], [2.0], [3.0], [3.0]])
    weights = torch.tensor([0.5, 0.5, 2.0, 1.0])
    mse = torch.nn.MSELoss(reduction="none")
    # Per-sample squared errors 1, 0, 4, 9.
    assert float(weighted_loss(mse, predicted, target, weights)) == pytest.approx((0.5 + 0 + 8 + 9) / 4)
    unweighted = weighted_loss(mse, predicted, target, torch.ones(4))
    torch.testing.assert_close(unweighted, torch.nn.functional.mse_loss(predicted, target))
