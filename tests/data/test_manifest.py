"""Tests of reading and validating a manifest table: paths, ids, subjects and row errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from manifests import small_manifest, write_manifest

from lesionflow.data.manifest import default_image_id, load_manifest_image, read_manifest
from lesionflow.pipeline.errors import LesionflowError


@pytest.fixture()
def small(tmp_path) -> Path:
    """A valid manifest of three images from two subjects; one image is lesion-free."""
    return small_manifest(tmp_path)


def test_read_manifest_resolves_paths_relative_to_its_folder_and_keeps_extras(small, monkeypatch):
    monkeypatch.chdir("/")
    frame = read_manifest(small)
    assert list(frame.columns) == ["image_id", "subject", "image", "mask", "scanner"]
    assert frame["image"].iloc[0] == str(small.parent / "images" / "a.png")
    assert all(Path(p).is_absolute() for p in [*frame["image"], *frame["mask"]])
    assert list(frame["scanner"]) == ["x", "y", "x"]


def test_subject_keeps_leading_zeros_and_image_id_defaults_to_file_stem(small):
    frame = read_manifest(small)
    assert list(frame["subject"]) == ["0042", "0042", "0007"]
    assert list(frame["image_id"]) == ["a", "b", "c"]


def test_image_id_column_is_used_when_present(small):
    write_manifest(small.parent, "image_id,image,mask,subject\n0042_1,images/a.png,masks/a.png,0042\n")
    assert list(read_manifest(small)["image_id"]) == ["0042_1"]


def test_missing_manifest_error_names_file(tmp_path):
    with pytest.raises(LesionflowError, match=r"manifest .*nope\.csv: file not found"):
        read_manifest(tmp_path / "nope.csv")


def test_missing_column_error_names_file_and_column(small):
    write_manifest(small.parent, "image,subject\nimages/a.png,0042\n")
    with pytest.raises(LesionflowError) as caught:
        read_manifest(small)
    message = str(caught.value)
    assert str(small) in message and "'mask'" in message and "\n" not in message


def test_missing_file_error_names_row_and_column(small):
    text = small.read_text().replace("masks/c.png", "masks/gone.png")
    write_manifest(small.parent, text)
    with pytest.raises(
        LesionflowError,
        match=r"manifest .*manifest\.csv, row 4, column 'mask': "
        r"file .*gone\.png does not exist",
    ):
        read_manifest(small)


def test_empty_cell_error_names_row_and_column(small):
    write_manifest(small.parent, "image,mask,subject\nimages/a.png,masks/a.png,\n")
    with pytest.raises(LesionflowError, match=r"row 2, column 'subject': expected a value"):
        read_manifest(small)


def test_duplicate_image_id_error_names_both_rows(small):
    write_manifest(
        small.parent,
        "image,mask,subject\nimages/a.png,masks/a.png,1\nimages/b.png,masks/b.png,2\n"
        "images/a.png,masks/c.png,3\n",
    )
    with pytest.raises(LesionflowError, match=r"row 4, column 'image': image id 'a' .*row 2"):
        read_manifest(small)


def test_bad_mask_channel_cell_is_rejected(small):
    write_manifest(small.parent, "image,mask,subject,mask_channel\nimages/a.png,masks/a.png,1,red\n")
    with pytest.raises(LesionflowError, match=r"row 2, column 'mask_channel': expected an integer"):
        read_manifest(small)


def test_empty_or_garbled_csv_is_a_user_error(tmp_path):
    with pytest.raises(LesionflowError, match="not a readable CSV"):
        read_manifest(write_manifest(tmp_path, ""))


def test_the_default_image_id_of_a_gzipped_nifti_drops_the_whole_suffix():
    assert default_image_id("scans/sub-01_flair.nii.gz") == "sub-01_flair"
    assert default_image_id("images/0042_1.png") == "0042_1"
    assert default_image_id("a.b.nii") == "a.b"


def test_further_image_columns_are_absolute_and_stacked_as_channels_after_the_image(tmp_path):
    for folder, value in (("flair", 1.0), ("t1", 2.0), ("t2", 3.0)):
        (tmp_path / folder).mkdir()
        volume = nib.Nifti1Image(np.full((4, 3, 2), value, dtype=np.float32), np.eye(4))
        nib.save(volume, tmp_path / folder / "a.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 1), dtype=np.float32), np.eye(4)), tmp_path / "t1" / "small.nii")
    manifest = write_manifest(
        tmp_path, "image,image_t1,image_t2,mask,subject\nflair/a.nii,t1/a.nii,t2/a.nii,flair/a.nii,s\n"
    )
    row = read_manifest(manifest).to_dict("records")[0]
    assert row["image_t1"] == str(tmp_path / "t1" / "a.nii")
    image, geometry = load_manifest_image(row)
    assert image.shape == (3, 4, 3, 2) and geometry.shape == (4, 3, 2)
    assert [float(channel.mean()) for channel in image] == [1.0, 2.0, 3.0]
    with pytest.raises(LesionflowError, match=r"small\.nii \(column image_t1\) has shape \(4, 3, 1\)"):
        load_manifest_image({**row, "image_t1": str(tmp_path / "t1" / "small.nii")})
