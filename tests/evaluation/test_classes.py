"""Per-class evaluation: each class scored as a binary run would score it alone."""

import math

import numpy as np
import pandas as pd
import pytest

from lesionflow.data.lesion_classes import lesion_classes
from lesionflow.evaluation.bootstrap import Resampler
from lesionflow.evaluation.classes import (
    MACRO_METRICS,
    class_summaries,
    lesion_confusion,
    pixel_confusion,
    predict_classes,
    score_classes,
)
from lesionflow.evaluation.evaluate import score_subset
from lesionflow.evaluation.metrics import LesionMatching, score_images
from lesionflow.evaluation.summary import summarise
from lesionflow.io.geometry import pixel_geometry

MATCHING = LesionMatching(connectivity=2, criterion="iou", min_overlap=0.1)
SIZE_BINS = [10, 100]
LOCKED = {
    "threshold": 0.5,
    "min_lesion_area": 2,
    "presence_threshold": 0.6,
    "presence_score": "max_probability",
    "connectivity": 2,
    "chosen_on": "validation",
}


def _blobs(rng, shape, n):
    mask = np.zeros(shape, dtype=bool)
    for _ in range(n):
        y, x = rng.integers(2, shape[0] - 6), rng.integers(2, shape[1] - 6)
        mask[y : y + rng.integers(2, 5), x : x + rng.integers(2, 5)] = True
    return mask


def _case(seed, n_classes, shape=(24, 24), absent=()):
    """References (C, H, W) with a few blobs per class (none for the ``absent`` channels) and noisy
    probabilities that mostly follow them."""
    rng = np.random.default_rng(seed)
    ref = np.stack(
        [
            np.zeros(shape, bool) if c in absent else _blobs(rng, shape, int(rng.integers(0, 3)))
            for c in range(n_classes)
        ]
    )
    probs = np.clip(0.75 * ref + rng.uniform(0, 0.55, size=ref.shape), 0, 1).astype(np.float32)
    return probs, ref


def _items(n_images, n_classes, absent=()):
    return [
        (f"img{i:02d}", *_case(i, n_classes, absent=absent), pixel_geometry((24, 24)))
        for i in range(n_images)
    ]


def _subjects(items):
    return {image_id: f"s{int(image_id[3:]) // 2}" for image_id, *_ in items}


def test_overlapping_classes_tables_equal_a_binary_evaluation_of_each_class_alone():
    classes = lesion_classes({"mask_columns": {"exudate": "mask_exudate", "haemorrhage": "mask_haemorrhage"}})
    items = _items(10, 2)
    locked = {"exudate": LOCKED, "haemorrhage": {**LOCKED, "threshold": 0.7, "min_lesion_area": 0}}
    tables, _ = score_classes(items, _subjects(items), locked, classes, MATCHING, SIZE_BINS)
    for c, name in enumerate(classes.names):
        binary = score_subset(
            {i: p[c] for i, p, _, _ in items},
            {i: r[c] for i, _, r, _ in items},
            _subjects(items),
            locked[name],
            MATCHING,
            SIZE_BINS,
        )
        pd.testing.assert_frame_equal(tables[name][0], binary[0])
        pd.testing.assert_frame_equal(tables[name][1], binary[1])


def test_exclusive_classes_give_each_pixel_one_class_and_are_scored_as_binary_masks_of_it():
    classes = lesion_classes({"classes": {"exudate": 1, "haemorrhage": 2}})
    probs = np.zeros((2, 8, 8), dtype=np.float32)
    probs[0, :4] = 0.9
    probs[1, 2:6] = 0.8  # rows 2-3 are claimed by both: the exudate is more probable there
    prediction = predict_classes(probs, {"exudate": LOCKED, "haemorrhage": LOCKED}, classes)
    assert not (prediction.masks[0] & prediction.masks[1]).any()
    assert (
        prediction.masks[0, :4].all() and prediction.masks[1, 4:6].all() and not prediction.masks[1, :4].any()
    )

    items = _items(8, 2)
    locked = {"exudate": LOCKED, "haemorrhage": LOCKED}
    tables, _ = score_classes(items, _subjects(items), locked, classes, MATCHING, SIZE_BINS)
    preds = [predict_classes(p, locked, classes).masks for _, p, _, _ in items]
    for c, name in enumerate(classes.names):
        per_image, lesions = score_images(
            [i for i, *_ in items],
            [_subjects(items)[i] for i, *_ in items],
            [m[c] for m in preds],
            [r[c] for _, _, r, _ in items],
            [p[c] for _, p, _, _ in items],
            matching=MATCHING,
            size_bins=SIZE_BINS,
        )
        columns = [c for c in per_image.columns if not c.startswith("presence")]
        pd.testing.assert_frame_equal(tables[name][0][columns], per_image[columns])
        pd.testing.assert_frame_equal(tables[name][1], lesions)


def test_nested_regions_are_evaluated_as_their_unions():
    regions = {"whole": ["enhancing", "oedema", "necrosis"], "core": ["enhancing", "necrosis"]}
    classes = lesion_classes({"classes": {"enhancing": 3, "oedema": 2, "necrosis": 1}, "regions": regions})
    rng = np.random.default_rng(4)
    label_map = np.zeros((20, 20), dtype=np.uint8)
    label_map[4:16, 4:16] = 2
    label_map[7:13, 7:13] = 1
    label_map[9:11, 9:11] = 3
    reference = classes.channels(label_map)
    probs = np.clip(0.8 * reference + rng.uniform(0, 0.4, reference.shape), 0, 1).astype(np.float32)
    locked = {"whole": LOCKED, "core": LOCKED}
    tables, _ = score_classes(
        [("a", probs, reference, pixel_geometry((20, 20)))], {"a": "s"}, locked, classes, MATCHING, SIZE_BINS
    )
    assert tables["whole"][0].loc[0, "gt_pixels"] == 144 == np.count_nonzero(label_map)
    assert (
        tables["core"][0].loc[0, "gt_pixels"] == 36 == np.count_nonzero((label_map == 1) | (label_map == 3))
    )
    union = score_subset(
        {"a": probs[1]}, {"a": (label_map == 1) | (label_map == 3)}, {"a": "s"}, LOCKED, MATCHING, SIZE_BINS
    )[0]
    pd.testing.assert_frame_equal(tables["core"][0], union)


