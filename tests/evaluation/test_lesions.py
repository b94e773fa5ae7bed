"""Tests of lesionflow.evaluation.lesions: connected-component lesion matching and lesion-size bins."""

import dataclasses

import numpy as np
import pytest
from schema_settings import lesion_matching
from scipy import ndimage

from lesionflow.evaluation.lesions import (
    LesionMatch,
    label_lesions,
    match_lesions,
    size_bin_index,
    size_bin_labels,
    volume_bin_index,
    volume_bin_labels,
)
from lesionflow.pipeline.errors import LesionflowError


def _mask(shape, *boxes):
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


def _match(pred, gt, **rules) -> LesionMatch:
    """match_lesions with the schema's lesion matching, any rule given in ``rules``."""
    matching = lesion_matching(**rules)
    return match_lesions(pred, gt, matching.connectivity, matching.criterion, matching.min_overlap)


def _counts(match: LesionMatch) -> tuple[int, int, int, int]:
    return match.tp, match.fn, match.tp_pred, match.fp


def test_identical_masks_detect_every_lesion_with_no_false_positives():
    gt = _mask((10, 10), np.s_[1:3, 1:3], np.s_[6:9, 5:8])
    match = _match(gt, gt)
    assert (match.n_ref, match.n_pred) == (2, 2)
    assert _counts(match) == (2, 0, 2, 0)
    assert match.fp_area == 0
    assert match.ref_sizes.tolist() == [4, 9] and match.pred_sizes.tolist() == [4, 9]


def test_disjoint_lesions_are_one_miss_and_one_false_positive_with_its_area():
    gt = _mask((10, 10), np.s_[1:3, 1:3])
    pred = _mask((10, 10), np.s_[6:9, 5:8])
    match = _match(pred, gt)
    assert _counts(match) == (0, 1, 0, 1)
    assert match.fp_area == 9
    assert match.ref_detected.tolist() == [False] and match.pred_matched.tolist() == [False]


def test_reference_lesion_split_into_two_predictions_is_detected_once_and_both_predictions_match():
    gt = _mask((5, 10), np.s_[2, 1:9])
    pred = _mask((5, 10), np.s_[2, 1:3], np.s_[2, 6:9])
    match = _match(pred, gt)
    assert (match.n_ref, match.n_pred) == (1, 2)
    assert _counts(match) == (1, 0, 2, 0)


def test_two_reference_lesions_merged_by_one_prediction_are_both_detected_by_it():
    gt = _mask((5, 10), np.s_[2, 1:3], np.s_[2, 6:9])
    pred = _mask((5, 10), np.s_[1:4, 0:10])
    match = _match(pred, gt)
    assert (match.n_ref, match.n_pred) == (2, 1)
    assert _counts(match) == (2, 0, 1, 0)


def test_diagonal_neighbours_are_two_lesions_with_connectivity_1_and_one_with_2():
    gt = _mask((5, 5), np.s_[1, 1], np.s_[2, 2])
    pred = _mask((5, 5), np.s_[1, 1])
    assert label_lesions(gt, connectivity=1)[1] == 2
    assert label_lesions(gt, connectivity=2)[1] == 1
    assert _counts(_match(pred, gt, connectivity=1)) == (1, 1, 1, 0)
    assert _counts(_match(pred, gt, connectivity=2)) == (1, 0, 1, 0)


def test_3d_corner_neighbours_are_two_lesions_with_connectivity_1_and_one_with_3():
    gt = _mask((4, 4, 4), np.s_[0, 0, 0], np.s_[1, 1, 1])
    pred = _mask((4, 4, 4), np.s_[1, 1, 1], np.s_[3, 3, 3])
    one = _match(pred, gt, connectivity=1)
    full = _match(pred, gt, connectivity=3)
    assert (one.n_ref, full.n_ref) == (2, 1)
    assert _counts(one) == (1, 1, 1, 1)
    assert _counts(full) == (1, 0, 1, 1)
    assert one.fp_area == full.fp_area == 1


def test_iou_criterion_matches_at_or_below_the_pairs_iou_and_not_above():
    # Reference 2x5 and prediction 2x5 shifted one column: intersection 8, union 12, IoU 2/3.
    gt = _mask((4, 8), np.s_[0:2, 0:5])
    pred = _mask((4, 8), np.s_[0:2, 1:6])
    assert _counts(_match(pred, gt, criterion="iou", min_overlap=0.66)) == (1, 0, 1, 0)
    assert _counts(_match(pred, gt, criterion="iou", min_overlap=2 / 3)) == (1, 0, 1, 0)
    assert _counts(_match(pred, gt, criterion="iou", min_overlap=0.67)) == (0, 1, 0, 1)


