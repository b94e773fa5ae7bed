"""Tests of lesionflow.evaluation.metrics against MONAI, scikit-learn, scipy and hand-computed edge cases."""

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_iou
from schema_settings import lesion_matching, size_bins
from scipy import ndimage
from scipy.stats import pearsonr
from tiny_data import random_mask_stack

from lesionflow.evaluation.metrics import (
    DICE_ALL_CONVENTION,
    GROUPS,
    LESION_COLUMNS,
    PER_IMAGE_COLUMNS,
    dice_per_image,
    image_metrics,
    iou_per_image,
    pearson_per_image,
    precision_per_image,
    recall_per_image,
    score_images,
)
from lesionflow.io.geometry import Geometry, pixel_geometry

# The schema's lesion matching, where a test's outcome does not depend on it.
MATCHING = lesion_matching()


def _mask(shape, *points):
    mask = np.zeros(shape, dtype=bool)
    for point in points:
        mask[point] = True
    return mask


# --- hand-made edge cases -------------------------------------------------------------------


def test_dice_is_nan_when_reference_and_prediction_are_empty():
    empty = _mask((8, 8))
    result = image_metrics(empty, empty, matching=MATCHING)
    assert math.isnan(result["dice"]) and math.isnan(result["iou"])
    assert math.isnan(result["precision"]) and math.isnan(result["recall"])
    assert math.isnan(result["pearson"])


def test_dice_is_zero_when_reference_is_empty_and_prediction_has_one_pixel():
    result = image_metrics(_mask((8, 8), (3, 3)), _mask((8, 8)), matching=MATCHING)
    assert result["dice"] == 0 and result["iou"] == 0
    assert result["precision"] == 0
    assert math.isnan(result["recall"])  # nothing to find
    assert (result["gt_pixels"], result["pred_pixels"]) == (0, 1)


def test_dice_is_zero_when_prediction_is_empty_and_reference_has_one_pixel():
    result = image_metrics(_mask((8, 8)), _mask((8, 8), (3, 3)), matching=MATCHING)
    assert result["dice"] == 0 and result["iou"] == 0
    assert math.isnan(result["precision"])  # nothing claimed
    assert result["recall"] == 0


def test_dice_is_one_when_masks_are_identical():
    mask = _mask((8, 8), (1, 1), (1, 2), (5, 5))
    result = image_metrics(mask, mask, matching=MATCHING)
    assert result["dice"] == result["iou"] == result["precision"] == result["recall"] == 1
    assert result["pearson"] == pytest.approx(1.0)


def test_dice_is_zero_when_masks_are_disjoint():
    result = image_metrics(_mask((8, 8), (0, 0)), _mask((8, 8), (7, 7)), matching=MATCHING)
    assert result["dice"] == 0 and result["iou"] == 0
    assert result["precision"] == 0 and result["recall"] == 0


def test_dice_and_iou_hand_computed_on_partial_overlap():
    pred = _mask((6, 6), (0, 0), (0, 1), (0, 2))
    gt = _mask((6, 6), (0, 1), (0, 2), (0, 3), (0, 4))
    result = image_metrics(pred, gt, matching=MATCHING)
    assert result["dice"] == pytest.approx(2 * 2 / (3 + 4))
    assert result["iou"] == pytest.approx(2 / 5)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 4)


def test_metrics_are_the_same_code_for_a_3d_volume():
    pred = np.zeros((5, 6, 7), dtype=bool)
    gt = np.zeros_like(pred)
    pred[1:3, 1:3, 1:3] = True  # 8 voxels
    gt[2:4, 1:3, 1:3] = True  # 8 voxels, 4 shared
    result = image_metrics(pred, gt, matching=MATCHING)
    assert result["dice"] == pytest.approx(0.5)
    assert result["iou"] == pytest.approx(4 / 12)
    assert (result["gt_pixels"], result["pred_pixels"]) == (8, 8)


