"""Tests of lesionflow.evaluation.surface: HD95 and mean surface distance, equal to MONAI's
metrics in 2D and 3D.
"""

import math

import numpy as np
import pytest
import torch
from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric
from monai.metrics.utils import get_edge_surface_distance
from scipy import ndimage

from lesionflow.evaluation import surface
from lesionflow.evaluation.surface import hd95, mean_surface_distance, surface_distances
from lesionflow.pipeline.errors import LesionflowError

# MONAI's own metric classes call get_mask_edges with an argument it deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

# MONAI computes the 95th percentile with torch.quantile in float32, so its HD95 can sit a few float32
# steps of interpolation weight away from ours (float64): up to ~3e-6 relative on these masks.
HD95_RTOL = 1e-5
# Its distances themselves are ours rounded to float32.
DIST_RTOL = 1e-6


def _monai(pred: np.ndarray, gt: np.ndarray, spacing=None) -> tuple[float, float]:
    """MONAI's (HD95, symmetric mean surface distance) for one binary mask pair.

    Shape (batch=1, channel=1, *spatial); include_background=True because the only channel is the
    lesion (with False MONAI would drop it as background).
    """
    y_pred = torch.as_tensor(pred[None, None], dtype=torch.float32)
    y = torch.as_tensor(gt[None, None], dtype=torch.float32)
    kwargs = {} if spacing is None else {"spacing": [float(s) for s in spacing]}
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    sd = SurfaceDistanceMetric(include_background=True, symmetric=True, reduction="none")
    return float(hd(y_pred, y, **kwargs)[0, 0]), float(sd(y_pred, y, **kwargs)[0, 0])


def _random_lesions(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """``n`` random ellipsoids; centres may lie on the image border so some lesions touch it."""
    grid = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        centre = [rng.integers(0, s) for s in shape]
        radii = rng.uniform(0.6, 4.0, len(shape))
        dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
        mask |= dist <= 1.0
    return mask


def _assert_matches_monai(pred: np.ndarray, gt: np.ndarray, spacing=None) -> None:
    want_hd, want_msd = _monai(pred, gt, spacing)
    assert hd95(pred, gt, spacing) == pytest.approx(want_hd, rel=HD95_RTOL)
    assert mean_surface_distance(pred, gt, spacing) == pytest.approx(want_msd, rel=DIST_RTOL)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [None, (0.7, 2.3)])
def test_hd95_and_mean_surface_distance_equal_monai_on_random_sparse_2d_masks(seed, spacing):
    rng = np.random.default_rng(seed)
    pred = _random_lesions(rng, (64, 48), 5)
    gt = _random_lesions(rng, (64, 48), 5)
    _assert_matches_monai(pred, gt, spacing)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spacing", [None, (2.5, 0.8, 1.1)])
def test_hd95_and_mean_surface_distance_equal_monai_on_random_sparse_3d_masks(seed, spacing):
    rng = np.random.default_rng(100 + seed)
    pred = _random_lesions(rng, (16, 20, 18), 3)
    gt = _random_lesions(rng, (16, 20, 18), 3)
    _assert_matches_monai(pred, gt, spacing)


@pytest.mark.parametrize("shape, spacing", [((40, 30), (1.5, 0.5)), ((12, 10, 14), (0.5, 1.0, 3.0))])
def test_hd95_and_mean_surface_distance_equal_monai_on_dense_noisy_masks(shape, spacing):
    # Dense speckle has many edge pixels per box pixel: the distance-transform branch runs here.
    rng = np.random.default_rng(7)
    pred = rng.random(shape) < 0.4
    gt = rng.random(shape) < 0.4
    _assert_matches_monai(pred, gt, spacing)


def test_lesions_covering_whole_image_border_have_border_pixels_as_edge_like_monai():
    pred = np.zeros((12, 12), dtype=bool)
    pred[:5, :] = True  # touches three sides of the image
    gt = np.zeros((12, 12), dtype=bool)
    gt[:, :4] = True
    gt[10:, :] = True
    _assert_matches_monai(pred, gt, (1.0, 2.0))
    _assert_matches_monai(np.ones((6, 7), dtype=bool), gt[:6, :7])


