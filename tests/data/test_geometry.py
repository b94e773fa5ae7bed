"""Tests of lesionflow.data.geometry: field-of-view box, resize of images and masks, the way back."""

import numpy as np
import pytest

from lesionflow.data.geometry import (
    field_of_view_box,
    resize_image,
    resize_mask,
    resize_scale,
    restore_map,
)
from lesionflow.pipeline.errors import LesionflowError


def disc_image(height=60, width=90, centre=(30, 45), radius=25):
    """A 3-channel bright disc on black, cut at top and bottom like a fundus photograph."""
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    image = np.zeros((3, height, width), dtype=np.float32)
    image[:, disc] = np.array([0.8, 0.4, 0.2], dtype=np.float32)[:, None]
    return image


def test_fov_box_bounds_the_disc_and_ignores_noise_specks():
    image = disc_image()
    image[:, 2, 2] = 1.0  # specks in the black surround
    image[1, 55, 85] = 0.9
    image[:, 10:12, 80:82] = 0.7  # a 2x2 speck, removed by the opening
    box = field_of_view_box(image)
    assert box == (slice(5, 56), slice(20, 71))


def test_fov_box_is_the_whole_image_when_it_is_black():
    image = np.zeros((1, 20, 30), dtype=np.float32)
    assert field_of_view_box(image) == (slice(0, 20), slice(0, 30))


def test_resize_scale_brings_the_longest_side_to_max_size_and_never_enlarges():
    assert resize_scale((2848, 4288), 1024) == pytest.approx(1024 / 4288)
    assert resize_scale((100, 50), 200) == 1.0
    with pytest.raises(LesionflowError, match="preprocess.max_size"):
        resize_scale((10, 10), 0)


def test_resize_keeps_aspect_and_the_mask_stays_binary():
    image = disc_image(60, 90)
    mask = image[0] > 0
    scale = resize_scale(mask.shape, 30)
    small_image, small_mask = resize_image(image, scale), resize_mask(mask, scale)
    assert small_image.shape == (3, 20, 30)
    assert small_mask.shape == (20, 30)
    assert small_mask.dtype == bool
    # area-averaging keeps the lesion area up to the pixels on its outline
    assert abs(small_mask.sum() * 9 - mask.sum()) < 0.1 * mask.sum()
    assert small_image.max() <= 0.8 + 1e-6 and small_image.min() >= 0.0


def test_resize_by_one_is_a_no_op():
    image = disc_image(8, 12)
    mask = image[0] > 0
    assert resize_image(image, 1.0) is image
    assert resize_mask(mask, 1.0) is mask


def test_upscaled_mask_stays_binary():
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, 2:4] = True
    big = resize_mask(mask, 2.0)
    assert big.shape == (8, 12) and big.dtype == bool
    assert big[3, 5] and not big[0, 0]


def test_restore_map_pastes_into_the_box_and_leaves_the_rest_zero():
    # cells as images.csv holds them (JSON text) and as read_axis_columns parses them (tuples)
    for row in (
        {"crop_start": "[2, 4]", "crop_stop": "[8, 10]", "original_shape": "[12, 14]"},
        {"crop_start": (2, 4), "crop_stop": (8, 10), "original_shape": (12, 14)},
    ):
        full = restore_map(np.ones((3, 3), dtype=np.float32), row)
        assert full.shape == (12, 14)
        assert full[2:8, 4:10].min() == 1 and full.sum() == 36


def test_restore_map_takes_the_same_path_for_a_volume():
    row = {"crop_start": "[1, 2, 0]", "crop_stop": "[5, 6, 4]", "original_shape": "[6, 8, 4]"}
    full = restore_map(np.ones((2, 2, 2), dtype=np.float32), row)
    assert full.shape == (6, 8, 4)
    np.testing.assert_allclose(full[1:5, 2:6, 0:4], 1)
    assert full.sum() == pytest.approx(4 * 4 * 4)
