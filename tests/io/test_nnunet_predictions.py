"""Tests of writing lesionflow maps as nnUNetv2_predict's files: label map, npz layout, axis order."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lesionflow.io.nnunet_predictions import write_nnunet_prediction
from lesionflow.io.readers import read_image, read_mask
from lesionflow.pipeline.errors import LesionflowError

# Stored voxel axes (A, L, S) with flips: lesionflow's RAS layout differs from the stored one.
PERMUTED_AFFINE = np.array([[0, -2.0, 0, 10], [1.5, 0, 0, -3], [0, 0, 3.0, 5], [0, 0, 0, 1]])


def _probability(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_2d_case_is_a_uint8_label_png_and_a_float32_npz_of_shape_c_1_h_w(tmp_path):
    p = _probability((6, 8))
    p[0, 0] = 0.5  # exactly at the threshold: lesion, as lesionflow cuts (p >= threshold)
    label_map, npz = write_nnunet_prediction(tmp_path, "case_1", p, 0.5, 2)
    assert (label_map.name, npz.name) == ("case_1.png", "case_1.npz")
    with Image.open(label_map) as picture:
        assert picture.mode == "L"
        labels = np.asarray(picture)
    np.testing.assert_array_equal(labels, (p >= 0.5).astype(np.uint8))
    assert set(np.unique(labels)) <= {0, 1}  # label values, as NaturalImage2DIO writes them
    with np.load(npz, allow_pickle=False) as data:
        assert data.files == ["probabilities"]
        probabilities = data["probabilities"]
    assert probabilities.shape == (2, 1, 6, 8) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities[1, 0], p)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1, atol=1e-7)


def test_3d_npz_is_reversed_to_simpleitk_order_of_the_stored_voxels(tmp_path):
    p = _probability((4, 5, 6))
    label_map, npz = write_nnunet_prediction(tmp_path, "v", p, 0.3, 3)
    assert label_map.name == "v.nii.gz"
    with np.load(npz) as data:
        probabilities = data["probabilities"]
    assert probabilities.shape == (2, 6, 5, 4) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities[1], p.transpose(2, 1, 0))
    np.testing.assert_array_equal(probabilities[0], (1 - p).transpose(2, 1, 0))
    stored = np.asanyarray(nib.load(label_map).dataobj)
    assert stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, (p >= 0.3).astype(np.uint8))


def test_3d_label_map_opens_aligned_under_a_permuted_affine(tmp_path):
    p = _probability((4, 5, 6), seed=1)
    label_map, npz = write_nnunet_prediction(tmp_path, "v", p, 0.5, 3, PERMUTED_AFFINE)
    volume = nib.load(label_map)
    np.testing.assert_allclose(volume.affine, PERMUTED_AFFINE)
    assert volume.shape == (5, 4, 6)  # stored order of the affine's axes, not lesionflow's (4, 5, 6)
    # lesionflow's own reader puts the file back in RAS: the map it reads is the one written.
    np.testing.assert_array_equal(read_mask(label_map).array, p >= 0.5)
    with np.load(npz) as data:
        probabilities = data["probabilities"]
    stored = np.asanyarray(volume.dataobj)
    assert probabilities.shape == (2, *stored.shape[::-1])
    np.testing.assert_array_equal(probabilities[1] > 0.5, stored.T.astype(bool))


def test_3d_probabilities_follow_the_image_lesionflow_reads_from_the_same_affine(tmp_path):
    # An image written with the affine reads as (4, 5, 6) RAS; its map, written alike, must overlay it.
    image = _probability((5, 4, 6), seed=2)
    nib.save(nib.Nifti1Image(image, PERMUTED_AFFINE), tmp_path / "image.nii.gz")
    ras = read_image(tmp_path / "image.nii.gz").array[0]
    label_map, _ = write_nnunet_prediction(tmp_path, "image_pred", ras, 0.5, 3, PERMUTED_AFFINE)
    np.testing.assert_array_equal(np.asanyarray(nib.load(label_map).dataobj), (image >= 0.5).astype(np.uint8))


@pytest.mark.parametrize(
    ("probability", "spatial_dims", "affine", "message"),
    [
        (np.zeros((4, 4)), 3, None, r"case c: probability map of shape \(4, 4\) with spatial_dims 3"),
        (np.zeros((2, 4, 4)), 2, None, r"case c: probability map of shape \(2, 4, 4\)"),
        (np.full((4, 4), 1.5), 2, None, r"case c: probabilities must be finite and in \[0, 1\]"),
        (np.full((4, 4), np.nan), 2, None, r"case c: probabilities must be finite"),
        (np.zeros((4, 4)), 2, np.eye(4), r"case c: a 2D picture has no affine"),
        (np.zeros((2, 2, 2)), 3, np.eye(3), r"case c: affine of shape \(3, 3\)"),
    ],
)
def test_bad_maps_are_refused_naming_the_case(tmp_path, probability, spatial_dims, affine, message):
    with pytest.raises(LesionflowError, match=message):
        write_nnunet_prediction(tmp_path, "c", probability, 0.5, spatial_dims, affine)
    assert list(tmp_path.iterdir()) == []