def test_fraction_criterion_is_the_covered_share_of_the_reference_lesion_inclusive():
    # The prediction covers 8 of the reference's 10 pixels (0.8) and adds 12 of its own: IoU 8/22.
    gt = _mask((6, 8), np.s_[0:2, 0:5])
    pred = _mask((6, 8), np.s_[0:4, 1:6])
    assert _counts(_match(pred, gt, criterion="fraction", min_overlap=0.8)) == (1, 0, 1, 0)
    assert _counts(_match(pred, gt, criterion="fraction", min_overlap=0.81)) == (0, 1, 0, 1)
    assert _counts(_match(pred, gt, criterion="iou", min_overlap=0.5)) == (0, 1, 0, 1)


def test_the_schemas_matching_is_any_shared_pixel():
    gt = _mask((6, 6), np.s_[0:5, 0:5])
    pred = _mask((6, 6), np.s_[4:6, 4:6])  # shares one pixel of 25
    assert _counts(_match(pred, gt)) == (1, 0, 1, 0)


def test_min_overlap_1_with_iou_matches_only_identical_lesions():
    gt = _mask((6, 6), np.s_[0:2, 0:2], np.s_[4:6, 4:6])
    pred = _mask((6, 6), np.s_[0:2, 0:2], np.s_[4:6, 3:6])
    match = _match(pred, gt, criterion="iou", min_overlap=1.0)
    assert match.ref_detected.tolist() == [True, False]
    assert match.pred_matched.tolist() == [True, False]


def test_empty_masks_give_zero_length_arrays_and_zero_counts():
    empty = np.zeros((5, 5, 5), dtype=bool)
    match = _match(empty, empty)
    for field, dtype in [
        ("ref_sizes", np.int64),
        ("ref_detected", bool),
        ("pred_sizes", np.int64),
        ("pred_matched", bool),
    ]:
        array = getattr(match, field)
        assert array.shape == (0,) and array.dtype == dtype
    assert (match.n_ref, match.n_pred, match.tp, match.fn, match.fp, match.fp_area) == (0, 0, 0, 0, 0, 0)
    only_pred = _match(_mask((5, 5, 5), np.s_[1:3, 1:3, 1:3]), empty)
    assert (only_pred.n_ref, only_pred.fp, only_pred.fp_area) == (0, 1, 8)
    only_gt = _match(empty, _mask((5, 5, 5), np.s_[1:3, 1:3, 1:3]))
    assert (only_gt.n_pred, only_gt.fn) == (0, 1)


def test_lesion_match_is_frozen():
    match = _match(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        match.ref_sizes = np.zeros(0, dtype=np.int64)


def _slow_reference(pred, gt, connectivity, criterion, min_overlap):
    """The definition, one lesion pair at a time."""
    structure = ndimage.generate_binary_structure(gt.ndim, connectivity)
    ref, n_ref = ndimage.label(gt, structure=structure)
    prd, n_pred = ndimage.label(pred, structure=structure)
    detected = [False] * n_ref
    matched = [False] * n_pred
    for r in range(1, n_ref + 1):
        rm = ref == r
        for p in range(1, n_pred + 1):
            pm = prd == p
            inter = np.count_nonzero(rm & pm)
            if inter == 0:
                continue
            base = np.count_nonzero(rm | pm) if criterion == "iou" else np.count_nonzero(rm)
            if inter / base >= min_overlap:
                detected[r - 1] = True
                matched[p - 1] = True
    ref_sizes = [np.count_nonzero(ref == r) for r in range(1, n_ref + 1)]
    pred_sizes = [np.count_nonzero(prd == p) for p in range(1, n_pred + 1)]
    return ref_sizes, detected, pred_sizes, matched


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(24, 30), (9, 10, 11)])
@pytest.mark.parametrize("criterion", ["iou", "fraction"])
def test_vectorised_matching_equals_the_lesion_by_lesion_definition_on_random_masks(seed, shape, criterion):
    # A smooth field thresholded twice, once with noise: many lesions, partial overlaps, splits and
    # merges, so every threshold below changes some outcome.
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), 1.0)
    cut = np.quantile(field, 0.7)
    gt = field > cut
    pred = field + 0.02 * rng.standard_normal(shape) > cut
    for connectivity in range(1, len(shape) + 1):
        for min_overlap in (0.0, 0.2, 0.5, 0.8, 1.0):
            got = match_lesions(pred, gt, connectivity, criterion, min_overlap)
            want = _slow_reference(pred, gt, connectivity, criterion, min_overlap)
            assert got.ref_sizes.tolist() == want[0]
            assert got.ref_detected.tolist() == want[1]
            assert got.pred_sizes.tolist() == want[2]
            assert got.pred_matched.tolist() == want[3]
            assert got.fp_area == sum(s for s, m in zip(want[2], want[3], strict=True) if not m)


