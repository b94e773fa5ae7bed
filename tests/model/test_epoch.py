"""Tests of lesionflow.model.epoch: precision per device and validation's stop points."""

import numpy as np
import pytest
import torch

from lesionflow.model.epoch import amp_dtype_for, validate
from lesionflow.model.networks import build_loss
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
