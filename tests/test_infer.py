"""Tests of lesionflow.infer: one float16 probability map per image of the requested split."""

import numpy as np
import pandas as pd
import pytest
import torch

from lesionflow import artifacts, dataset, train
from lesionflow.errors import LesionflowError
from lesionflow.infer import load_model, run_infer
from lesionflow.synthetic import generate_dataset
from lesionflow.tta import predict_probabilities

SETTINGS = {
    "model": {
        "network": "UNet", "spatial_dims": 2,
        "kwargs": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
    },
    "train": {
        "epochs": 1, "batch_size": 4, "learning_rate": 0.01, "weight_decay": 0.0,
        "scheduler": "none", "loss": "DiceCE", "positive_oversampling": 0.0,
        "augment": {"flip": False, "rotate90": False, "intensity": False},
        "early_stopping_patience": None, "seed": 0, "patch_size": None, "device": "cpu",
        "num_workers": 0,
    },
}


def infer_settings(tta=("identity",)):
    return {"infer": {"tta": list(tta), "batch_size": 3, "sw_overlap": 0.25, "device": "cpu"}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    manifest = generate_dataset(root / "data", n_images=10, image_size=32, seed=2)
    frame = dataset.read_manifest(manifest)
    positive = [bool(dataset.load_mask(path).any()) for path in frame["mask"]]
    split = pd.DataFrame(
        {"image_id": frame["image_id"], "subject": frame["subject"], "lesion_positive": positive}
    )
    split["split"] = ["val", "test", "test", "val"] + ["train"] * 6
    split.loc[split.index[np.flatnonzero(positive)[0]], "split"] = "val"
    split_path = root / "split.csv"
    split[["image_id", "subject", "split", "lesion_positive"]].to_csv(split_path, index=False)
    train.run_train(manifest, split_path, SETTINGS, root / "train")
    return root, manifest, split_path, split


@pytest.mark.parametrize("subset", ["val", "test"])
def test_every_image_of_the_subset_gets_one_float16_probability_map(trained, subset):
    root, manifest, split_path, split = trained
    out = root / f"{subset}.npz"
    run_infer(manifest, split_path, root / "train" / "model.pt", infer_settings(), subset, out)
    maps = artifacts.load_arrays(out)
    assert sorted(maps) == sorted(split.loc[split["split"] == subset, "image_id"])
    for prob in maps.values():
        assert prob.dtype == np.float16 and prob.shape == (32, 32)
        assert 0 <= prob.min() and prob.max() <= 1


def test_saved_maps_equal_the_models_tta_prediction(trained):
    root, manifest, split_path, split = trained
    tta = ["identity", "hflip", "rot90"]
    out = root / "tta.npz"
    run_infer(manifest, split_path, root / "train" / "model.pt", infer_settings(tta), "test", out)
    model, checkpoint = load_model(root / "train" / "model.pt", torch.device("cpu"))
    ids, images, _ = dataset.load_subset(
        dataset.read_manifest(manifest), pd.read_csv(split_path, dtype=str), "test"
    )
    expected = predict_probabilities(model, images, tta, checkpoint["roi_size"], 1, "cpu")
    maps = artifacts.load_arrays(out)
    for image_id, prob in zip(ids, expected, strict=True):
        np.testing.assert_allclose(maps[image_id].astype(np.float32), prob, atol=1e-3)


def test_unknown_tta_name_fails_before_the_model_is_read(trained, tmp_path):
    _, manifest, split_path, _ = trained
    with pytest.raises(LesionflowError, match=r"infer\.tta.*hvflip"):
        run_infer(
            manifest, split_path, tmp_path / "missing.pt", infer_settings(["mirror"]), "val",
            tmp_path / "val.npz",
        )
    assert not (tmp_path / "val.npz").exists()


def test_only_val_and_test_can_be_inferred(trained, tmp_path):
    root, manifest, split_path, _ = trained
    with pytest.raises(LesionflowError, match="subset"):
        run_infer(
            manifest, split_path, root / "train" / "model.pt", infer_settings(), "train",
            tmp_path / "train.npz",
        )


def test_unreadable_checkpoint_is_a_user_error_naming_the_file(trained, tmp_path):
    _, manifest, split_path, _ = trained
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(LesionflowError, match="model.pt"):
        run_infer(manifest, split_path, broken, infer_settings(), "val", tmp_path / "val.npz")