def test_size_bins_from_edges_50_500_are_below_50_50_to_499_and_from_500():
    assert size_bin_labels([50, 500]) == ["<50", "50-499", ">=500"]
    sizes = np.array([1, 49, 50, 499, 500, 10_000])
    assert size_bin_index(sizes, [50, 500]).tolist() == [0, 0, 1, 1, 2, 2]
    assert size_bin_index(sizes, [50, 500]).dtype == np.int64


def test_size_bins_with_one_edge_put_the_edge_value_in_the_upper_bin():
    assert size_bin_labels([10]) == ["<10", ">=10"]
    assert size_bin_index(np.array([9, 10, 11]), [10]).tolist() == [0, 1, 1]


def test_no_size_edges_give_one_bin_called_all():
    assert size_bin_labels([]) == ["all"]
    assert size_bin_index(np.array([1, 5, 1000]), []).tolist() == [0, 0, 0]
    assert size_bin_index(np.array([], dtype=np.int64), [50]).shape == (0,)


@pytest.mark.parametrize("edges", [[500, 50], [50, 50], [0, 10], [-5], [2.5], [True, 5], ["50"]])
def test_size_edges_not_strictly_increasing_positive_integers_are_an_error_naming_evaluate_size_bins(edges):
    with pytest.raises(LesionflowError, match=r"evaluate\.size_bins"):
        size_bin_labels(edges)
    with pytest.raises(LesionflowError, match=r"evaluate\.size_bins"):
        size_bin_index(np.array([1]), edges)


def test_unknown_criterion_is_an_error_naming_evaluate_lesion_matching_criterion():
    mask = np.ones((2, 2), dtype=bool)
    with pytest.raises(LesionflowError, match=r"evaluate\.lesion_matching\.criterion"):
        _match(mask, mask, criterion="dice")


@pytest.mark.parametrize("min_overlap", [-0.1, 1.5, float("nan"), "0.5", None])
def test_min_overlap_outside_0_to_1_is_an_error_naming_evaluate_lesion_matching_min_overlap(min_overlap):
    mask = np.ones((2, 2), dtype=bool)
    with pytest.raises(LesionflowError, match=r"evaluate\.lesion_matching\.min_overlap"):
        _match(mask, mask, min_overlap=min_overlap)


def test_masks_of_different_shapes_are_a_user_error():
    with pytest.raises(LesionflowError, match="shapes differ"):
        _match(np.ones((3, 3)), np.ones((3, 4)))


def test_connectivity_beyond_the_dimensions_is_a_user_error():
    with pytest.raises(LesionflowError, match="connectivity"):
        _match(np.ones((3, 3)), np.ones((3, 3)), connectivity=3)


def test_volume_bins_in_mm3_include_their_lower_edge_and_put_unknown_volumes_in_no_bin():
    assert volume_bin_labels([0.5, 10]) == ["<0.5", "0.5 to <10", ">=10"]
    volumes = np.array([0.1, 0.5, 9.99, 10.0, 1e6, np.nan])
    assert volume_bin_index(volumes, [0.5, 10]).tolist() == [0, 1, 1, 2, 2, -1]
    assert volume_bin_labels([]) == ["all"]
    assert volume_bin_index(np.array([3.0, np.nan]), []).tolist() == [0, -1]


@pytest.mark.parametrize("edges", [[10, 1], [5, 5], [0, 10], [-1.5], [True, 5], ["50"], [float("inf")]])
def test_volume_edges_not_strictly_increasing_positive_numbers_are_an_error_naming_the_key(edges):
    with pytest.raises(LesionflowError, match=r"evaluate\.size_bins_mm3"):
        volume_bin_labels(edges)
    with pytest.raises(LesionflowError, match=r"evaluate\.size_bins_mm3"):
        volume_bin_index(np.array([1.0]), edges)
