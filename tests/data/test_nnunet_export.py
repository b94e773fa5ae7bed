"""Tests of the nnU-Net v2 raw dataset export: layout, labels, images, folds and refusals."""

import json
import runpy
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nnunet_layout import check_nnunet_raw_dataset
from PIL import Image
from sklearn.model_selection import GroupKFold

from lesionflow.data.manifest import load_manifest_mask, read_manifest
from lesionflow.data.nnunet_export import (
    export_nnunet_dataset,
    nnunet_case_file,
    nnunet_folds,
)
from lesionflow.io.readers import read_image
from lesionflow.pipeline.errors import LesionflowError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "nnunet_export.py"
SETTINGS = {"dataset_id": 7, "dataset_name": "Lesions"}
SUBSETS_2D = {"c0": "train", "c1": "train", "c2": "train", "c3": "val", "c4": "test", "c5": "test"}


def write_split(folder: Path, subsets: dict[str, str], **extra: list) -> Path:
    """split.csv in the split stage's columns (one subject per image), plus ``extra`` columns."""
    frame = pd.DataFrame(
        {"image_id": list(subsets), "subject": [f"s{i}" for i in subsets], "split": list(subsets.values())}
    )
    path = folder / "split.csv"
    frame.assign(**extra).to_csv(path, index=False)
    return path


def rgb_dataset(folder: Path, ids=tuple(SUBSETS_2D)) -> Path:
    """RGB pictures with 0/255 grey masks, except c1's red-on-black mask read through mask_channel 0."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image_id,subject,image,mask,mask_channel"]
    for k, case in enumerate(ids):
        Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / f"{case}.png")
        mask = np.zeros((12, 10), np.uint8)
        mask[k : k + 3, 2:6] = 255
        if case == "c1":
            colour = np.zeros((12, 10, 3), np.uint8)
            colour[..., 0], colour[..., 2] = (
                mask,
                200 - mask // 2,
            )  # blue elsewhere: ambiguous without a channel
            Image.fromarray(colour).save(folder / f"{case}_mask.png")
        else:
            Image.fromarray(mask).save(folder / f"{case}_mask.png")
        rows.append(f"{case},s{case},{case}.png,{case}_mask.png,{0 if case == 'c1' else ''}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def volume_dataset(folder: Path) -> Path:
    """3D NIfTI cases with a T1 channel; the affine flips x, so lesionflow reads them reoriented to RAS."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.array([[-2.0, 0, 0, 30], [0, 1.5, 0, -20], [0, 0, 3, 5], [0, 0, 0, 1]])
    rows = ["image_id,subject,image,image_t1,mask"]
    for k, case in enumerate(("v0", "v1", "v2", "v3")):
        for name in ("flair", "t1"):
            volume = rng.normal(100, 20, (6, 5, 4)).astype(np.float32)
            nib.save(nib.Nifti1Image(volume, affine), folder / f"{case}_{name}.nii.gz")
        mask = np.zeros((6, 5, 4), np.uint8)
        mask[k : k + 2, 1:3, 1:3] = 1
        nib.save(nib.Nifti1Image(mask, affine), folder / f"{case}_mask.nii.gz")
        rows.append(f"{case},s{case},{case}_flair.nii.gz,{case}_t1.nii.gz,{case}_mask.nii.gz")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


@pytest.fixture
def rgb_export(tmp_path):
    manifest = rgb_dataset(tmp_path / "data")
    record = export_nnunet_dataset(manifest, write_split(tmp_path, SUBSETS_2D), SETTINGS, tmp_path / "out")
    return manifest, record, tmp_path / "out" / "Dataset007_Lesions"


