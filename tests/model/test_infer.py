"""Tests of lesionflow.model.infer: window by window prediction, stitched, mapped back to the original."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from monai.inferers import sliding_window_inference
from schema_settings import synthetic_settings

from lesionflow.data.manifest import read_manifest
from lesionflow.data.preprocess import run_preprocess
from lesionflow.data.subsets import load_subset
from lesionflow.data.synthetic import generate_dataset
from lesionflow.data.tiles import Stitcher, tile_origins
from lesionflow.io.readers import read_image, read_mask
from lesionflow.model import train
from lesionflow.model.infer import load_model, run_infer, windows_of
from lesionflow.model.tta import (
    get_transforms,
    predict_batch,
    predict_probabilities,
    window_predictions,
)
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

SETTINGS = {
    "model": {
        "network": "UNet", "spatial_dims": 2,
        "kwargs": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
        "presence_head": False,
    },
    "train": {
        "epochs": 1, "batch_size": 4, "learning_rate": 0.01, "weight_decay": 0.0,
        "scheduler": "none", "loss": "DiceCE", "positive_oversampling": 0.0,
        "augment": {"flip": False, "rotate90": False, "intensity": False},
        "early_stopping_patience": None, "seed": 0, "patch_size": None, "device": "cpu",
        "num_workers": 0, "batch_dice": False, "presence_loss_weight": 0.5,
    },
}
SW_OVERLAP = complete_run_section("infer", {})["sw_overlap"]
TILED = {"tile_size": 16, "tile_stride": 8}
RESIZED = {"crop_field_of_view": True, "max_size": 24, "normalise": "image", "tile_size": 16}


def infer_settings(tta=("identity",)):
    return {"infer": {"tta": list(tta), "batch_size": 3, "sw_overlap": SW_OVERLAP, "device": "cpu"}}


def source_split(manifest, path):
    frame = read_manifest(manifest)
    positive = [bool(read_mask(p).array.any()) for p in frame["mask"]]
    split = pd.DataFrame(
        {"image_id": frame["image_id"], "subject": frame["subject"], "lesion_positive": positive}
    )
    split["split"] = ["val", "test", "test", "val"] + ["train"] * (len(frame) - 4)
    split.loc[split.index[np.flatnonzero(positive)[0]], "split"] = "val"
    split[["image_id", "subject", "split", "lesion_positive"]].to_csv(path, index=False)
    return split


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    manifest = generate_dataset(root / "data", **synthetic_settings(n_images=10, image_size=40, seed=2))
    split = source_split(manifest, root / "split.csv")
    return root, manifest, root / "split.csv", split


def prepared(source, name, settings):
    """Preprocess the source images with ``settings`` and train a model on the items."""
    root, manifest, split_path, _ = source
    folder = root / name
    if not (folder / "train" / "model.pt").exists():
        run_preprocess(
            manifest, split_path, complete_run_section("preprocess", settings), folder / "preprocess"
        )
        train.run_train(
            folder / "preprocess" / "manifest.csv", folder / "preprocess" / "split.csv", SETTINGS,
            folder / "train",
        )
    return folder


@pytest.fixture(scope="module")
def whole(source):
    return prepared(source, "whole", {})


@pytest.fixture(scope="module")
def tiled(source):
    return prepared(source, "tiled", TILED)


def infer(folder, subset="test", tta=("identity",), out=None):
    out = out or folder / f"infer_{'_'.join(tta)}"
    run_infer(
        folder / "preprocess" / "images.csv", folder / "preprocess" / "preprocess.json",
        folder / "train" / "model.pt", infer_settings(tta), subset, out,
    )
    return out


@pytest.mark.parametrize("subset", ["val", "test"])
def test_every_image_of_the_subset_gets_one_float16_map_and_a_summary(source, whole, subset):
    _, _, _, split = source
    out = infer(whole, subset)
    maps = artifacts.load_arrays(out / f"{subset}.npz")
    assert sorted(maps) == sorted(split.loc[split["split"] == subset, "image_id"])
    for prob in maps.values():
        assert prob.dtype == np.float16 and prob.shape == (40, 40)
        assert 0 <= prob.min() and prob.max() <= 1
    record = artifacts.read_json(out / f"{subset}_infer.json")
    assert record["n_images"] == len(maps) and record["resolution"].startswith("original")
    assert record["peak_rss_mb"] > 0


def test_saved_maps_equal_the_models_tta_prediction(source, whole):
    _, manifest, split_path, _ = source
    tta = ["identity", "hflip", "rot90"]
    out = infer(whole, "test", tta)
    model, checkpoint = load_model(whole / "train" / "model.pt", torch.device("cpu"))
    ids, images, _ = load_subset(
        read_manifest(manifest), pd.read_csv(split_path, dtype=str), "test"
    )
    expected = predict_probabilities(model, images, tta, checkpoint["roi_size"], 1, "cpu", SW_OVERLAP)
    maps = artifacts.load_arrays(out / "test.npz")
    items = artifacts.load_arrays(out / "test_tiles.npz")
    for image_id, prob in zip(ids, expected, strict=True):
        np.testing.assert_allclose(maps[image_id].astype(np.float32), prob, atol=1e-3)
        np.testing.assert_array_equal(items[image_id], maps[image_id])


def test_stitched_tile_predictions_equal_monai_sliding_window_inference(source, tiled):
    tta = ["identity", "vflip"]
    out = infer(tiled, "val", tta)
    model, _ = load_model(tiled / "train" / "model.pt", torch.device("cpu"))
    chosen = get_transforms(tta, 2)
    images = pd.read_csv(tiled / "preprocess" / "images.csv", dtype={"image_id": str})
    maps = artifacts.load_arrays(out / "val.npz")
    for row in images[images["split"] == "val"].to_dict("records"):
        image = torch.from_numpy(read_image(row["image"]).array)[None]
        with torch.no_grad():
            theirs = sliding_window_inference(
                image, roi_size=(16, 16), sw_batch_size=4, overlap=0.5, mode="gaussian",
                predictor=lambda windows: predict_batch(model, windows, chosen, (16, 16), 4, SW_OVERLAP),
            )[0, 0].numpy()
        np.testing.assert_allclose(maps[row["image_id"]].astype(np.float32), theirs, atol=1e-3)


def test_each_tile_of_the_split_gets_the_models_map_of_that_tile(source, tiled):
    out = infer(tiled, "test")
    model, _ = load_model(tiled / "train" / "model.pt", torch.device("cpu"))
    items = pd.read_csv(tiled / "preprocess" / "split.csv", dtype=str)
    manifest = read_manifest(tiled / "preprocess" / "manifest.csv").set_index("image_id")
    maps = artifacts.load_arrays(out / "test_tiles.npz")
    expected_ids = sorted(items.loc[items["split"] == "test", "image_id"])
    assert sorted(maps) == expected_ids and len(expected_ids) > 2
    tile = read_image(manifest.loc[expected_ids[1], "image"]).array
    with torch.no_grad():
        ours = predict_batch(
            model, torch.from_numpy(tile)[None], get_transforms(["identity"], 2), None, 1, SW_OVERLAP
        )
    np.testing.assert_allclose(maps[expected_ids[1]].astype(np.float32), ours[0, 0].numpy(), atol=1e-3)


def test_maps_of_cropped_and_resized_images_come_back_at_the_original_size(source):
    folder = prepared(source, "resized", RESIZED)
    out = infer(folder, "val")
    images = pd.read_csv(folder / "preprocess" / "images.csv", dtype={"image_id": str})
    maps = artifacts.load_arrays(out / "val.npz")
    rows = images[images["split"] == "val"]
    assert (rows["scale"] < 1).all()
    for row in rows.to_dict("records"):
        assert list(maps[row["image_id"]].shape) == json.loads(row["original_shape"])
    tiles = artifacts.load_arrays(out / "val_tiles.npz")
    assert all(prob.shape == (16, 16) for prob in tiles.values())


def test_unknown_tta_name_fails_before_the_model_is_read(whole, tmp_path):
    with pytest.raises(LesionflowError, match=r"infer\.tta.*hvflip"):
        run_infer(
            whole / "preprocess" / "images.csv", whole / "preprocess" / "preprocess.json",
            tmp_path / "missing.pt", infer_settings(["mirror"]), "val", tmp_path,
        )
    assert not (tmp_path / "val.npz").exists()


def test_a_3d_flip_of_a_2d_model_fails_before_any_image_is_read(whole, tmp_path):
    with pytest.raises(LesionflowError, match=r"infer\.tta: flip2 .*2 spatial axes"):
        run_infer(
            tmp_path / "missing_images.csv", tmp_path / "missing_preprocess.json",
            whole / "train" / "model.pt", infer_settings(["identity", "flip2"]), "val", tmp_path,
        )
    assert not (tmp_path / "val.npz").exists()


def conv3d_model():
    """A fixed 3x3x3 convolution with zero padding: its output depends on the window and on flips."""
    conv = torch.nn.Conv3d(1, 1, 3, padding=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))
    return conv.eval()


@pytest.mark.parametrize("tta", [["identity"], ["identity", "flip2", "flip012", "rot90"]])
@pytest.mark.parametrize("roi, overlap", [((8, 8, 8), 0.25), ((8, 10, 6), 0.5)])
def test_3d_windows_stitched_with_gaussian_weights_equal_monai_sliding_window_inference(
    tta, roi, overlap
):
    # A volume whose sides are multiples of neither the window nor its step: the last window of
    # each axis is flush with the border in both. Measured difference: 0.0 (atol leaves room for
    # summation order).
    model, shape = conv3d_model(), (19, 23, 13)
    image = np.random.default_rng(5).random((1, *shape)).astype(np.float32)
    window, stride, weights = windows_of({"tile_size": None}, list(roi), 3, overlap)
    stitcher = Stitcher(shape, weights)
    for origin, prob, _ in window_predictions(
        model, image, tile_origins(shape, window, stride), window, tta, list(roi), 4, "cpu", overlap
    ):
        stitcher.add(prob, origin)
    chosen = get_transforms(tta, 3)
    with torch.no_grad():
        theirs = sliding_window_inference(
            torch.from_numpy(image)[None], roi_size=roi, sw_batch_size=4, overlap=overlap,
            mode="gaussian",
            predictor=lambda windows: predict_batch(model, windows, chosen, roi, 4, overlap),
        )[0, 0].numpy()
    ours = stitcher.result()
    assert ours.shape == shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_only_val_and_test_can_be_inferred(whole, tmp_path):
    with pytest.raises(LesionflowError, match="subset"):
        run_infer(
            whole / "preprocess" / "images.csv", whole / "preprocess" / "preprocess.json",
            whole / "train" / "model.pt", infer_settings(), "train", tmp_path,
        )


def test_unreadable_checkpoint_is_a_user_error_naming_the_file(whole, tmp_path):
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(LesionflowError, match="model.pt"):
        run_infer(
            whole / "preprocess" / "images.csv", whole / "preprocess" / "preprocess.json",
            broken, infer_settings(), "val", tmp_path,
        )
