"""Tests of the .npy reader and writer: values as stored, checks that name the file, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from lesionflow.io.readers import read_geometry, read_image, read_mask, write_image, write_mask
from lesionflow.pipeline.errors import LesionflowError


def test_npy_image_round_trip_keeps_values_outside_the_unit_range(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 6, 8)).astype(np.float16)  # as the preprocess stage stores images
    write_image(tmp_path / "images" / "a.npy", image)
    read, geometry = read_image(tmp_path / "images" / "a.npy")
    assert read.dtype == np.float32 and read.min() < 0
    np.testing.assert_array_equal(read, image.astype(np.float32))
    assert geometry.shape == (6, 8) and geometry.spacing == (1.0, 1.0) and geometry.affine is None
    assert read_geometry(tmp_path / "images" / "a.npy") == geometry


def test_npy_image_of_three_spatial_axes_has_three_dimensional_geometry(tmp_path):
    write_image(tmp_path / "v.npy", np.zeros((1, 4, 5, 6), dtype=np.float32))
    assert read_image(tmp_path / "v.npy").geometry.shape == (4, 5, 6)


@pytest.mark.parametrize("array", [np.zeros((4, 5), dtype=np.float32), np.full((1, 2, 2), np.nan)])
def test_npy_image_without_channels_or_with_nan_is_refused_naming_the_file(tmp_path, array):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(LesionflowError, match=r"image .*bad\.npy: expected a finite \(C, \*spatial\) array"):
        read_image(tmp_path / "bad.npy")


def test_unreadable_npy_names_the_file(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(LesionflowError, match=r"cannot read image .*junk\.npy"):
        read_image(tmp_path / "junk.npy")


def test_npy_mask_round_trip_stays_bool(tmp_path):
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True
    write_mask(tmp_path / "m.npy", mask)
    read, geometry = read_mask(tmp_path / "m.npy")
    assert read.dtype == bool and geometry.shape == (5, 6)
    np.testing.assert_array_equal(read, mask)


def test_npy_label_mask_reads_1_as_lesion(tmp_path):
    np.save(tmp_path / "labels.npy", np.array([[0, 1, 1, 0]], dtype=np.int64))
    assert read_mask(tmp_path / "labels.npy").array.tolist() == [[False, True, True, False]]
