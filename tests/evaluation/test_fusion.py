"""Tests of lesionflow.evaluation.fusion: presence sources, the fused score, gamma chosen on validation."""

import inspect
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from lesionflow.evaluation.fusion import (
    area_score,
    fit_area_scale,
    fused_presence,
    presence_sources,
    segmentation_presence,
    tune_gamma,
)
from lesionflow.pipeline.artifacts import read_json, write_json
from lesionflow.pipeline.errors import LesionflowError

GRID = [round(g, 2) for g in np.linspace(0, 1, 21)]
SKLEARN = {"roc_auc": roc_auc_score, "ap": average_precision_score}


def noisy_sources(seed: int, n: int = 60) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sources that each see the labels through their own noise, so the blend matters."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    prob_max = np.clip(0.35 + 0.3 * labels + rng.normal(0, 0.25, n), 0, 1)
    area = np.where(rng.random(n) < 0.3 + 0.5 * labels, rng.integers(1, 400, n), 0)
    logits = 1.5 * labels - 0.75 + rng.normal(0, 1.2, n)
    scale = fit_area_scale(area)["area_scale"]
    return presence_sources(prob_max, area, logits, scale), labels


def brute_force_gamma(sources, labels, grid, objective):
    """The gamma a plain loop over sklearn picks: best value, ties nearest 0.5, then smaller."""
    seg = (sources["max_probability"] + sources["lesion_area"]) / 2
    values = [SKLEARN[objective](labels, g * sources["classifier"] + (1 - g) * seg) for g in grid]
    best = max(values)
    tied = [g for g, v in zip(grid, values, strict=True) if v >= best - 1e-12]
    return sorted(tied, key=lambda g: (abs(g - 0.5), g))[0], best


def test_the_classifier_source_is_the_sigmoid_of_the_logit_and_max_probability_is_kept():
    logits = np.array([-3.0, 0.0, 2.0])
    sources = presence_sources([0.1, 0.5, 0.9], [0, 10, 30], logits, 10.0)
    np.testing.assert_allclose(sources["classifier"], 1 / (1 + np.exp(-logits)))
    np.testing.assert_array_equal(sources["max_probability"], [0.1, 0.5, 0.9])
    np.testing.assert_allclose(sources["lesion_area"], [0.0, 0.5, 0.75])


def test_without_a_classifier_there_is_no_classifier_source():
    assert set(presence_sources([0.2], [3], None, 1.0)) == {"max_probability", "lesion_area"}


def test_the_area_scale_is_the_median_area_of_validation_images_with_any_lesion_pixel():
    fitted = fit_area_scale([0, 0, 10, 40, 100])
    assert fitted["area_scale"] == 40.0
    assert fitted["n_val_with_area"] == 3


def test_without_any_validation_lesion_pixel_the_area_scale_is_one_and_says_why():
    fitted = fit_area_scale([0, 0, 0])
    assert fitted["area_scale"] == 1.0
    assert "no validation image" in fitted["area_scale_rule"]


def test_the_area_score_is_monotone_zero_at_no_area_and_one_half_at_the_scale():
    scores = area_score([0, 1, 40, 41, 10_000], 40.0)
    assert scores[0] == 0 and scores[2] == 0.5
    assert np.all(np.diff(scores) > 0) and scores[-1] < 1


def test_gamma_one_gives_the_classifier_and_gamma_zero_the_segmentation_score():
    sources, _ = noisy_sources(0)
    np.testing.assert_allclose(fused_presence(sources, 1.0), sources["classifier"])
    seg = (sources["max_probability"] + sources["lesion_area"]) / 2
    np.testing.assert_allclose(fused_presence(sources, 0.0), seg)
    np.testing.assert_allclose(segmentation_presence(sources), seg)


def test_the_fused_score_is_the_documented_three_way_blend():
    sources, _ = noisy_sources(1)
    gamma = 0.55
    expected = (
        gamma * sources["classifier"]
        + (1 - gamma) / 2 * sources["max_probability"]
        + (1 - gamma) / 2 * sources["lesion_area"]
    )
    np.testing.assert_allclose(fused_presence(sources, gamma), expected)