def test_an_rgb_picture_dataset_exports_as_a_valid_nnunet_raw_dataset(rgb_export):
    _, record, folder = rgb_export
    assert check_nnunet_raw_dataset(folder) == []
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert spec["labels"] == {"background": 0, "lesion": 1}
    assert (spec["numTraining"], spec["file_ending"]) == (4, ".png")
    assert spec["overwrite_image_reader_writer"] == "NaturalImage2DIO"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"c{i}_0000.png" for i in range(4)]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["c4_0000.png", "c5_0000.png"]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["c4.png", "c5.png"]
    assert not (folder / "labelsTr" / "c4.png").exists()
    assert json.loads((folder / "splits_final.json").read_text()) == [
        {"train": ["c0", "c1", "c2"], "val": ["c3"]}
    ]
    assert record == json.loads((folder.parent / "export.json").read_text())
    assert record["counts"] == {"imagesTr": 4, "imagesTs": 2, "folds": 1, "train": 3, "val": 1, "test": 2}
    assert record["cases"]["test"] == ["c4", "c5"]
    assert record["dataset_folder"] == str(folder.absolute())


def test_exported_labels_are_the_pipeline_masks_and_images_read_as_the_originals(rgb_export):
    manifest, _, folder = rgb_export
    for row in read_manifest(manifest).to_dict("records"):
        part = "Ts" if SUBSETS_2D[row["image_id"]] == "test" else "Tr"
        label = np.asarray(Image.open(folder / f"labels{part}" / f"{row['image_id']}.png"))
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        np.testing.assert_array_equal(label, load_manifest_mask(row).astype(np.uint8))
        exported = read_image(folder / f"images{part}" / nnunet_case_file(row["image_id"], 0, ".png"))
        np.testing.assert_array_equal(exported.array, read_image(row["image"]).array)
    assert np.asarray(Image.open(folder / "labelsTr" / "c1.png")).sum() == 12  # red channel, not grey


def test_a_16_bit_grey_picture_keeps_its_levels(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = ["image,mask,subject"]
    for case in ("g0", "g1", "g2"):
        levels = np.random.default_rng(2).integers(0, 65536, (8, 9)).astype(np.uint16)
        Image.fromarray(levels).save(data / f"{case}.png")
        Image.fromarray(np.eye(8, 9, dtype=np.uint8)).save(data / f"{case}_mask.png")
        rows.append(f"{case}.png,{case}_mask.png,{case}")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    split = write_split(tmp_path, {"g0": "train", "g1": "val", "g2": "test"})
    export_nnunet_dataset(data / "manifest.csv", split, SETTINGS, tmp_path / "out")
    folder = tmp_path / "out" / "Dataset007_Lesions"
    assert check_nnunet_raw_dataset(folder) == []
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "image"}
    exported = read_image(folder / "imagesTr" / "g0_0000.png").array
    np.testing.assert_array_equal(exported, read_image(data / "g0.png").array)


def test_volumes_export_one_nifti_per_channel_with_the_images_affine(tmp_path):
    manifest = volume_dataset(tmp_path / "data")
    split = write_split(tmp_path, {"v0": "train", "v1": "train", "v2": "val", "v3": "test"})
    export_nnunet_dataset(manifest, split, SETTINGS, tmp_path / "out")
    folder = tmp_path / "out" / "Dataset007_Lesions"
    assert check_nnunet_raw_dataset(folder) == []
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "image", "1": "t1"} and spec["file_ending"] == ".nii.gz"
    assert "overwrite_image_reader_writer" not in spec
    for row in read_manifest(manifest).to_dict("records"):
        part = "Ts" if row["image_id"] == "v3" else "Tr"
        original = read_image(row["image"])
        for channel, column in enumerate(("image", "image_t1")):
            exported = read_image(
                folder / f"images{part}" / nnunet_case_file(row["image_id"], channel, ".nii.gz")
            )
            np.testing.assert_array_equal(exported.array, read_image(row[column]).array)
            np.testing.assert_allclose(exported.geometry.affine, original.geometry.affine)
        label = nib.load(folder / f"labels{part}" / f"{row['image_id']}.nii.gz")
        assert label.get_data_dtype() == np.uint8
        np.testing.assert_allclose(label.affine, original.geometry.affine)
        np.testing.assert_array_equal(np.asanyarray(label.dataobj), load_manifest_mask(row))