def test_directed_distances_are_monai_edge_distances_to_float32_rounding():
    rng = np.random.default_rng(3)
    for shape, spacing in [((50, 40), (0.9, 1.7)), ((14, 12, 16), (2.0, 1.0, 0.6))]:
        pred = _random_lesions(rng, shape, 4)
        gt = _random_lesions(rng, shape, 4)
        ours = surface_distances(pred, gt, spacing)
        _, theirs, _ = get_edge_surface_distance(
            torch.as_tensor(pred, dtype=torch.float32),
            torch.as_tensor(gt, dtype=torch.float32),
            spacing=list(spacing),
            symmetric=True,
        )
        for mine, monai_d in zip(ours, theirs, strict=True):
            assert mine.dtype == np.float64 and mine.ndim == 1
            np.testing.assert_allclose(np.sort(mine), np.sort(monai_d.numpy()), rtol=DIST_RTOL)


def test_monai_hd95_is_our_distances_through_its_float32_quantile():
    # Pins down the only HD95 discrepancy: MONAI's float32 torch.quantile, not edges or distances.
    rng = np.random.default_rng(26)
    pred = _random_lesions(rng, (40, 37), 6)
    gt = _random_lesions(rng, (40, 37), 6)
    d_pred, d_gt = surface_distances(pred, gt, (1.3, 0.4))
    as_monai = max(float(torch.quantile(torch.tensor(d, dtype=torch.float32), 0.95)) for d in (d_pred, d_gt))
    assert as_monai == _monai(pred, gt, (1.3, 0.4))[0]


def test_hd95_and_mean_surface_distance_are_nan_when_both_masks_empty():
    empty = np.zeros((5, 5), dtype=bool)
    assert math.isnan(hd95(empty, empty))
    assert math.isnan(mean_surface_distance(empty, empty))


def test_hd95_and_mean_surface_distance_are_nan_when_prediction_empty_and_reference_one_pixel():
    gt = np.zeros((5, 5), dtype=bool)
    gt[2, 2] = True
    empty = np.zeros_like(gt)
    assert math.isnan(hd95(empty, gt))
    assert math.isnan(mean_surface_distance(empty, gt))


def test_hd95_and_mean_surface_distance_are_nan_when_prediction_one_pixel_and_reference_empty():
    pred = np.zeros((5, 5), dtype=bool)
    pred[2, 2] = True
    empty = np.zeros_like(pred)
    assert math.isnan(hd95(pred, empty))
    assert math.isnan(mean_surface_distance(pred, empty))


def test_surface_distances_are_two_empty_float_arrays_when_either_mask_empty():
    pred = np.zeros((4, 4, 4), dtype=bool)
    pred[1, 1, 1] = True
    for a, b in [(pred, np.zeros_like(pred)), (np.zeros_like(pred), pred)]:
        d_pred, d_gt = surface_distances(a, b)
        assert d_pred.shape == (0,) and d_gt.shape == (0,) and d_pred.dtype == np.float64


def test_hd95_and_mean_surface_distance_are_zero_for_identical_masks():
    rng = np.random.default_rng(0)
    mask = _random_lesions(rng, (30, 30), 4)
    assert hd95(mask, mask, (0.5, 3.0)) == 0.0
    assert mean_surface_distance(mask, mask, (0.5, 3.0)) == 0.0


def test_single_pixels_are_their_own_edge_so_both_metrics_are_their_spaced_distance():
    pred = np.zeros((8, 8), dtype=bool)
    gt = np.zeros((8, 8), dtype=bool)
    pred[2, 3] = True
    gt[6, 6] = True
    # 4 rows of 0.5 and 3 columns of 2.0: sqrt(2^2 + 6^2).
    assert hd95(pred, gt, (0.5, 2.0)) == pytest.approx(math.sqrt(40.0))
    assert mean_surface_distance(pred, gt, (0.5, 2.0)) == pytest.approx(math.sqrt(40.0))
    assert hd95(pred, gt) == pytest.approx(5.0)
    _assert_matches_monai(pred, gt, (0.5, 2.0))


def test_touching_squares_hd95_is_3_and_mean_is_2_over_their_eight_edge_pixels_each():
    # Two 3x3 squares side by side: the edge is the 8-pixel ring. From the left ring, the nearest
    # right-ring pixel lies in the same row: distances 3,3,3 (column 2), 2,2 (column 3, centre not
    # edge), 1,1,1 (column 4); mirrored the other way. Mean 16/8 = 2; 95th percentile of
    # [1,1,1,2,2,3,3,3] = 3.
    pred = np.zeros((7, 10), dtype=bool)
    gt = np.zeros((7, 10), dtype=bool)
    pred[2:5, 2:5] = True
    gt[2:5, 5:8] = True
    d_pred, d_gt = surface_distances(pred, gt)
    assert sorted(d_pred) == sorted(d_gt) == [1, 1, 1, 2, 2, 3, 3, 3]
    assert hd95(pred, gt) == pytest.approx(3.0)
    assert mean_surface_distance(pred, gt) == pytest.approx(2.0)
    _assert_matches_monai(pred, gt)