@pytest.mark.parametrize("objective", ["roc_auc", "ap"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_tune_gamma_picks_what_a_brute_force_sklearn_loop_picks(seed, objective):
    sources, labels = noisy_sources(seed)
    locked = tune_gamma(sources, labels, GRID, objective)
    gamma, best = brute_force_gamma(sources, labels, GRID, objective)
    assert locked["gamma"] == gamma
    assert locked["objective_value"] == pytest.approx(best)
    assert locked["chosen_on"] == "validation"
    assert (locked["n_pos"], locked["n_neg"]) == (int(labels.sum()), int((~labels).sum()))
    assert [row["gamma"] for row in locked["grid"]] == GRID
    assert [row["gamma"] for row in locked["grid"] if row["selected"]] == [gamma]


def test_tied_gammas_go_to_the_one_nearest_one_half_then_the_smaller():
    # Classifier and segmentation rank the images alike, so every blend has the same AUC.
    seg = np.array([0.1, 0.2, 0.3, 0.4])
    sources = {"max_probability": seg, "lesion_area": seg, "classifier": seg / 2}
    labels = np.array([0, 1, 0, 1])
    assert tune_gamma(sources, labels, [0.0, 0.5, 1.0], "roc_auc")["gamma"] == 0.5
    assert tune_gamma(sources, labels, [1.0, 0.6, 0.4, 0.0], "roc_auc")["gamma"] == 0.4


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_validation_locks_a_nan_gamma_with_a_reason_and_fusion_falls_back(label):
    sources, _ = noisy_sources(4, n=10)
    locked = tune_gamma(sources, np.full(10, label), GRID, "roc_auc")
    assert math.isnan(locked["gamma"]) and math.isnan(locked["objective_value"])
    assert "only" in locked["reason"] and "undefined" in locked["reason"]
    assert locked["fallback"] == "segmentation"
    assert not any(row["selected"] for row in locked["grid"])
    np.testing.assert_array_equal(fused_presence(sources, locked["gamma"]), segmentation_presence(sources))


def test_without_a_classifier_gamma_is_nan_and_presence_is_the_segmentation_score():
    sources = presence_sources([0.1, 0.9], [0, 5], None, 5.0)
    locked = tune_gamma(sources, [0, 1], GRID, "ap")
    assert math.isnan(locked["gamma"])
    assert "no classifier" in locked["reason"]


def test_a_locked_nan_gamma_read_back_from_json_still_falls_back(tmp_path):
    sources, _ = noisy_sources(5, n=8)
    write_json(tmp_path / "fusion.json", tune_gamma(sources, np.zeros(8), GRID, "ap"))
    gamma = read_json(tmp_path / "fusion.json")["gamma"]
    assert gamma is None
    np.testing.assert_array_equal(fused_presence(sources, gamma), segmentation_presence(sources))


def test_the_fitting_functions_take_validation_data_only():
    parameters = list(inspect.signature(tune_gamma).parameters)
    assert parameters == ["val_sources", "val_labels", "grid", "objective"]
    assert list(inspect.signature(fit_area_scale).parameters) == ["val_lesion_area"]


@pytest.mark.parametrize(
    "grid, objective, key",
    [
        ([0.5], "dice", "tune.fusion.objective"),
        ([], "ap", "tune.fusion.gammas"),
        ([0.5, 1.5], "ap", "tune.fusion.gammas"),
        (None, "ap", "tune.fusion.gammas"),
    ],
)
def test_a_bad_grid_or_objective_is_an_error_naming_its_key(grid, objective, key):
    sources, labels = noisy_sources(6, n=10)
    with pytest.raises(LesionflowError, match=key):
        tune_gamma(sources, labels, grid, objective)


def test_bad_scores_are_errors_naming_the_source():
    with pytest.raises(LesionflowError, match="max_probability"):
        presence_sources([1.2], [0], None, 1.0)
    with pytest.raises(LesionflowError, match="classifier"):
        presence_sources([0.2], [0], [np.nan], 1.0)
    with pytest.raises(LesionflowError, match="gamma"):
        fused_presence(presence_sources([0.2], [0], None, 1.0), 0.3)
    with pytest.raises(LesionflowError, match="gamma"):
        fused_presence(presence_sources([0.2], [0], [0.0], 1.0), 1.3)
