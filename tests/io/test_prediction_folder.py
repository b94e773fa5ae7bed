"""Tests of reading other tools' prediction folders: nnU-Net round trips, generic masks and maps, checks."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from lesionflow.io.nnunet_predictions import write_nnunet_prediction
from lesionflow.io.prediction_folder import (
    PredictionFolderProblems,
    folder_fingerprint,
    prediction_files,
    read_prediction_folder,
    write_subset_npz,
)
from lesionflow.io.readers import read_mask
from lesionflow.pipeline.artifacts import open_arrays
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.file_hashes import FileHashCache

PERMUTED_AFFINE = np.array([[0, -2.0, 0, 10], [1.5, 0, 0, -3], [0, 0, 3.0, 5], [0, 0, 0, 1]])
NNUNET_SIDE_FILES = ("dataset.json", "plans.json", "predict_from_raw_data_args.json")


def _probability(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _png(path, values):
    Image.fromarray(np.asarray(values)).save(path)


def _nnunet_side_files(folder, labels=None):
    """What nnUNetv2_predict writes beside the predictions; a .pkl that must never be unpickled."""
    labels = labels or {"background": 0, "lesion": 1}
    (folder / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".png"}))
    (folder / "plans.json").write_text("{}")
    (folder / "predict_from_raw_data_args.json").write_text("{}")


def test_nnunet_2d_round_trip_gives_back_the_probabilities(tmp_path):
    maps = {f"case_{i}": _probability((6, 8), seed=i) for i in range(3)}
    for case, p in maps.items():
        write_nnunet_prediction(tmp_path, case, p, 0.5, 2)
        (tmp_path / f"{case}.pkl").write_bytes(b"not a pickle: reading it would fail")
    _nnunet_side_files(tmp_path)
    got = read_prediction_folder(tmp_path, {case: (6, 8) for case in maps}, 1)
    assert got.kind == "probabilities" and got.notes == []
    assert list(got.maps) == list(maps)
    for case, p in maps.items():
        assert got.maps[case].dtype == np.float32
        np.testing.assert_array_equal(got.maps[case], p)
    assert set(got.formats.values()) == {".npz probabilities + .png label map"}


@pytest.mark.parametrize("affine", [None, PERMUTED_AFFINE], ids=["identity", "permuted-flipped"])
def test_nnunet_3d_round_trip_reverses_the_axes_and_restores_the_orientation(tmp_path, affine):
    p = _probability((4, 5, 6))
    label_map, npz = write_nnunet_prediction(tmp_path, "vol", p, 0.5, 3, affine)
    with np.load(npz) as data:
        assert data["probabilities"].shape[1:] != (4, 5, 6)  # stored as SimpleITK's (Z, Y, X)
    got = read_prediction_folder(tmp_path, {"vol": (4, 5, 6)}, 1)
    np.testing.assert_array_equal(got.maps["vol"], p)
    # The npz is placed exactly where lesionflow's own reader places its label map.
    np.testing.assert_array_equal(read_mask(label_map).array, got.maps["vol"] >= 0.5)


def test_volume_probabilities_that_match_only_un_reversed_are_refused_saying_so(tmp_path):
    p = _probability((4, 5, 6))
    nib.save(nib.Nifti1Image((p > 0.5).astype(np.uint8), np.eye(4)), tmp_path / "vol.nii.gz")
    np.savez_compressed(tmp_path / "vol.npz", probabilities=np.stack([1 - p, p]))  # not reversed
    with pytest.raises(PredictionFolderProblems) as err:
        read_prediction_folder(tmp_path, {"vol": (4, 5, 6)}, 1)
    assert err.value.lines[1] == (
        f"{tmp_path / 'vol.npz'}: probabilities of spatial shape (6, 5, 4) do not match the image's "
        "(4, 5, 6); they match only un-reversed, but nnU-Net writes a volume's probabilities as "
        "(C, Z, Y, X), reversed from nibabel's (X, Y, Z)"
    )


def test_2d_nifti_pair_is_reversed_as_simpleitk_reads_a_2d_nifti(tmp_path):
    # A 2D case exported as NIfTI: SimpleITK reads the stored (H, W) as (W, H), so the npz is (C, 1, W, H).
    p = _probability((5, 7))
    nib.save(nib.Nifti1Image((p >= 0.5).astype(np.uint8), np.eye(4)), tmp_path / "c.nii.gz")
    np.savez_compressed(tmp_path / "c.npz", probabilities=np.stack([1 - p.T, p.T])[:, None])
    got = read_prediction_folder(tmp_path, {"c": (5, 7)}, 1)
    np.testing.assert_array_equal(got.maps["c"], p)


def test_volume_probabilities_without_their_label_map_are_refused(tmp_path):
    np.savez_compressed(tmp_path / "vol.npz", probabilities=np.zeros((2, 6, 5, 4), np.float32))
    with pytest.raises(
        PredictionFolderProblems, match=r"vol\.npz: a volume's probabilities need vol\.nii\.gz"
    ):
        read_prediction_folder(tmp_path, {"vol": (4, 5, 6)}, 1)


def test_folder_of_png_masks_gives_kind_masks(tmp_path):
    lesion = np.zeros((5, 7), dtype=bool)
    lesion[1:3, 2:5] = True
    _png(tmp_path / "a.png", lesion.astype(np.uint8) * 255)  # 0/255
    _png(tmp_path / "b.png", lesion.astype(np.uint8))  # 0/1 label map
    Image.fromarray(lesion).save(tmp_path / "c.png")  # 1-bit
    _png(tmp_path / "d.png", np.stack([lesion.astype(np.uint8) * 255] * 3, axis=-1))  # grey as RGB
    got = read_prediction_folder(tmp_path, dict.fromkeys("abcd", (5, 7)), 1)
    assert got.kind == "masks" and got.notes == []
    for values in got.maps.values():
        assert values.dtype == np.float32
        np.testing.assert_array_equal(values, lesion.astype(np.float32))
    assert got.formats == {
        "a": ".png 0/255 mask",
        "b": ".png label map",
        "c": ".png mask",
        "d": ".png 0/255 mask",
    }


def test_npy_probability_maps_are_read_as_probabilities(tmp_path):
    maps = {"x": _probability((3, 4, 5)), "y": _probability((3, 4, 5), seed=1)}
    for image_id, p in maps.items():
        np.save(tmp_path / f"{image_id}.npy", p.astype(np.float16))
    got = read_prediction_folder(tmp_path, dict.fromkeys(maps, (3, 4, 5)), 1)
    assert got.kind == "probabilities" and got.formats["x"] == ".npy probabilities"
    np.testing.assert_array_equal(got.maps["x"], maps["x"].astype(np.float16).astype(np.float32))


def test_nifti_masks_are_read_in_lesionflow_orientation(tmp_path):
    stored = np.random.default_rng(3).random((5, 4, 6)) > 0.6
    nib.save(nib.Nifti1Image(stored.astype(np.uint8), PERMUTED_AFFINE), tmp_path / "m.nii.gz")
    nib.save(nib.Nifti1Image(stored.astype(np.float32), PERMUTED_AFFINE), tmp_path / "f.nii")
    expected_mask = read_mask(tmp_path / "m.nii.gz").array
    got = read_prediction_folder(tmp_path, {"m": (4, 5, 6), "f": (4, 5, 6)}, 1)
    assert got.kind == "masks"
    np.testing.assert_array_equal(got.maps["m"], expected_mask.astype(np.float32))
    np.testing.assert_array_equal(got.maps["f"], expected_mask.astype(np.float32))


def test_mixed_probabilities_and_masks_become_masks_for_all_with_a_note(tmp_path):
    p = _probability((4, 4))
    p[0, 0] = 0.5  # a tie is background, as nnU-Net's argmax of (1 - p, p)
    np.save(tmp_path / "prob.npy", p)
    _png(tmp_path / "mask.png", np.eye(4, dtype=np.uint8) * 255)
    got = read_prediction_folder(tmp_path, {"prob": (4, 4), "mask": (4, 4)}, 1)
    assert got.kind == "masks"
    np.testing.assert_array_equal(got.maps["prob"], (p > 0.5).astype(np.float32))
    np.testing.assert_array_equal(got.maps["mask"], np.eye(4, dtype=np.float32))
    assert got.notes == [
        "1 of 2 images have only a mask (mask): every image is read as a hard mask "
        "(probabilities as nnU-Net's argmax, a single map above 0.5)"
    ]


def test_label_picks_the_probability_channel_and_the_label_value(tmp_path):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 1, 4, 5))
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=0)).astype(np.float32)
    np.savez_compressed(tmp_path / "p.npz", probabilities=probabilities)
    _png(tmp_path / "p.png", probabilities.argmax(axis=0)[0].astype(np.uint8))
    labels = np.array([[0, 1, 2, 2], [1, 1, 0, 2]], dtype=np.uint8)
    _png(tmp_path / "m.png", labels)
    _nnunet_side_files(tmp_path, {"background": 0, "edema": 1, "lesion": 2})
    got = read_prediction_folder(tmp_path, {"p": (4, 5), "m": (2, 4)}, 2)
    assert got.kind == "masks"  # m has a label map only
    np.testing.assert_array_equal(got.maps["p"], (probabilities.argmax(axis=0)[0] == 2).astype(np.float32))
    np.testing.assert_array_equal(got.maps["m"], (labels == 2).astype(np.float32))
    (tmp_path / "m.png").unlink()
    got = read_prediction_folder(tmp_path, {"p": (4, 5)}, 2)
    np.testing.assert_array_equal(got.maps["p"], probabilities[2, 0])


def test_label_map_values_beyond_0_and_the_label_need_dataset_json(tmp_path):
    _png(tmp_path / "m.png", np.array([[0, 1, 2]], dtype=np.uint8))
    with pytest.raises(PredictionFolderProblems) as err:
        read_prediction_folder(tmp_path, {"m": (1, 3)}, 2)
    assert err.value.lines[1] == (
        f"{tmp_path / 'm.png'}: values 1 are neither 0 nor the lesion label 2: expected a binary mask "
        "(0/1, 0/255, bool), probabilities in [0, 1], or a label map with nnU-Net's dataset.json"
    )


def test_every_problem_is_reported_together(tmp_path):
    expected = {name: (4, 4) for name in ("missing", "shape", "grey", "high", "nan", "keys", "both", "few")}
    np.save(tmp_path / "shape.npy", np.zeros((4, 5), np.float32))
    _png(tmp_path / "grey.png", np.array([[0, 128], [255, 0]] * 2, dtype=np.uint8).repeat(2, axis=1))
    np.save(tmp_path / "high.npy", np.full((4, 4), 1.5, np.float32))
    nan = np.zeros((4, 4), np.float32)
    nan[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savez_compressed(tmp_path / "keys.npz", softmax=np.zeros((2, 1, 4, 4), np.float32))
    _png(tmp_path / "both.png", np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "both.tif")
    np.savez_compressed(tmp_path / "few.npz", probabilities=np.ones((1, 1, 4, 4), np.float32))
    _png(tmp_path / "stranger.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PredictionFolderProblems) as err:
        read_prediction_folder(tmp_path, expected, 1)
    f = tmp_path
    assert err.value.lines == [
        f"prediction folder {f}: 10 problems",
        f"{f / 'notes.txt'}: not a prediction file (supported: .png, .tif, .tiff, .bmp, .nii, .nii.gz, "
        ".npy, .npz; .pkl and .json are skipped)",
        f"{f / 'missing'}.*: no prediction file for image id 'missing'",
        f"{f / 'shape.npy'}: spatial shape (4, 5) does not match the image's (4, 4)",
        f"{f / 'grey.png'}: values 128, 255 are neither 0 nor the lesion label 1: expected a binary mask "
        "(0/1, 0/255, bool), probabilities in [0, 1], or a label map with nnU-Net's dataset.json",
        f"{f / 'high.npy'}: probabilities must lie in [0, 1], found values from 1.5 to 1.5",
        f"{f / 'nan.npy'}: holds NaN or infinite values",
        f"{f / 'keys.npz'}: has no 'probabilities' array (found: softmax); expected nnU-Net's output",
        f"{f / 'both'}.*: files both.png, both.tif give image id 'both' conflicting predictions; "
        "keep one (an .npz beside one label map is nnU-Net's pair)",
        f"{f / 'few.npz'}: probabilities have 1 channel(s); the lesion label 1 needs at least 2 "
        "(channel 0 is background)",
        f"{f / 'stranger.png'}: image id 'stranger' is not in the subset",
    ]
    assert str(err.value) == "\n".join(err.value.lines)
    assert isinstance(err.value, LesionflowError)


def test_ignorable_files_and_skipped_ids_are_neither_read_nor_reported(tmp_path):
    _png(tmp_path / "a.png", np.zeros((3, 3), np.uint8))
    (tmp_path / "a.pkl").write_bytes(b"\x80garbage")
    _nnunet_side_files(tmp_path)
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "sub").mkdir()
    (tmp_path / "test_case.npy").write_bytes(b"corrupt, but another subset's")
    got = read_prediction_folder(tmp_path, {"a": (3, 3)}, 1, skipped_ids={"test_case"})
    assert list(got.maps) == ["a"]
    assert got.notes == ["no image has a lesion pixel (label 1) in its hard mask"]
    assert [path.name for path in prediction_files(tmp_path)] == ["a.png", "dataset.json", "test_case.npy"]


def test_write_subset_npz_is_the_infer_stage_format(tmp_path):
    maps = {"a": _probability((3, 4)), "b": _probability((5, 2), seed=1)}
    for image_id, p in maps.items():
        np.save(tmp_path / f"{image_id}.npy", p)
    got = read_prediction_folder(tmp_path, {"a": (3, 4), "b": (5, 2)}, 1)
    write_subset_npz(got, tmp_path / "out" / "val.npz")
    with open_arrays(tmp_path / "out" / "val.npz") as arrays:
        assert sorted(arrays) == ["a", "b"]
        for image_id, p in maps.items():
            assert arrays[image_id].dtype == np.float16
            np.testing.assert_array_equal(arrays[image_id], p.astype(np.float16))


def test_fingerprint_changes_with_a_file_content_and_not_with_its_mtime(tmp_path):
    folder = tmp_path / "predictions"
    folder.mkdir()
    write_nnunet_prediction(folder, "a", _probability((4, 4)), 0.5, 2)
    _nnunet_side_files(folder)
    cache = FileHashCache(tmp_path / "hashes.json")
    first = folder_fingerprint(folder, cache)
    os.utime(folder / "a.npz", ns=(10**18, 10**18))
    (folder / "plans.json").write_text('{"changed": true}')  # ignored: it decides nothing
    assert folder_fingerprint(folder, cache) == first
    write_nnunet_prediction(folder, "a", _probability((4, 4), seed=9), 0.5, 2)
    assert folder_fingerprint(folder, FileHashCache(tmp_path / "hashes.json")) != first


def test_bad_label_or_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(LesionflowError, match=r"label: expected an integer >= 1"):
        read_prediction_folder(tmp_path, {}, 0)
    with pytest.raises(LesionflowError, match=r"prediction folder .*nowhere does not exist"):
        read_prediction_folder(tmp_path / "nowhere", {}, 1)
    with pytest.raises(LesionflowError, match=r"prediction folder .*nowhere does not exist"):
        folder_fingerprint(tmp_path / "nowhere", FileHashCache(tmp_path / "h.json"))