def test_pearson_is_nan_when_probability_map_is_constant():
    gt = _mask((8, 8), (2, 2))
    constant = np.full((8, 8), 0.3, dtype=np.float32)
    assert math.isnan(image_metrics(gt, gt, constant, matching=MATCHING)["pearson"])


# --- independent implementations ------------------------------------------------------------


def test_dice_matches_monai_except_that_empty_empty_is_nan_not_one():
    preds, gts = random_mask_stack()
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
    preds, gts = random_mask_stack(seed=1)
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
    preds, gts = random_mask_stack(n=4, shape=(6, 7, 8), seed=2)
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
    preds, gts = random_mask_stack(seed=3)
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


# --- every metric against MONAI on the hand-made edge cases ----------------------------------


def _edge_cases():
    shape = (9, 9)
    touching_gt = _mask(shape, (2, 2), (2, 3), (3, 2), (3, 3), (4, 4), (4, 5), (5, 4), (5, 5))
    touching_pred = _mask(shape, (2, 2), (2, 3), (3, 3), (4, 4), (5, 5), (6, 6))
    volume_gt = np.zeros((5, 6, 7), dtype=bool)
    volume_gt[1:3, 1:4, 2:5] = True
    volume_pred = np.zeros_like(volume_gt)
    volume_pred[2:4, 2:4, 2:6] = True
    return {
        "both_empty": (_mask(shape), _mask(shape)),
        "reference_empty_prediction_one_pixel": (_mask(shape, (4, 4)), _mask(shape)),
        "reference_one_pixel_prediction_empty": (_mask(shape), _mask(shape, (4, 4))),
        "identical": (touching_gt, touching_gt.copy()),
        "disjoint": (_mask(shape, (0, 0), (0, 1)), _mask(shape, (8, 8), (7, 8))),
        "touching_lesions": (touching_pred, touching_gt),
        "volume_3d": (volume_pred, volume_gt),
    }


def _monai(pred, gt):
    """MONAI's values for one image (scipy's Pearson r), with flags that make conventions comparable."""
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_iou,
        get_confusion_matrix,
    )
    from monai.metrics.confusion_matrix import compute_confusion_matrix_metric

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    g = torch.from_numpy(gt[None, None].astype(np.float32))
    matrix = get_confusion_matrix(p, g)
    # MONAI warns about empty masks; the expected-NaN table in the test covers those cases.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "dice": float(compute_dice(p, g, ignore_empty=False)),
            "iou": float(compute_iou(p, g, ignore_empty=False)),
            "precision": float(compute_confusion_matrix_metric("precision", matrix)),
            "recall": float(compute_confusion_matrix_metric("sensitivity", matrix)),
            "hd95": float(compute_hausdorff_distance(p, g, percentile=95)),
            "msd": float(compute_average_surface_distance(p, g, symmetric=True)),
            "pearson": float(pearsonr(pred.ravel().astype(float), gt.ravel().astype(float))[0]),
        }


@pytest.mark.parametrize("case", list(_edge_cases()))
def test_every_pixel_metric_equals_monai_or_scipy_where_defined_and_is_nan_where_undefined(case):
    pred, gt = _edge_cases()[case]
    ours = image_metrics(pred, gt, matching=MATCHING)
    theirs = _monai(pred, gt)
    gt_empty, pred_empty = not gt.any(), not pred.any()
    expected_nan = {
        # Our conventions: Dice/IoU undefined only when both are empty (MONAI says 1 there);
        "dice": gt_empty and pred_empty,
        "iou": gt_empty and pred_empty,
        # precision undefined without a prediction, recall without a reference (MONAI: NaN too);
        "precision": pred_empty,
        "recall": gt_empty,
        # no surface distance when either mask is empty (MONAI: NaN or inf with a warning).
        "hd95": gt_empty or pred_empty,
        "msd": gt_empty or pred_empty,
        # Pearson r of a constant map is undefined (scipy: NaN with a warning).
        "pearson": gt_empty or pred_empty or pred.all() or gt.all(),
    }
    for metric, undefined in expected_nan.items():
        if undefined:
            assert math.isnan(ours[metric]), metric
        else:
            assert ours[metric] == pytest.approx(theirs[metric], rel=1e-6, abs=1e-9), metric