def test_3d_cubes_shifted_one_voxel_along_a_2_5_spacing_axis_give_hd95_2_5_and_mean_47_over_52():
    # A 3x3x3 cube's edge is its 26 voxels but the centre. Shifted by one voxel along the last axis
    # (spacing 2.5), 16 edge voxels of one cube lie on the other's edge (distance 0); the 9 of the face
    # outside the other cube are 2.5 from it; the voxel beside the other cube's (interior) centre is
    # 1.0 from that centre's in-plane neighbours. Each way: 16 x 0, 1 x 1.0, 9 x 2.5, so the mean is
    # 23.5 / 26 = 47 / 52 and the 95th percentile (positions 23 and 24 of 26, both 2.5) is 2.5.
    pred = np.zeros((5, 5, 6), dtype=bool)
    gt = np.zeros((5, 5, 6), dtype=bool)
    pred[1:4, 1:4, 1:4] = True
    gt[1:4, 1:4, 2:5] = True
    spacing = (1.0, 1.0, 2.5)
    d_pred, d_gt = surface_distances(pred, gt, spacing)
    assert sorted(d_pred) == sorted(d_gt) == [0.0] * 16 + [1.0] + [2.5] * 9
    assert hd95(pred, gt, spacing) == pytest.approx(2.5)
    assert mean_surface_distance(pred, gt, spacing) == pytest.approx(47 / 52)
    _assert_matches_monai(pred, gt, spacing)


def test_mean_surface_distance_weighs_every_edge_pixel_not_each_direction():
    # One pixel against a 5x5 square: 1 distance one way, 16 the other. The mean of the concatenation
    # (MONAI's definition) differs from the mean of the two directed means.
    pred = np.zeros((9, 9), dtype=bool)
    gt = np.zeros((9, 9), dtype=bool)
    pred[4, 4] = True
    gt[2:7, 2:7] = True
    d_pred, d_gt = surface_distances(pred, gt)
    assert d_pred.size == 1 and d_gt.size == 16
    concatenated = np.concatenate([d_pred, d_gt]).mean()
    assert concatenated != pytest.approx((d_pred.mean() + d_gt.mean()) / 2)
    assert mean_surface_distance(pred, gt) == pytest.approx(concatenated)
    _assert_matches_monai(pred, gt)


def _uncropped_reference(pred: np.ndarray, gt: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """The definition, on the whole image: erosion edges and a full-image distance transform."""
    edges_pred = pred & ~ndimage.binary_erosion(pred, border_value=0)
    edges_gt = gt & ~ndimage.binary_erosion(gt, border_value=0)
    to_gt = ndimage.distance_transform_edt(~edges_gt, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~edges_pred, sampling=spacing)
    return to_gt[edges_pred], to_pred[edges_gt]


@pytest.mark.parametrize("branch", ["distance_transform", "kd_tree"])
@pytest.mark.parametrize("shape, spacing", [((60, 50), (0.8, 1.9)), ((15, 18, 13), (3.0, 0.7, 1.0))])
def test_cropping_to_the_union_bounding_box_gives_the_uncropped_distances_in_the_same_order(
    branch, shape, spacing, monkeypatch
):
    # 0 sends every pair to the distance transform, inf to the KD-tree: both must equal the definition.
    monkeypatch.setattr(surface, "_EDT_EDGE_FRACTION", 0.0 if branch == "distance_transform" else math.inf)
    rng = np.random.default_rng(11)
    for _ in range(3):
        pred = _random_lesions(rng, shape, 3)
        gt = _random_lesions(rng, shape, 3)
        for got, want in zip(
            surface_distances(pred, gt, spacing), _uncropped_reference(pred, gt, spacing), strict=True
        ):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_masks_of_different_shapes_are_a_user_error():
    with pytest.raises(LesionflowError, match="shapes differ"):
        hd95(np.ones((3, 3), dtype=bool), np.ones((3, 4), dtype=bool))


def test_spacing_of_the_wrong_length_or_not_positive_is_a_user_error():
    mask = np.ones((3, 3), dtype=bool)
    with pytest.raises(LesionflowError, match="spacing"):
        mean_surface_distance(mask, mask, (1.0, 1.0, 1.0))
    with pytest.raises(LesionflowError, match="spacing"):
        mean_surface_distance(mask, mask, (1.0, 0.0))