def test_a_class_no_test_image_holds_is_nan_with_its_count_and_left_out_of_the_macro_mean():
    classes = lesion_classes({"classes": {"exudate": 1, "haemorrhage": 2}})
    items = _items(12, 2, absent=(1,))
    locked = {"exudate": LOCKED, "haemorrhage": LOCKED}
    tables, _ = score_classes(items, _subjects(items), locked, classes, MATCHING, SIZE_BINS)
    subjects = tables["exudate"][0]["subject"].tolist()
    resampler = Resampler.from_subjects(subjects, 200, 0, 0.95, "evaluate.bootstrap")
    summary = class_summaries(tables, resampler, SIZE_BINS)
    absent = summary["classes"]["haemorrhage"]
    assert math.isnan(absent["dice_pos"]) and absent["dice_pos_n"] == 0 and absent["n_gt_positive"] == 0
    assert math.isnan(absent["lesion_sensitivity"]) and math.isnan(absent["presence_roc_auc"])
    macro = summary["macro"]
    assert macro["dice_pos_classes"] == ["exudate"] and macro["dice_pos_n_classes"] == 1
    assert macro["dice_pos"] == pytest.approx(summary["classes"]["exudate"]["dice_pos"])
    # The false-positive burden on lesion-free images is defined for both classes.
    assert macro["fp_lesions_per_empty_image_n_classes"] == 2


def test_the_macro_mean_is_the_mean_of_the_classes_with_an_interval_around_it():
    classes = lesion_classes({"mask_columns": {"a": "mask_a", "b": "mask_b", "c": "mask_c"}})
    items = _items(16, 3)
    locked = {name: LOCKED for name in classes.names}
    tables, _ = score_classes(items, _subjects(items), locked, classes, MATCHING, SIZE_BINS)
    resampler = Resampler.from_subjects(
        tables["a"][0]["subject"].tolist(), 300, 1, 0.95, "evaluate.bootstrap"
    )
    summary = class_summaries(tables, resampler, SIZE_BINS)
    for name in classes.names:
        alone = summarise(*tables[name], resampler, SIZE_BINS)
        assert summary["classes"][name]["dice_pos"] == alone["dice_pos"]
    for metric in ("dice_pos", "lesion_f1"):
        values = [summary["classes"][name][metric] for name in classes.names]
        assert summary["macro"][metric] == pytest.approx(np.mean(values))
        assert (
            summary["macro"][f"{metric}_ci_low"]
            <= summary["macro"][metric]
            <= summary["macro"][f"{metric}_ci_high"]
        )
    assert set(MACRO_METRICS) <= set(summary["macro"])


def test_pixel_confusion_counts_a_haemorrhage_predicted_as_an_exudate():
    names = ("exudate", "haemorrhage")
    ref = np.zeros((2, 4, 4), dtype=bool)
    pred = np.zeros_like(ref)
    ref[0, 0, :2] = True  # 2 exudate pixels, found
    pred[0, 0, :2] = True
    ref[1, 2, :3] = True  # 3 haemorrhage pixels, called exudate
    pred[0, 2, :3] = True
    pred[1, 3, 3] = True  # 1 background pixel called haemorrhage
    table = pixel_confusion(pred, ref, names)
    assert table.loc["exudate", "exudate"] == 2
    assert table.loc["haemorrhage", "exudate"] == 3 and table.loc["haemorrhage", "haemorrhage"] == 0
    assert table.loc["none", "haemorrhage"] == 1
    assert table.to_numpy().sum() == 16  # exclusive classes: every pixel in one cell


def test_lesion_confusion_counts_each_reference_lesion_once_by_the_class_covering_most_of_it():
    names = ("exudate", "haemorrhage")
    ref = np.zeros((2, 10, 10), dtype=bool)
    pred = np.zeros_like(ref)
    ref[0, 0:2, 0:2] = True  # exudate, found as exudate
    pred[0, 0:2, 0:2] = True
    ref[1, 5:8, 5:8] = True  # haemorrhage, mostly called exudate, partly haemorrhage
    pred[0, 5:8, 5:7] = True
    pred[1, 5:8, 7] = True
    ref[1, 0:2, 8:10] = True  # haemorrhage, missed
    pred[1, 9, 0] = True  # a haemorrhage predicted where there is no lesion
    table = lesion_confusion(pred, ref, names, connectivity=1)
    assert table.loc["exudate"].tolist() == [1, 0, 0]
    assert table.loc["haemorrhage"].tolist() == [1, 0, 1]
    assert table.loc["none"].tolist() == [0, 1, 0]


def test_a_probability_map_without_one_channel_per_class_is_refused_naming_the_classes():
    classes = lesion_classes({"classes": {"exudate": 1, "haemorrhage": 2}})
    with pytest.raises(Exception, match=r"expected one channel per class first \(2: exudate, haemorrhage\)"):
        predict_classes(np.zeros((1, 4, 4)), {"exudate": LOCKED, "haemorrhage": LOCKED}, classes)
    with pytest.raises(Exception, match=r"lack the class\(es\) \['haemorrhage'\]"):
        predict_classes(np.zeros((2, 4, 4)), {"exudate": LOCKED}, classes)
