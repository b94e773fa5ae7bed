"""Tests of lesionflow.data.subsets: one subset's items in split order, and lesion presence."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from manifests import small_manifest, write_pair

from lesionflow.data.manifest import lesion_presence, read_manifest
from lesionflow.data.subsets import load_subset
from lesionflow.pipeline.errors import LesionflowError


@pytest.fixture()
def small(tmp_path) -> Path:
    """A valid manifest of three images from two subjects; one image is lesion-free."""
    return small_manifest(tmp_path)


def test_load_subset_returns_the_subset_in_split_order(small):
    manifest = read_manifest(small)
    split = pd.DataFrame(
        {
            "image_id": ["c", "b", "a"],
            "subject": ["0007", "0042", "0042"],
            "split": ["test", "train", "train"],
            "lesion_positive": [True, False, True],
        }
    )
    ids, images, masks = load_subset(manifest, split, "train")
    assert ids == ["b", "a"]
    assert [image.shape for image in images] == [(3, 16, 16)] * 2
    assert [int(mask.sum()) for mask in masks] == [0, 5]
    assert load_subset(manifest, split, "val") == ([], [], [])
    with pytest.raises(LesionflowError, match="subset"):
        load_subset(manifest, split, "training")


def test_load_subset_rejects_a_mask_of_another_size(small):
    write_pair(small.parent, "small_mask", 3, size=8)
    (small.parent / "masks" / "small_mask.png").replace(small.parent / "masks" / "a.png")
    manifest = read_manifest(small)
    split = pd.DataFrame({"image_id": ["a"], "subject": ["0042"], "split": ["val"]})
    with pytest.raises(LesionflowError, match=r"mask .*a\.png is 8x8 but its image .* is 16x16"):
        load_subset(manifest, split, "val")


def test_lesion_presence_is_indexed_by_image_id(small):
    presence = lesion_presence(read_manifest(small))
    assert presence.to_dict() == {"a": True, "b": False, "c": True}
    assert presence.dtype == bool
