"""Tests of lesionflow.evaluation.postprocess: thresholds, connected components, presence gating."""

import numpy as np
import pytest
from schema_settings import tune_settings

from lesionflow.evaluation.postprocess import apply_locked, binarize, locked_at_scale, presence_score
from lesionflow.pipeline.errors import LesionflowError

# The schema's connectivity, where a test's outcome does not depend on it.
CONNECTIVITY = tune_settings()["connectivity"]


def _two_diagonal_blobs():
    prob = np.zeros((8, 8), dtype=np.float32)
    prob[1:3, 1:3] = 0.9  # 4 pixels
    prob[3, 3] = 0.9  # touches the first block only at a corner
    return prob


def test_binarize_keeps_pixels_at_or_above_threshold():
    prob = np.array([[0.49, 0.5, 0.51]], dtype=np.float32)
    assert binarize(prob, 0.5, 0, CONNECTIVITY).tolist() == [[False, True, True]]


def test_small_components_are_removed_and_large_ones_kept():
    prob = np.zeros((10, 10), dtype=np.float32)
    prob[0, 0] = 0.9  # 1 pixel
    prob[5:8, 5:8] = 0.9  # 9 pixels
    mask = binarize(prob, 0.5, min_lesion_area=4, connectivity=CONNECTIVITY)
    assert mask.sum() == 9 and not mask[0, 0]


def test_corner_touching_lesions_are_separate_with_connectivity_1_and_joined_with_2():
    prob = _two_diagonal_blobs()
    # Face connectivity: the corner pixel is its own 1-pixel lesion and is removed.
    assert binarize(prob, 0.5, min_lesion_area=5, connectivity=1).sum() == 0
    # Full connectivity: one 5-pixel lesion, kept.
    assert binarize(prob, 0.5, min_lesion_area=5, connectivity=2).sum() == 5
    assert binarize(prob, 0.5, min_lesion_area=5, connectivity="full").sum() == 5


def test_binarize_removes_small_components_in_a_3d_volume():
    prob = np.zeros((6, 6, 6), dtype=np.float32)
    prob[0, 0, 5] = 0.9  # isolated voxel: removed either way
    prob[2:5, 2:5, 2:5] = 0.9  # 27 voxels
    prob[1, 1, 1] = 0.9  # touches (2,2,2) at a corner only
    assert binarize(prob, 0.5, min_lesion_area=2, connectivity=1).sum() == 27
    assert binarize(prob, 0.5, min_lesion_area=2, connectivity=3).sum() == 28


def test_connectivity_beyond_the_dimensions_is_a_user_error():
    with pytest.raises(LesionflowError, match="connectivity"):
        binarize(_two_diagonal_blobs(), 0.5, min_lesion_area=2, connectivity=3)


def test_presence_score_sources():
    prob = _two_diagonal_blobs()
    # The pixel threshold counts the area and is ignored by max_probability.
    assert presence_score(prob, "max_probability", threshold=0.95) == pytest.approx(0.9)
    assert presence_score(prob, "lesion_area", threshold=0.5) == 5
    with pytest.raises(LesionflowError, match="presence_score"):
        presence_score(prob, "mean", threshold=0.5)


def test_apply_locked_empties_the_mask_when_presence_is_predicted_absent():
    prob = _two_diagonal_blobs()
    locked = {
        "threshold": 0.5,
        "min_lesion_area": 0,
        "presence_threshold": 0.95,
        "presence_score": "max_probability",
        "connectivity": 1,
    }
    mask, score, present = apply_locked(prob, locked)
    assert not present and score == pytest.approx(0.9) and not mask.any()
    mask, _, present = apply_locked(prob, {**locked, "presence_threshold": 0.85})
    assert present and mask.sum() == 5


def test_locked_areas_shrink_with_the_square_of_the_scale():
    locked = {
        "threshold": 0.5, "min_lesion_area": 40, "presence_score": "lesion_area",
        "presence_threshold": 100.0, "connectivity": 1,
    }
    scaled = locked_at_scale(locked, 0.5, 2)
    assert scaled["min_lesion_area"] == 10 and scaled["presence_threshold"] == 25.0
    assert locked_at_scale({**locked, "min_lesion_area": 2}, 0.1, 2)["min_lesion_area"] == 1
    assert locked_at_scale({**locked, "min_lesion_area": 0}, 0.1, 2)["min_lesion_area"] == 0


def test_locked_volumes_of_a_volume_shrink_with_the_cube_of_the_scale():
    locked = {
        "threshold": 0.5, "min_lesion_area": 40, "presence_score": "lesion_area",
        "presence_threshold": 100.0, "connectivity": 1,
    }
    scaled = locked_at_scale(locked, 0.5, 3)
    assert scaled["min_lesion_area"] == 5 and scaled["presence_threshold"] == 12.5
