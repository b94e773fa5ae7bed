"""Tests of lesionflow.model.epoch: precision per device, validation's stop points and what it predicted."""

import numpy as np
import pytest
import torch

from lesionflow.model.epoch import PREDICTION_COLUMNS, validate
from lesionflow.model.networks import build_loss
from lesionflow.model.scores import prediction_counts, prediction_fractions
from lesionflow.model.train_setup import amp_dtype_for
from lesionflow.pipeline.config import complete_run_section

BATCH_DICE = complete_run_section("train", {})["batch_dice"]


class _Stop(Exception):
    pass


def test_cpu_training_uses_no_mixed_precision():
    assert amp_dtype_for(torch.device("cpu")) is None


def test_validation_checks_for_a_stop_before_every_batch():
    model = torch.nn.Conv2d(3, 1, 1)
    images = [np.zeros((3, 8, 8), np.float32)] * 5
    masks = [np.zeros((8, 8), np.float32)] * 5
    calls = []

    def stop():
        calls.append(1)

    args = (model, build_loss("DiceCE", BATCH_DICE), images, masks, [8, 8], 2, torch.device("cpu"), None)
    validate(*args, stop=stop)
    assert len(calls) == 3  # batches of 2, 2 and 1

    def stop_now():
        raise _Stop

    with pytest.raises(_Stop):
        validate(*args, stop=stop_now)


def test_validation_scores_only_lesion_positive_images():
    model = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        model.weight.fill_(100.0)  # probability ~1 on lesion pixels, ~0 elsewhere
        model.bias.fill_(-50.0)
    images = [np.zeros((1, 4, 4), np.float32), np.zeros((1, 4, 4), np.float32)]
    images[0][0, :2, :2] = 1
    masks = [images[0][0].copy(), np.zeros((4, 4), np.float32)]
    result = validate(
        model, build_loss("DiceCE", BATCH_DICE), images, masks, [4, 4], 2, torch.device("cpu"), None
    )
    # Image 0 is predicted exactly; the lesion-free image 1 has no Dice and is left out.
    assert result["dice"] == pytest.approx(1.0) and result["iou"] == pytest.approx(1.0)


def test_validation_records_what_it_predicted_as_a_direct_numpy_count_does():
    # A 1x1 convolution with weight 1 and bias -0.5: probability >= 0.5 exactly where a pixel is 0.9.
    model = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(-0.5)
    rng = np.random.default_rng(0)
    shapes = [(8, 8), (8, 8), (8, 12), (8, 8), (8, 12)]  # two shapes: batches by shape, whole images
    images = [rng.choice([0.1, 0.9], size=(1, *shape)).astype(np.float32) for shape in shapes]
    images[1][:] = 0.1  # an image without any predicted pixel
    masks = [(rng.random(shape) > 0.8).astype(np.float32) for shape in shapes]
    result = validate(
        model, build_loss("DiceCE", BATCH_DICE), images, masks, [8, 8], 2, torch.device("cpu"), None
    )
    predicted = [image[0] >= 0.5 for image in images]
    pixels = sum(mask.size for mask in masks)
    assert result["predicted_fraction"] == pytest.approx(sum(p.sum() for p in predicted) / pixels)
    assert result["true_fraction"] == pytest.approx(sum(mask.sum() for mask in masks) / pixels)
    assert result["images_with_prediction"] == sum(p.any() for p in predicted) == 4


def test_prediction_fractions_weigh_every_pixel_of_every_batch_alike():
    assert PREDICTION_COLUMNS == (
        "train_predicted_fraction", "train_true_fraction",
        "val_predicted_fraction", "val_true_fraction", "val_images_with_prediction",
    )  # fmt: skip
    probs, target = torch.tensor([[[0.9, 0.2]], [[0.1, 0.3]]]), torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    counts = [
        prediction_counts(probs, target),
        prediction_counts(torch.tensor([[[0.6, 0.7]]]), torch.tensor([[[0.0, 0.0]]])),
    ]
    # 3 of 6 pixels predicted, 2 of 6 lesion, images 1 and 3 with a prediction.
    assert prediction_fractions(counts) == {
        "predicted_fraction": 0.5, "true_fraction": pytest.approx(1 / 3), "images_with_prediction": 2,
    }  # fmt: skip
    assert np.isnan(prediction_fractions([])["predicted_fraction"])
