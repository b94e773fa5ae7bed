"""Tests of the PIL picture reader and PNG mask writer: values, masks, geometry, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lesionflow.io.geometry import Geometry
from lesionflow.io.readers import read_geometry, read_image, read_mask, write_mask
from lesionflow.pipeline.errors import LesionflowError


def test_a_picture_reads_as_channel_first_float_in_unit_range(tmp_path):
    rgb = np.zeros((5, 7, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((5, 7), 51, dtype=np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((5, 7), 65535, dtype=np.uint16)).save(tmp_path / "grey16.png")
    colour = read_image(tmp_path / "rgb.png").array
    assert colour.shape == (3, 5, 7) and colour.dtype == np.float32
    assert colour[1].min() == 1.0 and colour[0].max() == 0.0
    grey = read_image(tmp_path / "grey.png").array
    assert grey.shape == (1, 5, 7) and grey.max() == pytest.approx(0.2)
    assert read_image(tmp_path / "grey16.png").array.max() == pytest.approx(1.0)


def test_corrupt_image_error_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(LesionflowError, match=r"cannot read image .*broken\.png"):
        read_image(bad)
    with pytest.raises(LesionflowError, match=r"cannot read mask .*broken\.png"):
        read_mask(bad)


def test_jpeg_mask_is_binarised(tmp_path):
    truth = np.zeros((64, 64), dtype=bool)
    truth[10:30, 20:50] = True
    truth[40:44, 5:9] = True
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "mask.jpg", quality=30)
    raw = np.asarray(Image.open(tmp_path / "mask.jpg"))
    assert not np.isin(raw, (0, 255)).all()  # the JPEG really has artefacts to ignore
    mask = read_mask(tmp_path / "mask.jpg").array
    assert mask.dtype == bool and mask.shape == (64, 64)
    np.testing.assert_array_equal(mask, truth)


def test_mask_cut_is_at_128_on_the_8_bit_scale(tmp_path):
    Image.fromarray(np.array([[127, 128, 0, 255]], dtype=np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").array.tolist() == [[False, True, False, True]]


def test_label_mask_with_values_0_and_1_is_read_as_lesion(tmp_path):
    Image.fromarray(np.array([[0, 1, 1, 0]], dtype=np.uint8)).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png").array.tolist() == [[False, True, True, False]]


def test_red_on_black_mask_needs_its_channel(tmp_path):
    mask = np.zeros((8, 8, 3), dtype=np.uint8)
    mask[2:4, 2:4, 0] = 255
    Image.fromarray(mask).save(tmp_path / "red.png")
    with pytest.raises(LesionflowError, match=r"red\.png is a colour image.*mask_channel"):
        read_mask(tmp_path / "red.png")
    assert read_mask(tmp_path / "red.png", channel=0).array.sum() == 4
    assert read_mask(tmp_path / "red.png", channel=1).array.sum() == 0


def test_a_picture_has_unit_spacing_and_no_affine(tmp_path):
    Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(tmp_path / "rgb.jpg")
    image, geometry = read_image(tmp_path / "rgb.jpg")
    assert geometry == Geometry((5, 7), (1.0, 1.0)) and geometry.affine is None
    assert geometry.spatial_dims == 2 and image.shape[1:] == geometry.shape
    assert read_geometry(tmp_path / "rgb.jpg") == geometry


def test_header_geometry_does_not_decode_the_pixels(tmp_path):
    # A truncated PNG has a sound header: its size is known, its pixels are not.
    Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30).astype(np.uint8)).save(tmp_path / "m.png")
    data = (tmp_path / "m.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert read_geometry(tmp_path / "cut.png").shape == (20, 30)
    with pytest.raises(LesionflowError, match=r"cannot read image .*cut\.png"):
        read_image(tmp_path / "cut.png")


def test_sixteen_bit_mask_is_cut_at_the_threshold_scaled_to_16_bits(tmp_path):
    values = np.array([[0, 127 * 257, 127 * 257 + 1, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "m16.png")
    assert read_mask(tmp_path / "m16.png").array.tolist() == [[False, False, True, True]]


def test_png_mask_round_trip_keeps_every_pixel(tmp_path):
    rng = np.random.default_rng(0)
    mask = rng.random((9, 13)) > 0.6
    write_mask(tmp_path / "masks" / "m.png", mask)
    read, geometry = read_mask(tmp_path / "masks" / "m.png")
    assert read.dtype == bool and geometry.shape == (9, 13)
    np.testing.assert_array_equal(read, mask)
    # stored as 0/255, as the preprocess stage has always written its masks
    assert set(np.unique(np.asarray(Image.open(tmp_path / "masks" / "m.png"))).tolist()) == {0, 255}
