"""Label maps read as stored, whatever file holds them."""

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lesionflow.io.label_maps import read_label_map
from lesionflow.io.readers import read_mask
from lesionflow.pipeline.errors import LesionflowError

LABELS = np.array([[0, 1, 2, 2], [0, 0, 1, 3]], dtype=np.uint8)


def test_an_8_bit_png_is_read_as_its_values(tmp_path):
    Image.fromarray(LABELS).save(tmp_path / "m.png")
    loaded = read_label_map(tmp_path / "m.png")
    np.testing.assert_array_equal(loaded.array, LABELS)
    assert loaded.geometry.shape == (2, 4)


def test_a_16_bit_png_keeps_labels_above_255(tmp_path):
    values = (LABELS.astype(np.uint16) * 300).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "m.png").array, values)


def test_a_palette_png_is_read_as_its_indices_not_its_colours(tmp_path):
    picture = Image.fromarray(LABELS, mode="L").convert("P")
    picture.putpalette([0, 0, 0, 255, 255, 0, 200, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 12))
    picture.putdata(LABELS.ravel().tolist())
    picture.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "m.png").array, LABELS)


def test_a_colour_label_map_needs_its_channel_as_a_colour_mask_does(tmp_path):
    rgb = np.zeros((*LABELS.shape, 3), dtype=np.uint8)
    rgb[..., 0] = LABELS * 80
    Image.fromarray(rgb).save(tmp_path / "m.png")
    with pytest.raises(LesionflowError, match="say which channel holds the lesion"):
        read_label_map(tmp_path / "m.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "m.png", channel=0).array, LABELS * 80)


def test_a_jpeg_label_map_is_refused_naming_the_file(tmp_path):
    Image.fromarray(LABELS * 60).save(tmp_path / "m.jpg")
    with pytest.raises(
        LesionflowError, match=r"label map .*m\.jpg is a JPEG, whose compression changes label values"
    ):
        read_label_map(tmp_path / "m.jpg")


def test_a_nifti_label_map_comes_in_ras_orientation_like_its_mask(tmp_path):
    volume = np.random.default_rng(0).integers(0, 4, size=(5, 4, 3)).astype(np.int16)
    affine = np.diag([-1.0, -2.0, 3.0, 1.0])  # LPS-like: the reader flips the first two axes
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "m.nii.gz")
    loaded = read_label_map(tmp_path / "m.nii.gz")
    mask = read_mask(tmp_path / "m.nii.gz", threshold=0)
    np.testing.assert_array_equal(loaded.array > 0, mask.array)
    np.testing.assert_array_equal(loaded.array, volume[::-1, ::-1, :])
    assert loaded.geometry.spacing == (1.0, 2.0, 3.0)


def test_float_labels_that_are_whole_numbers_are_read_and_others_refused(tmp_path):
    np.save(tmp_path / "whole.npy", LABELS.astype(np.float32))
    np.testing.assert_array_equal(read_label_map(tmp_path / "whole.npy").array, LABELS)
    np.save(tmp_path / "soft.npy", LABELS.astype(np.float32) / 2)
    with pytest.raises(LesionflowError, match=r"soft\.npy holds the value 0\.5: labels are whole numbers"):
        read_label_map(tmp_path / "soft.npy")
    np.save(tmp_path / "negative.npy", LABELS.astype(np.int8) - 1)
    with pytest.raises(LesionflowError, match="holds the negative value -1"):
        read_label_map(tmp_path / "negative.npy")
