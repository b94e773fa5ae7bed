"""Tests of choosing a reader or writer by suffix: unknown suffixes, case, and .nii.gz."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lesionflow.io.readers import (
    SUPPORTED_SUFFIXES,
    file_suffix,
    read_geometry,
    read_image,
    read_mask,
    write_image,
    write_mask,
)
from lesionflow.pipeline.errors import LesionflowError


@pytest.mark.parametrize("read", [read_image, read_mask, read_geometry])
def test_unknown_suffix_names_the_file_and_the_supported_suffixes(tmp_path, read):
    path = tmp_path / "scan.dcm"
    path.write_bytes(b"DICM")
    with pytest.raises(LesionflowError) as caught:
        read(path)
    message = str(caught.value)
    assert str(path) in message and "'.dcm'" in message
    assert all(suffix in message for suffix in (".png", ".npy", ".nii.gz"))


def test_a_file_without_suffix_is_refused(tmp_path):
    with pytest.raises(LesionflowError, match=r"unsupported file suffix '\(none\)'"):
        read_image(tmp_path / "README")


def test_suffixes_are_case_insensitive_and_nii_gz_is_one_suffix():
    assert file_suffix("a/B.PNG") == ".png"
    assert file_suffix("brain.T1.nii.gz") == ".nii.gz"
    assert file_suffix("x.tar.gz") == ".gz"
    expected = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".npy", ".nii", ".nii.gz"}
    assert expected <= set(SUPPORTED_SUFFIXES)


def test_an_upper_case_suffix_reads_like_a_lower_case_one(tmp_path):
    Image.fromarray(np.full((2, 3), 255, dtype=np.uint8)).save(tmp_path / "m.PNG", format="PNG")
    assert read_mask(tmp_path / "m.PNG").array.all()


def test_masks_are_never_written_lossily_and_images_never_as_pictures(tmp_path):
    with pytest.raises(LesionflowError, match=r"mask .*m\.jpg: unsupported file suffix '\.jpg'"):
        write_mask(tmp_path / "m.jpg", np.ones((2, 2), dtype=bool))
    with pytest.raises(LesionflowError, match=r"image .*i\.png: unsupported file suffix '\.png'"):
        write_image(tmp_path / "i.png", np.ones((1, 2, 2), dtype=np.float32))
    assert not list(tmp_path.iterdir())
