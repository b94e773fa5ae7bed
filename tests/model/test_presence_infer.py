"""Tests of inference with a presence head: <subset>_presence.csv, its TTA and window rules, and the
maps, which stay those of the wrapped network."""

import numpy as np
import pandas as pd
import pytest
import torch
from schema_settings import synthetic_settings
from scipy.special import expit, logit
from tiny_data import split_with_each_class

from lesionflow.data.preprocess import run_preprocess
from lesionflow.data.synthetic import generate_dataset
from lesionflow.data.tiles import crop_or_pad, tile_origins
from lesionflow.io.readers import read_image
from lesionflow.model import train
from lesionflow.model.dual_head import DualHead
from lesionflow.model.infer import load_model, run_infer
from lesionflow.model.networks import build_model, forward_logits, forward_with_presence
from lesionflow.model.presence import TABLE_COLUMNS
from lesionflow.model.tta import get_transforms, predict_batch, predict_batch_with_presence
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.config import complete_run_section

KWARGS = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
TTA = ["identity", "hflip", "rot90"]


def run_settings(presence_head):
    return {
        "model": complete_run_section(
            "model", {"network": "UNet", "spatial_dims": 2, "kwargs": KWARGS, "presence_head": presence_head}
        ),
        "train": complete_run_section("train", {"epochs": 1, "batch_size": 4, "device": "cpu"}),
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Ten 40x40 synthetic images: val and test each hold lesion-positive and lesion-free ones."""
    root = tmp_path_factory.mktemp("presence_infer")
    manifest = generate_dataset(root / "data", **synthetic_settings(n_images=10, image_size=40, seed=2))
    split = split_with_each_class(manifest, {"val": (True, False), "test": (True, False)})
    split.to_csv(root / "split.csv", index=False)
    return root, manifest


def prepared(source, name, preprocess, presence_head):
    root, manifest = source
    folder = root / name
    preprocess = complete_run_section("preprocess", preprocess)
    run_preprocess(manifest, root / "split.csv", preprocess, folder / "pre")
    train.run_train(
        folder / "pre" / "manifest.csv", folder / "pre" / "split.csv", run_settings(presence_head),
        folder / "train",
    )
    return folder


@pytest.fixture(scope="module")
def dual(source):
    return prepared(source, "dual", {}, True)


@pytest.fixture(scope="module")
def plain(source):
    return prepared(source, "plain", {}, False)


@pytest.fixture(scope="module")
def tiled(source):
    return prepared(source, "tiled", {"tile_size": 16, "tile_stride": 8}, True)


def infer(folder, subset, tta=("identity",), model=None):
    out = folder / f"infer_{'_'.join(tta)}_{model.stem if model else 'model'}"
    settings = {"infer": complete_run_section("infer", {"tta": list(tta), "batch_size": 3, "device": "cpu"})}
    run_infer(
        folder / "pre" / "images.csv", folder / "pre" / "preprocess.json",
        model or folder / "train" / "model.pt", settings, subset, out,
    )
    return out


def subset_rows(folder, subset):
    images = pd.read_csv(folder / "pre" / "images.csv", dtype={"image_id": str})
    return images[images["split"] == subset].reset_index(drop=True)


@pytest.mark.parametrize("subset", ["val", "test"])
def test_a_dual_head_model_gets_one_presence_probability_per_image(dual, subset):
    out = infer(dual, subset)
    table = pd.read_csv(out / f"{subset}_presence.csv", dtype={"image_id": str})
    assert list(table.columns) == TABLE_COLUMNS
    assert table["image_id"].tolist() == subset_rows(dual, subset)["image_id"].tolist()
    assert np.isfinite(table["presence_logit"]).all()
    assert table["presence_probability"].between(0, 1).all()
    np.testing.assert_allclose(table["presence_probability"], expit(table["presence_logit"]))
    assert artifacts.read_json(out / f"{subset}_infer.json")["presence_head"] is True


def test_a_model_without_a_head_gets_the_same_table_with_empty_scores(plain):
    out = infer(plain, "val")
    table = pd.read_csv(out / "val_presence.csv", dtype={"image_id": str})
    assert list(table.columns) == TABLE_COLUMNS
    assert table["image_id"].tolist() == subset_rows(plain, "val")["image_id"].tolist()
    assert table[["presence_logit", "presence_probability"]].isna().all().all()
    assert artifacts.read_json(out / "val_infer.json")["presence_head"] is False


def test_the_presence_logit_is_the_logit_of_the_heads_probability_averaged_over_tta(dual):
    out = infer(dual, "test", TTA)
    table = pd.read_csv(out / "test_presence.csv", dtype={"image_id": str}).set_index("image_id")
    model, _ = load_model(dual / "train" / "model.pt", torch.device("cpu"))
    transforms = get_transforms(TTA, 2)
    for row in subset_rows(dual, "test").to_dict("records"):
        x = torch.from_numpy(read_image(row["image"]).array)[None].float()
        with torch.no_grad():
            heads = [float(model(t.forward(x))[1][0]) for t in transforms]
        expected = logit(np.mean(expit(np.array(heads, dtype=np.float64))))
        assert table.loc[row["image_id"], "presence_logit"] == pytest.approx(expected, abs=1e-6)


def test_a_tiled_images_presence_is_its_most_lesion_like_tile(tiled):
    out = infer(tiled, "val")
    table = pd.read_csv(out / "val_presence.csv", dtype={"image_id": str}).set_index("image_id")
    model, _ = load_model(tiled / "train" / "model.pt", torch.device("cpu"))
    for row in subset_rows(tiled, "val").to_dict("records"):
        image = read_image(row["image"]).array
        origins = tile_origins(image.shape[1:], (16, 16), (8, 8))
        tiles = torch.from_numpy(np.stack([crop_or_pad(image, o, (16, 16)) for o in origins])).float()
        with torch.no_grad():
            expected = float(model(tiles)[1].max())
        assert len(origins) > 1
        assert table.loc[row["image_id"], "presence_logit"] == pytest.approx(expected, abs=1e-5)


def test_a_dual_head_models_maps_are_exactly_those_of_its_network_alone(tiled, tmp_path):
    checkpoint = torch.load(tiled / "train" / "model.pt", weights_only=True)
    network_only = {
        **checkpoint, "presence_head": False,
        "state_dict": {
            name.removeprefix("network."): tensor
            for name, tensor in checkpoint["state_dict"].items() if name.startswith("network.")
        },
    }
    torch.save(network_only, tmp_path / "network.pt")
    tta = ("identity", "rot90")  # rot90 turns the windows' roi too
    with_head = infer(tiled, "val", tta)
    without = infer(tiled, "val", tta, model=tmp_path / "network.pt")
    for name in ("val.npz", "val_tiles.npz"):
        ours, theirs = artifacts.load_arrays(with_head / name), artifacts.load_arrays(without / name)
        assert ours.keys() == theirs.keys()
        for key, array in theirs.items():
            np.testing.assert_array_equal(ours[key], array)


def tiny_dual_head():
    torch.manual_seed(0)
    model_settings = complete_run_section("model", {"network": "UNet", "spatial_dims": 2, "kwargs": KWARGS})
    model = build_model(model_settings, 1, True).eval()
    with torch.no_grad():
        # A head that reads the features strongly, so the windows' logits differ clearly.
        model.head.weight.normal_(std=3.0)
    return model


def test_under_a_sliding_window_each_image_gets_its_highest_window_logit():
    model = tiny_dual_head()
    batch = torch.rand(2, 1, 32, 32)
    batch[1, :, 16:, :16] += 3.0  # image 1 differs in one quadrant only
    with torch.no_grad():
        segmentation, presence = forward_with_presence(model, batch, [16, 16], 3, 0.0)
        # Overlap 0: MONAI's windows are the four quadrants.
        quadrants = [batch[:, :, r : r + 16, c : c + 16] for r in (0, 16) for c in (0, 16)]
        expected = torch.stack([model(q)[1] for q in quadrants]).max(dim=0).values
        alone = forward_logits(model.network, batch, [16, 16], 3, 0.0)
    torch.testing.assert_close(presence, expected)
    assert not torch.isclose(presence[0], presence[1])
    assert torch.equal(segmentation, alone)


def test_tta_with_a_head_gives_the_maps_of_tta_without_it():
    model = tiny_dual_head()
    batch = torch.rand(2, 1, 32, 32)
    transforms = get_transforms(TTA, 2)
    probs, presence = predict_batch_with_presence(model, batch, transforms, [16, 16], 2, 0.25)
    assert torch.equal(probs, predict_batch(model.network, batch, transforms, [16, 16], 2, 0.25))
    assert presence.shape == (2,) and torch.isfinite(presence).all()


def test_a_model_file_without_the_presence_head_key_loads_a_network_without_a_head(plain, tmp_path):
    checkpoint = torch.load(plain / "train" / "model.pt", weights_only=True)
    del checkpoint["presence_head"]
    torch.save(checkpoint, tmp_path / "old.pt")
    model, _ = load_model(tmp_path / "old.pt", torch.device("cpu"))
    assert not isinstance(model, DualHead)