def test_lesion_counts_of_the_touching_case_depend_on_connectivity():
    pred, gt = _edge_cases()["touching_lesions"]
    four = image_metrics(pred, gt, matching=lesion_matching(connectivity=1))
    eight = image_metrics(pred, gt, matching=lesion_matching(connectivity=2))
    # Diagonal neighbours: two reference lesions with 4-connectivity, one with 8-connectivity.
    assert (four["n_ref_lesions"], eight["n_ref_lesions"]) == (2, 1)
    assert eight["lesion_tp"] == 1 and eight["lesion_fp"] == 0


# --- tables ---------------------------------------------------------------------------------


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
    return score_images(
        ["a_1", "b_1", "c_1", "d_1"], list("abcd"), preds, gts, probs, scores, calls,
        matching=MATCHING, size_bins=[2],
    )


def test_per_image_table_has_exactly_the_contract_columns_and_one_group_per_image():
    table, lesions = _table()
    assert list(table.columns) == PER_IMAGE_COLUMNS
    assert list(lesions.columns) == LESION_COLUMNS
    assert table["gt_pixels"].tolist() == [2, 1, 0, 0]
    assert table["pred_pixels"].tolist() == [2, 0, 1, 0]
    assert table["group"].tolist() == list(GROUPS)


def test_lesion_table_has_one_row_per_reference_lesion_with_its_size_bin():
    table, lesions = _table()
    assert lesions["image_id"].tolist() == ["a_1", "b_1"]
    assert lesions["size"].tolist() == [2, 1]
    assert lesions["size_bin"].tolist() == [">=2", "<2"]
    assert lesions["detected"].tolist() == [True, False]
    assert table["gt_size_bin"].tolist() == [">=2", "<2", "", ""]
    assert table["lesion_fp"].tolist() == [0, 0, 1, 0]
    assert table["fp_lesion_area"].tolist() == [0, 0, 1, 0]


def test_per_image_scores_leave_missing_presence_values_undefined():
    shape = (4, 4)
    table, _ = score_images(
        ["x"], ["s"], [_mask(shape, (1, 1))], [_mask(shape, (1, 1))], matching=MATCHING,
        size_bins=size_bins(),
    )
    assert math.isnan(table.loc[0, "presence_score"]) and math.isnan(table.loc[0, "presence_pred"])


def test_dice_all_convention_says_empty_against_empty_counts_as_one():
    assert DICE_ALL_CONVENTION.startswith("empty reference and empty prediction count as 1")


# --- physical units: the reference mask's geometry -------------------------------------------


def _volume_geometry(shape, spacing):
    """A NIfTI-like geometry: millimetre spacing and an affine, as the NIfTI reader returns."""
    return Geometry(tuple(shape), tuple(spacing), np.diag([*spacing, 1.0]))


def _anisotropic_pair():
    rng = np.random.default_rng(11)
    gt = ndimage.binary_dilation(rng.random((10, 12, 9)) > 0.93, iterations=1)
    pred = ndimage.binary_dilation(rng.random((10, 12, 9)) > 0.93, iterations=1)
    return pred, gt


