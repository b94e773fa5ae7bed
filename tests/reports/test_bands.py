"""Tests of lesionflow.reports.bands: which band a Dice is in, and the checks of the cut points."""

import math

import numpy as np
import pytest

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import bands


def test_dice_band_edges_belong_to_the_upper_band_and_nan_is_undefined():
    assert bands.dice_band(0.3999, (0.4, 0.6)) == "bad"
    assert bands.dice_band(0.4, (0.4, 0.6)) == "mid"
    assert bands.dice_band(0.5999, (0.4, 0.6)) == "mid"
    assert bands.dice_band(0.6, (0.4, 0.6)) == "good"
    assert bands.dice_band(0.45, (0.4, 0.5)) == "mid"
    assert bands.dice_band(0.5, (0.4, 0.5)) == "good"
    for undefined in (math.nan, np.float32("nan"), None):
        assert bands.dice_band(undefined, (0.4, 0.6)) == "undefined"


@pytest.mark.parametrize("cut_points", [(0.6, 0.4), (0.4,), (0.4, 1.2), ("low", "high")])
def test_dice_bands_must_be_two_increasing_numbers_in_0_1(cut_points):
    with pytest.raises(LesionflowError, match="dice_bands"):
        bands.check_bands(cut_points)


def test_band_labels_state_both_edges():
    assert bands.band_labels((0.4, 0.6)) == {
        "bad": "bad: < 0.4",
        "mid": "mid: 0.4 to < 0.6",
        "good": "good: >= 0.6",
    }
