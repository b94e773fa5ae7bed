"""Tests of reading a manifest row's mask with its geometry: NIfTI spacing and affine, picture units."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from manifests import small_manifest, write_manifest
from PIL import Image

from lesionflow.data.manifest import load_manifest_mask, read_manifest, read_manifest_mask
from lesionflow.io.geometry import Loaded


def _volume_manifest(folder, affine):
    mask = np.zeros((4, 5, 3), dtype=np.uint8)
    mask[1:3, 2:4, 1] = 1
    nib.save(nib.Nifti1Image(mask, affine), folder / "m.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.float32), affine), folder / "i.nii.gz")
    return write_manifest(folder, "image_id,image,mask,subject\nv,i.nii.gz,m.nii.gz,s\n"), mask


def test_a_nifti_mask_comes_with_its_headers_spacing_and_affine(tmp_path):
    affine = np.diag([0.8, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 2.0]
    manifest, mask = _volume_manifest(tmp_path, affine)
    row = read_manifest(manifest).iloc[0]
    loaded = read_manifest_mask(row)
    assert isinstance(loaded, Loaded)
    np.testing.assert_array_equal(loaded.array, mask.astype(bool))
    assert loaded.geometry.spacing == pytest.approx((0.8, 1.5, 3.0))
    np.testing.assert_allclose(loaded.geometry.affine, affine)
    np.testing.assert_array_equal(load_manifest_mask(row), loaded.array)


def test_a_picture_mask_has_unit_spacing_and_no_affine(tmp_path):
    row = read_manifest(small_manifest(tmp_path)).iloc[0]
    array, geometry = read_manifest_mask(row)
    assert geometry.spacing == (1.0, 1.0) and geometry.affine is None
    assert geometry.shape == array.shape == (16, 16) and int(array.sum()) == 5
    np.testing.assert_array_equal(load_manifest_mask(row), array)


def test_the_rows_mask_channel_is_honoured_with_the_geometry(tmp_path):
    colour = np.zeros((6, 7, 3), dtype=np.uint8)
    colour[2, 3, 1] = 255  # lesion in the green channel only
    colour[0, 0, 0] = 255
    Image.fromarray(colour).save(tmp_path / "mask.png")
    Image.fromarray(colour).save(tmp_path / "image.png")
    manifest = write_manifest(tmp_path, "image,mask,subject,mask_channel\nimage.png,mask.png,s,1\n")
    array, geometry = read_manifest_mask(read_manifest(manifest).iloc[0])
    assert np.argwhere(array).tolist() == [[2, 3]] and geometry.shape == (6, 7)