# MONAI's functions call get_mask_edges with an argument it deprecates; not ours to fix.
@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_hd95_and_msd_in_mm_equal_monai_with_the_masks_anisotropic_spacing():
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    pred, gt = _anisotropic_pair()
    spacing = (0.8, 1.5, 3.0)
    table, _ = score_images(
        ["v"], ["s"], [pred], [gt], matching=MATCHING, size_bins=size_bins(),
        geometries=[_volume_geometry(gt.shape, spacing)],
    )
    p = torch.from_numpy(pred[None, None].astype(np.float32))
    g = torch.from_numpy(gt[None, None].astype(np.float32))
    want_hd = float(compute_hausdorff_distance(p, g, percentile=95, spacing=list(spacing)))
    # Our msd is MONAI's symmetric average surface distance: both directed sets concatenated.
    want_msd = float(compute_average_surface_distance(p, g, symmetric=True, spacing=list(spacing)))
    # MONAI takes the percentile in float32 (see test_surface.HD95_RTOL).
    assert table.loc[0, "hd95"] == pytest.approx(want_hd, rel=1e-5)
    assert table.loc[0, "msd"] == pytest.approx(want_msd, rel=1e-6)
    in_voxels = float(compute_hausdorff_distance(p, g, percentile=95))
    assert table.loc[0, "hd95"] != pytest.approx(in_voxels, rel=1e-3)  # the spacing was used
    assert table.loc[0, "distance_unit"] == "mm" and table.loc[0, "spacing"] == "[0.8, 1.5, 3.0]"


def test_volumes_in_mm3_are_voxel_counts_times_the_spacing_product():
    pred, gt = _anisotropic_pair()
    spacing = (0.8, 1.5, 3.0)
    table, lesions = score_images(
        ["v"], ["s"], [pred], [gt], matching=MATCHING, size_bins=size_bins(),
        geometries=[_volume_geometry(gt.shape, spacing)],
    )
    voxel = 0.8 * 1.5 * 3.0
    assert table.loc[0, "gt_volume_mm3"] == pytest.approx(gt.sum() * voxel)
    assert table.loc[0, "pred_volume_mm3"] == pytest.approx(pred.sum() * voxel)
    labels, n = ndimage.label(gt, ndimage.generate_binary_structure(3, MATCHING.connectivity))
    sizes = np.bincount(labels.ravel())[1:]
    assert len(lesions) == n
    np.testing.assert_allclose(lesions["volume_mm3"], sizes * voxel)
    assert lesions["size"].tolist() == sizes.tolist()  # sizes and their bins stay in voxels


def test_pictures_keep_pixel_distances_and_have_no_mm3_volumes():
    pred, gt = _edge_cases()["touching_lesions"]
    plain, plain_lesions = score_images(
        ["p"], ["s"], [pred], [gt], matching=MATCHING, size_bins=size_bins()
    )
    picture, _ = score_images(
        ["p"], ["s"], [pred], [gt], matching=MATCHING, size_bins=size_bins(),
        geometries=[pixel_geometry(gt.shape)],
    )
    unscaled = image_metrics(pred, gt, matching=MATCHING)["hd95"]
    assert plain.loc[0, "hd95"] == picture.loc[0, "hd95"] == unscaled
    assert plain.loc[0, "distance_unit"] == "pixels" and plain.loc[0, "spacing"] == "[1.0, 1.0]"
    assert math.isnan(plain.loc[0, "gt_volume_mm3"]) and math.isnan(plain.loc[0, "pred_volume_mm3"])
    assert plain_lesions["volume_mm3"].isna().all()


def test_3d_lesion_count_depends_on_6_18_or_26_connectivity_of_diagonal_voxels():
    gt = np.zeros((5, 5, 5), dtype=bool)
    gt[1, 1, 1] = True
    gt[2, 2, 1] = True  # shares an edge with (1, 1, 1): an 18- and 26-neighbour, not a 6-neighbour
    gt[3, 3, 2] = True  # shares only a corner with (2, 2, 1): a 26-neighbour only
    counts = [
        image_metrics(gt, gt, matching=lesion_matching(connectivity=c))["n_ref_lesions"] for c in (1, 2, 3)
    ]
    assert counts == [3, 2, 1]
    assert counts == [ndimage.label(gt, ndimage.generate_binary_structure(3, c))[1] for c in (1, 2, 3)]