def test_without_a_fold_column_the_one_fold_is_train_and_val():
    split = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "subject": list("abcd"),
            "split": ["val", "train", "test", "train"],
        }
    )
    assert nnunet_folds(split) == [{"train": ["b", "d"], "val": ["a"]}]


def test_k_folds_are_the_fold_columns_groups_and_cover_every_development_case_once_as_val():
    ids = [f"i{k}" for k in range(12)]
    subjects = np.array([f"s{k // 2}" for k in range(10)])
    fold = np.empty(10, dtype=int)
    for number, (_, held_out) in enumerate(GroupKFold(n_splits=3).split(ids[:10], groups=subjects)):
        fold[held_out] = number
    split = pd.DataFrame(
        {
            "image_id": ids,
            "subject": [*subjects, "t", "t"],
            "split": ["train"] * 8 + ["val"] * 2 + ["test"] * 2,
            "fold": [*fold, None, None],
        }
    )
    folds = nnunet_folds(split)
    assert len(folds) == 3
    for number, fold_cases in enumerate(folds):
        assert fold_cases["val"] == [ids[k] for k in range(10) if fold[k] == number]
        assert sorted(fold_cases["train"] + fold_cases["val"]) == sorted(ids[:10])
    assert sorted(case for fold_cases in folds for case in fold_cases["val"]) == sorted(ids[:10])


def test_a_k_fold_split_exports_its_folds(tmp_path):
    manifest = rgb_dataset(tmp_path / "data")
    split = write_split(tmp_path, SUBSETS_2D, fold=[0, 1, 0, 1, None, None])
    record = export_nnunet_dataset(manifest, split, SETTINGS, tmp_path / "out")
    folder = tmp_path / "out" / "Dataset007_Lesions"
    assert check_nnunet_raw_dataset(folder) == []
    assert json.loads((folder / "splits_final.json").read_text()) == [
        {"train": ["c1", "c3"], "val": ["c0", "c2"]},
        {"train": ["c0", "c2"], "val": ["c1", "c3"]},
    ]
    assert record["counts"]["folds"] == 2


@pytest.mark.parametrize(
    ("folds", "message"),
    [
        ([0, 1, None, 1], r"image 'c2' has an empty cell"),
        ([0, 1, 0.5, 1], r"image 'c2' has 0.5"),
        ([1, 2, 1, 2], r"folds \[1, 2\]"),
        ([0, 0, 0, 0], r"folds \[0\]"),
    ],
)
def test_a_bad_fold_column_is_refused_in_one_line(folds, message):
    split = pd.DataFrame(
        {
            "image_id": ["c0", "c1", "c2", "c3"],
            "subject": list("abcd"),
            "split": ["train", "train", "val", "val"],
            "fold": folds,
        }
    )
    with pytest.raises(LesionflowError, match=message) as error:
        nnunet_folds(split)
    assert "\n" not in str(error.value) and "'fold'" in str(error.value)


