"""Tests of the NIfTI reader and writer: the affine and spacing survive, channels, masks, errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from lesionflow.io.nifti import write_nifti_like
from lesionflow.io.readers import read_geometry, read_image, read_mask, write_image, write_mask
from lesionflow.pipeline.errors import LesionflowError


def oblique_affine() -> np.ndarray:
    """A voxel-to-world matrix with anisotropic spacing, a rotation about z and a translation."""
    angle = np.deg2rad(30)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 1.2, 2.5])
    affine[:3, 3] = [-10.0, 4.0, 31.5]
    return affine


def volume(shape=(4, 5, 3)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 10


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_image_round_trip_keeps_values_affine_and_spacing(tmp_path, suffix):
    nib.save(nib.Nifti1Image(volume(), oblique_affine()), tmp_path / f"source{suffix}")
    image, geometry = read_image(tmp_path / f"source{suffix}")
    assert image.shape == (1, 4, 5, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], volume())
    np.testing.assert_allclose(geometry.affine, oblique_affine(), atol=1e-6)
    assert geometry.spacing == pytest.approx((0.8, 1.2, 2.5))
    assert geometry.shape == (4, 5, 3) and geometry.spatial_dims == 3
    assert read_geometry(tmp_path / f"source{suffix}") == geometry

    write_image(tmp_path / f"copy{suffix}", image, geometry)
    again, again_geometry = read_image(tmp_path / f"copy{suffix}")
    np.testing.assert_allclose(again, image)
    np.testing.assert_allclose(again_geometry.affine, geometry.affine, atol=1e-6)
    assert again_geometry.spacing == pytest.approx(geometry.spacing)


def test_a_gzipped_nifti_is_written_the_same_twice(tmp_path):
    image, geometry = volume()[None], None
    write_image(tmp_path / "a.nii.gz", image, geometry)
    write_image(tmp_path / "b.nii.gz", image, geometry)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()


def test_a_four_dimensional_nifti_has_its_last_axis_as_channels(tmp_path):
    data = np.stack([volume(), -volume()], axis=-1)
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "two.nii.gz")
    image, geometry = read_image(tmp_path / "two.nii.gz")
    assert image.shape == (2, 4, 5, 3) and geometry.shape == (4, 5, 3)
    np.testing.assert_allclose(image[1], -volume())
    write_image(tmp_path / "back.nii.gz", image, geometry)
    np.testing.assert_allclose(nib.load(tmp_path / "back.nii.gz").get_fdata(), data)


def test_nifti_mask_round_trip_keeps_the_mask_and_the_source_affine(tmp_path):
    mask = volume() > 3
    nib.save(nib.Nifti1Image(volume(), oblique_affine()), tmp_path / "image.nii.gz")
    geometry = read_image(tmp_path / "image.nii.gz").geometry
    write_mask(tmp_path / "mask.nii.gz", mask, geometry)
    read, read_geometry_ = read_mask(tmp_path / "mask.nii.gz")
    assert read.dtype == bool
    np.testing.assert_array_equal(read, mask)
    np.testing.assert_allclose(read_geometry_.affine, oblique_affine(), atol=1e-6)
    assert nib.load(tmp_path / "mask.nii.gz").get_data_dtype() == np.uint8


def test_nifti_label_mask_reads_1_as_lesion_and_other_masks_are_cut_at_the_threshold(tmp_path):
    labels = np.zeros((3, 3, 2), dtype=np.uint8)
    labels[1, 1, :] = 1
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "labels.nii")
    assert read_mask(tmp_path / "labels.nii").array.sum() == 2
    scaled = labels * 200
    scaled[0, 0, 0] = 100
    nib.save(nib.Nifti1Image(scaled, np.eye(4)), tmp_path / "scaled.nii")
    assert read_mask(tmp_path / "scaled.nii").array.sum() == 2
    assert read_mask(tmp_path / "scaled.nii", threshold=50).array.sum() == 3


def test_a_picture_geometry_is_written_as_a_diagonal_affine(tmp_path):
    write_mask(tmp_path / "flat.nii", np.eye(3, dtype=bool))
    read, geometry = read_mask(tmp_path / "flat.nii")
    np.testing.assert_array_equal(read, np.eye(3, dtype=bool))
    np.testing.assert_allclose(geometry.affine, np.eye(4))
    assert geometry.shape == (3, 3) and geometry.spacing == (1.0, 1.0)


def test_corrupt_nifti_error_names_the_file(tmp_path):
    nib.save(nib.Nifti1Image(volume(), np.eye(4)), tmp_path / "whole.nii")
    data = (tmp_path / "whole.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[: len(data) - 40])
    with pytest.raises(LesionflowError, match=r"cannot read image .*cut\.nii"):
        read_image(tmp_path / "cut.nii")
    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip")
    with pytest.raises(LesionflowError, match=r"cannot read mask .*junk\.nii\.gz"):
        read_mask(tmp_path / "junk.nii.gz")


def scanner_affine() -> np.ndarray:
    """Voxel axes stored as (anterior->posterior, superior->inferior, left->right), slightly oblique."""
    angle = np.deg2rad(8)
    tilt = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    )
    # Columns: voxel axis 0 runs to -y (posterior), axis 1 to -z (inferior), axis 2 to +x (right).
    axes = np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]])
    affine = np.eye(4)
    affine[:3, :3] = tilt @ axes @ np.diag([0.9, 3.0, 1.1])
    affine[:3, 3] = [-20.0, 35.0, 12.0]
    return affine


def world(affine: np.ndarray, voxel) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(voxel, dtype=float) + affine[:3, 3]


def test_a_volume_is_read_in_ras_orientation_with_its_world_coordinates_kept(tmp_path):
    data = volume((6, 4, 5))
    nib.save(nib.Nifti1Image(data, scanner_affine()), tmp_path / "scan.nii.gz")
    image, geometry = read_image(tmp_path / "scan.nii.gz")
    canonical = nib.as_closest_canonical(nib.load(tmp_path / "scan.nii.gz"))
    assert nib.aff2axcodes(geometry.affine) == ("R", "A", "S")
    np.testing.assert_allclose(image[0], canonical.get_fdata())
    np.testing.assert_allclose(geometry.affine, canonical.affine, atol=1e-9)
    assert geometry.shape == (5, 6, 4) and geometry.spacing == pytest.approx((1.1, 0.9, 3.0))
    assert read_geometry(tmp_path / "scan.nii.gz") == geometry
    # Every voxel value sits at the same world point as in the stored file.
    stored = np.argwhere(data == data.max())[0]
    read = np.argwhere(image[0] == image[0].max())[0]
    np.testing.assert_allclose(world(geometry.affine, read), world(scanner_affine(), stored), atol=1e-6)


def test_a_map_written_like_its_source_has_the_source_geometry_and_lands_on_the_same_world_point(
    tmp_path,
):
    source = nib.Nifti1Image(volume((6, 4, 5)).astype(np.int16), scanner_affine())
    source.header.set_xyzt_units("mm", "sec")
    source.header["descrip"] = b"FLAIR"
    nib.save(source, tmp_path / "scan.nii.gz")
    image, geometry = read_image(tmp_path / "scan.nii.gz")
    mask = np.zeros(geometry.shape, dtype=bool)
    mask[1, 4, 2] = True
    write_nifti_like(tmp_path / "pred.nii.gz", mask, tmp_path / "scan.nii.gz")
    written = nib.load(tmp_path / "pred.nii.gz")
    assert written.shape == source.shape and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-6)
    assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(source.affine)
    for field in ("qform_code", "sform_code", "xyzt_units", "pixdim"):
        np.testing.assert_array_equal(written.header[field], source.header[field])
    voxel = np.argwhere(np.asarray(written.dataobj) == 1)
    assert len(voxel) == 1
    np.testing.assert_allclose(world(written.affine, voxel[0]), world(geometry.affine, (1, 4, 2)), atol=1e-6)
    prob = np.linspace(0, 1, mask.size, dtype=np.float32).reshape(mask.shape)
    write_nifti_like(tmp_path / "prob.nii.gz", prob, tmp_path / "scan.nii.gz")
    np.testing.assert_allclose(read_image(tmp_path / "prob.nii.gz").array[0], prob, atol=1e-7)


def test_a_map_of_another_shape_is_refused_naming_both_files(tmp_path):
    nib.save(nib.Nifti1Image(volume((6, 4, 5)), scanner_affine()), tmp_path / "scan.nii.gz")
    with pytest.raises(LesionflowError, match=r"pred\.nii\.gz: map of shape \(5, 6, 5\).*scan\.nii\.gz"):
        write_nifti_like(tmp_path / "pred.nii.gz", np.zeros((5, 6, 5)), tmp_path / "scan.nii.gz")
