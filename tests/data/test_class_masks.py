"""Tests of several lesion classes in the data and preprocess stages: each image's class stack,
its union as the binary mask, the per-class tables, and label maps checked row by row."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from schema_settings import split_section, top_level_section

from lesionflow.data.class_masks import (
    CLASSES_FILE,
    load_class_masks,
    manifest_classes,
    read_reference,
)
from lesionflow.data.dataset import run_data
from lesionflow.data.lesion_classes import lesion_classes
from lesionflow.data.manifest import read_manifest
from lesionflow.data.manifest_check import ManifestProblems
from lesionflow.data.preprocess import run_preprocess
from lesionflow.data.split import run_split
from lesionflow.io.label_maps import read_label_map
from lesionflow.io.readers import read_image, read_mask
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

CLASSES = {"classes": {"exudate": 1, "haemorrhage": 2}}


def data_settings(**partial) -> dict:
    """The data section as the data stage receives it (the plan drops a null labels section)."""
    section = top_level_section("data", **partial)
    return {key: value for key, value in section.items() if value is not None or key != "labels"}


@pytest.fixture(scope="module")
def class_data(tmp_path_factory):
    """The built-in photographs with haemorrhages, through the data and split stages."""
    root = tmp_path_factory.mktemp("classes")
    synthetic = {"n_images": 24, "image_size": 48, "seed": 5, "haemorrhages": True}
    run_data(data_settings(synthetic=synthetic, labels=CLASSES), root / "data")
    run_split(root / "data" / "manifest.csv", split_section(seed=2), root / "split")
    return root


def test_each_image_has_its_class_stack_and_its_mask_is_their_union(class_data):
    data = class_data / "data"
    classes = manifest_classes(data / "manifest.csv")
    assert classes == lesion_classes(CLASSES)
    rows = read_manifest(data / "manifest.csv").to_dict("records")
    both = 0
    for row in rows:
        stack = load_class_masks(row)
        label_map = read_label_map(data / "masks" / f"{row['image_id']}.png").array
        np.testing.assert_array_equal(stack, [label_map == 1, label_map == 2])
        np.testing.assert_array_equal(read_mask(row["mask"]).array, stack.any(axis=0))
        both += bool(stack[0].any() and stack[1].any())
    assert both > 0, "the generator should make photographs with both lesion types"
    # The generator's relative paths stay relative, so the dataset folder can move.
    text = pd.read_csv(data / "manifest.csv", dtype=str)
    assert not any(cell.startswith("/") for cell in text[["mask", "class_masks"]].to_numpy().ravel())


def test_the_tables_count_lesions_per_class_beside_the_union(class_data):
    data = class_data / "data"
    images = pd.read_csv(data / "images.csv", dtype={"image_id": str})
    lesions = pd.read_csv(data / "lesions.csv", dtype={"image_id": str})
    summary = pd.read_json(data / "data_summary.json", typ="series")
    # Exclusive classes: a pixel has one class, so the union's pixels are the classes' sum.
    np.testing.assert_array_equal(
        images["lesion_pixels"], images["lesion_pixels_exudate"] + images["lesion_pixels_haemorrhage"]
    )
    for name in ("exudate", "haemorrhage"):
        own = lesions[lesions["class"] == name]
        assert (
            len(own)
            == images[f"n_lesions_{name}"].sum()
            == summary["classes"]["per_class"][name]["n_lesions"]
        )
        assert own.groupby("image_id")["lesion_pixels"].sum().to_dict() == {
            i: n for i, n in zip(images["image_id"], images[f"lesion_pixels_{name}"], strict=True) if n
        }
        with_class = summary["classes"]["per_class"][name]["n_images_with"]
        assert with_class == (images[f"lesion_pixels_{name}"] > 0).sum() > 0
    assert summary["n_lesion_positive"] == (images["lesion_pixels"] > 0).sum()


def test_the_split_stratifies_on_any_class(class_data):
    split = pd.read_csv(class_data / "split" / "split.csv", dtype=str)
    images = pd.read_csv(class_data / "data" / "images.csv", dtype={"image_id": str})
    positive = dict(zip(images["image_id"], images["lesion_pixels"] > 0, strict=True))
    for subset in ("train", "val", "test"):
        flags = [positive[i] for i in split.loc[split["split"] == subset, "image_id"]]
        assert any(flags) and not all(flags), f"{subset} should hold images with and without lesions"


@pytest.mark.parametrize(
    "partial",
    [{"max_size": 32}, {"tile_size": 24, "tile_stride": 16}, {}],
    ids=["resized", "tiles", "nothing-to-change"],
)
def test_preprocessed_items_carry_a_class_stack_on_their_own_pixels(class_data, tmp_path, partial):
    out = tmp_path / "pre"
    run_preprocess(
        class_data / "data" / "manifest.csv",
        class_data / "split" / "split.csv",
        complete_run_section("preprocess", partial),
        out,
    )
    assert manifest_classes(out / "manifest.csv") == lesion_classes(CLASSES)
    items = read_manifest(out / "manifest.csv").to_dict("records")
    for item in items:
        stack = load_class_masks(item)
        assert stack.shape == (2, *read_image(item["image"]).array.shape[1:])
        np.testing.assert_array_equal(stack.any(axis=0), read_mask(item["mask"]).array)
    assert sum(load_class_masks(item)[1].sum() for item in items) > 0


def _label_picture(folder: Path, name: str, labels: np.ndarray, suffix: str = ".png") -> str:
    Image.fromarray(labels.astype(np.uint8)).save(folder / f"{name}{suffix}")
    return f"{name}{suffix}"


def _picture_manifest(folder: Path, label_maps: list[np.ndarray], suffixes: list[str] | None = None) -> Path:
    rows = ["image,mask,subject"]
    for index, labels in enumerate(label_maps):
        picture = np.random.default_rng(index).integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(picture).save(folder / f"i{index}.png")
        suffix = (suffixes or [".png"] * len(label_maps))[index]
        rows.append(f"i{index}.png,{_label_picture(folder, f'm{index}', labels, suffix)},s{index}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def test_a_users_label_maps_are_checked_row_by_row_before_anything_is_written(tmp_path):
    good = np.zeros((8, 8), np.uint8)
    good[1:3, 1:3], good[5:7, 5:7] = 1, 2
    stray = good.copy()
    stray[0, 0] = 5
    manifest = _picture_manifest(
        tmp_path, [good, stray, good, np.zeros((6, 8), np.uint8)], [".png", ".png", ".jpg", ".png"]
    )
    with pytest.raises(ManifestProblems) as caught:
        run_data(data_settings(source="manifest", manifest=str(manifest), labels=CLASSES), tmp_path / "out")
    lines = caught.value.lines
    assert lines[0].endswith("3 problems in 3 rows")
    assert "row 3" in lines[1] and "m1.png" in lines[1] and "label value(s) 5, which no class" in lines[1]
    assert "row 4" in lines[2] and "m2.jpg" in lines[2] and "must be lossless" in lines[2]
    assert "row 5" in lines[3] and "size 8x6 differs from the image's 8x8" in lines[3]
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_a_users_label_maps_become_stacks_with_absolute_paths(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[1:3, 1:3], labels[5:7, 5:7] = 1, 2
    manifest = _picture_manifest(tmp_path, [labels, np.zeros_like(labels)])
    run_data(data_settings(source="manifest", manifest=str(manifest), labels=CLASSES), tmp_path / "out")
    rows = read_manifest(tmp_path / "out" / "manifest.csv").to_dict("records")
    np.testing.assert_array_equal(load_class_masks(rows[0]), [labels == 1, labels == 2])
    assert not load_class_masks(rows[1]).any()
    text = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype=str)
    assert all(Path(cell).is_absolute() for cell in text["class_masks"])


def test_a_volumes_label_map_keeps_its_grid_and_its_union_is_written_as_nifti(tmp_path):
    affine = np.diag([-0.9, 0.9, 3.0, 1.0])  # LPS-like: read in RAS, written back in its own
    labels = np.zeros((10, 12, 6), np.uint8)
    labels[2:4, 3:6, 1:3], labels[6:8, 7:9, 3:5] = 1, 3
    nib.save(
        nib.Nifti1Image(np.random.default_rng(0).random(labels.shape).astype(np.float32), affine),
        tmp_path / "v.nii.gz",
    )
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "v_labels.nii.gz")
    (tmp_path / "manifest.csv").write_text("image,mask,subject\nv.nii.gz,v_labels.nii.gz,s1\n")
    regions = {
        "classes": {"enhancing": 1, "oedema": 3},
        "regions": {"whole": ["enhancing", "oedema"], "core": ["enhancing"]},
    }
    run_data(
        data_settings(source="manifest", manifest=str(tmp_path / "manifest.csv"), labels=regions),
        tmp_path / "out",
    )
    row = read_manifest(tmp_path / "out" / "manifest.csv").to_dict("records")[0]
    union = read_mask(row["mask"])
    expected = read_reference({"mask": str(tmp_path / "v_labels.nii.gz")}, lesion_classes(regions)).array
    np.testing.assert_array_equal(load_class_masks(row), expected)
    assert expected[0].sum() == (labels > 0).sum() and expected[1].sum() == (labels == 1).sum()
    np.testing.assert_array_equal(union.array, expected[0])
    np.testing.assert_allclose(nib.load(row["mask"]).affine, affine)


def test_a_binary_dataset_has_no_class_stacks(tmp_path):
    run_data(data_settings(synthetic={"n_images": 12, "image_size": 32}), tmp_path)
    assert not (tmp_path / CLASSES_FILE).exists() and manifest_classes(tmp_path / "manifest.csv") is None
    assert "class_masks" not in pd.read_csv(tmp_path / "manifest.csv").columns
    assert "class" not in pd.read_csv(tmp_path / "lesions.csv").columns
    with pytest.raises(LesionflowError, match="has no class_masks file; it was written for binary data"):
        load_class_masks(read_manifest(tmp_path / "manifest.csv").to_dict("records")[0])


def test_haemorrhages_are_a_fundus_feature(tmp_path):
    settings = data_settings(
        synthetic={"kind": "brain", "n_images": 12, "haemorrhages": True}, labels=CLASSES
    )
    with pytest.raises(
        LesionflowError, match="data.synthetic.haemorrhages: applies to kind fundus, not 'brain'"
    ):
        run_data(settings, tmp_path)


def test_a_rows_label_map_is_read_as_one_channel_per_class_and_a_stray_value_names_the_file(tmp_path):
    from PIL import Image

    from lesionflow.data.class_masks import read_reference

    labels = np.array([[0, 1, 2], [2, 0, 1]], dtype=np.uint8)
    Image.fromarray(labels).save(tmp_path / "m.png")
    classes = lesion_classes({"classes": {"exudate": 1, "haemorrhage": 2}})
    loaded = read_reference({"image": "i.png", "mask": str(tmp_path / "m.png")}, classes)
    np.testing.assert_array_equal(loaded.array, [labels == 1, labels == 2])
    Image.fromarray(labels * 3).save(tmp_path / "bad.png")
    with pytest.raises(
        LesionflowError,
        match=r"^label map .*bad\.png: data.labels.classes: the mask holds the value\(s\) \[3, 6\]",
    ):
        read_reference({"image": "i.png", "mask": str(tmp_path / "bad.png")}, classes)


def test_a_rows_mask_columns_are_read_as_masks_with_the_rows_options(tmp_path):
    from PIL import Image

    from lesionflow.data.class_masks import read_reference

    a = np.array([[0, 200], [0, 0]], dtype=np.uint8)
    b = np.array([[0, 90], [90, 0]], dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.png")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "c.png")
    classes = lesion_classes({"mask_columns": {"exudate": "mask_exudate", "haemorrhage": "mask_haemorrhage"}})
    row = {
        "image": "i.png",
        "mask_exudate": str(tmp_path / "a.png"),
        "mask_haemorrhage": str(tmp_path / "b.png"),
        "mask_threshold": 50,
    }
    np.testing.assert_array_equal(read_reference(row, classes).array, [a > 50, b > 50])
    with pytest.raises(LesionflowError, match="the class masks of image i.png differ in shape"):
        read_reference({**row, "mask_haemorrhage": str(tmp_path / "c.png")}, classes)


def _columns_manifest(folder: Path, header: str = "image,mask_exudate,mask_haemorrhage,subject") -> Path:
    rng = np.random.default_rng(0)
    rows = [header]
    for index in range(2):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"i{index}.png")
        exudate, haemorrhage = np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)
        exudate[1:4, 1:4] = 255
        haemorrhage[3:6, 3:6] = 255  # overlaps the exudate at (3, 3)
        Image.fromarray(exudate).save(folder / f"e{index}.png")
        Image.fromarray(haemorrhage).save(folder / f"h{index}.png")
        cells = {
            "image": f"i{index}.png", "mask_exudate": f"e{index}.png", "mask_haemorrhage": f"h{index}.png",
            "subject": f"s{index}", "mask": f"e{index}.png",
        }  # fmt: skip
        rows.append(",".join(cells[column] for column in header.split(",")))
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


COLUMNS = {"mask_columns": {"exudate": "mask_exudate", "haemorrhage": "mask_haemorrhage"}}


def test_one_mask_column_per_class_gives_overlapping_channels_and_their_union(tmp_path):
    manifest = _columns_manifest(tmp_path)
    run_data(data_settings(source="manifest", manifest=str(manifest), labels=COLUMNS), tmp_path / "out")
    rows = read_manifest(tmp_path / "out" / "manifest.csv").to_dict("records")
    stack = load_class_masks(rows[0])
    assert stack.shape == (2, 8, 8) and stack[0, 3, 3] and stack[1, 3, 3]  # a pixel of both classes
    np.testing.assert_array_equal(read_mask(rows[0]["mask"]).array, stack.any(axis=0))
    assert "mask_exudate" not in rows[0]
    images = pd.read_csv(tmp_path / "out" / "images.csv")
    # Overlapping classes: the union has fewer pixels than the classes' sum.
    assert (
        images["lesion_pixels"] < images["lesion_pixels_exudate"] + images["lesion_pixels_haemorrhage"]
    ).all()


def test_a_class_mask_column_is_checked_like_a_mask_and_a_mask_column_beside_it_is_refused(tmp_path):
    manifest = _columns_manifest(tmp_path)
    (tmp_path / "h1.png").unlink()
    with pytest.raises(ManifestProblems) as caught:
        run_data(data_settings(source="manifest", manifest=str(manifest), labels=COLUMNS), tmp_path / "out")
    assert len(caught.value.problems) == 1
    assert (
        "row 3, column 'mask_haemorrhage'" in caught.value.lines[1]
        and "does not exist" in caught.value.lines[1]
    )
    both = _columns_manifest(tmp_path, "image,mask,mask_exudate,mask_haemorrhage,subject")
    with pytest.raises(
        LesionflowError, match="has a mask column, but data.labels.mask_columns reads each class"
    ):
        run_data(data_settings(source="manifest", manifest=str(both), labels=COLUMNS), tmp_path / "out")