@pytest.mark.parametrize(
    ("bad", "other", "message"),
    [
        ("c 2", "c3", r"image id 'c 2' is not safe"),
        ("c/2", "c3", r"image id 'c/2' is not safe"),
        ("Case", "case", r"image id 'case' collides with 'Case'"),
    ],
)
def test_an_id_unsafe_as_a_file_name_is_refused_naming_it_and_nothing_is_written(
    tmp_path, bad, other, message
):
    ids = ("c0", "c1", bad, other)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("image_id,subject,image,mask\n")  # never read: ids are checked first
    split = write_split(tmp_path, dict(zip(ids, ["train", "train", "val", "test"], strict=True)))
    with pytest.raises(LesionflowError, match=message) as error:
        export_nnunet_dataset(manifest, split, SETTINGS, tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_a_score_only_manifest_is_refused_as_nnunet_needs_labels(tmp_path):
    data = tmp_path / "data"
    rgb_dataset(data, ids=("c0", "c1", "c2"))
    (data / "manifest.csv").write_text(
        "image_id,subject,image,score\nc0,a,c0.png,1\nc1,b,c1.png,2\nc2,c,c2.png,3\n"
    )
    split = write_split(tmp_path, {"c0": "train", "c1": "val", "c2": "test"})
    with pytest.raises(LesionflowError, match=r"no masks .* needs a label") as error:
        export_nnunet_dataset(data / "manifest.csv", split, SETTINGS, tmp_path / "out")
    assert "\n" not in str(error.value)


def test_a_split_of_another_dataset_is_refused(tmp_path):
    manifest = rgb_dataset(tmp_path / "data")
    split = write_split(tmp_path, {"c0": "train", "c1": "val", "zz": "test"})
    with pytest.raises(LesionflowError, match=r"split.csv: 1 image id\(s\) are not in manifest .* 'zz'"):
        export_nnunet_dataset(manifest, split, SETTINGS, tmp_path / "out")


def test_cases_with_different_channels_are_refused_naming_the_case(tmp_path):
    manifest = rgb_dataset(tmp_path / "data", ids=("c0", "c1", "c2"))
    Image.fromarray(np.full((12, 10), 9, np.uint8)).save(tmp_path / "data" / "c2.png")
    split = write_split(tmp_path, {"c0": "train", "c1": "val", "c2": "test"})
    with pytest.raises(
        LesionflowError, match=r"image id 'c2': .* channels image, but image id 'c0' .* R, G, B"
    ):
        export_nnunet_dataset(manifest, split, SETTINGS, tmp_path / "out")


def test_an_unsafe_dataset_name_and_a_used_folder_are_refused(rgb_export, tmp_path):
    manifest, _, folder = rgb_export
    split = tmp_path / "split.csv"
    with pytest.raises(LesionflowError, match=r"nnunet_export.dataset_name: 'my data' is not a valid folder"):
        export_nnunet_dataset(manifest, split, {"dataset_id": 7, "dataset_name": "my data"}, tmp_path / "new")
    with pytest.raises(LesionflowError, match=r"Dataset007_Lesions already exists and is not empty"):
        export_nnunet_dataset(manifest, split, SETTINGS, folder.parent)


def test_the_layout_check_finds_what_nnunet_would_refuse(rgb_export):
    _, _, folder = rgb_export
    (folder / "labelsTr" / "c0.png").unlink()
    Image.fromarray(np.full((12, 10), 2, np.uint8)).save(folder / "labelsTr" / "c1.png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(folder / "labelsTr" / "c2.png")
    (folder / "imagesTr" / "c3_1.png").write_bytes(b"")
    (folder / "splits_final.json").write_text(json.dumps([{"train": ["c1", "c9"], "val": ["c1"]}]))
    problems = check_nnunet_raw_dataset(folder)
    assert problems == [
        "imagesTr/c3_1.png: not named {case}_{XXXX}.png",
        "case c0: no label c0.png in labelsTr",
        "label c1.png: values [2] not in dataset.json labels",
        "label c2.png: shape (5, 5), its image's size is (12, 10)",
        "splits_final.json fold 0: cases not in imagesTr: ['c9']",
        "splits_final.json fold 0: cases in train and val: ['c1']",
    ]


def test_the_entry_point_reports_a_bad_setting_in_one_line(tmp_path, monkeypatch, capsys):
    manifest = rgb_dataset(tmp_path / "data")
    split = write_split(tmp_path, SUBSETS_2D)
    settings = json.dumps({"nnunet_export": {"dataset_id": 7}})
    argv = ["nnunet_export.py", "--manifest", str(manifest), "--split", str(split), "--settings", settings]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "nnunet_export.dataset_name" in stderr
    assert not (tmp_path / "out").exists()
