"""Tests of training with model.presence_head: the presence loss and columns, resuming, 3D, and the
guarantee that a model without a head trains exactly as before."""

import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from schema_settings import synthetic_settings
from sklearn.metrics import average_precision_score, roc_auc_score
from tiny_data import split_with_each_class

from lesionflow.data import subsets
from lesionflow.data.manifest import read_manifest
from lesionflow.data.synthetic import generate_dataset
from lesionflow.model import epoch as epoch_loop
from lesionflow.model import networks, train
from lesionflow.model.dual_head import DualHead
from lesionflow.model.epoch import EpochSetup, build_training_parts, train_epoch, validate
from lesionflow.model.infer import load_model
from lesionflow.model.interrupt import TrainingInterrupted
from lesionflow.model.networks import build_loss, forward_with_presence
from lesionflow.model.presence import EPOCH_COLUMNS as PRESENCE_COLUMNS
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.config import complete_run_section

KWARGS = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}


def settings(presence_head, **train_overrides):
    model = complete_run_section(
        "model", {"network": "UNet", "spatial_dims": 2, "kwargs": KWARGS, "presence_head": presence_head}
    )
    train_section = complete_run_section(
        "train", {"epochs": 2, "batch_size": 4, "device": "cpu", "early_stopping_patience": None,
                  **train_overrides}
    )
    return {"model": model, "train": train_section}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 32x32 synthetic dataset whose val holds two lesion-positive and two lesion-free images."""
    root = tmp_path_factory.mktemp("dual_data")
    manifest = generate_dataset(root / "data", **synthetic_settings(n_images=12, image_size=32, seed=4))
    split = split_with_each_class(manifest, {"val": (True, True, False, False)})
    split_path = root / "split.csv"
    split.to_csv(split_path, index=False)
    return manifest, split_path


@pytest.fixture(scope="module")
def dual(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dual") / "out"
    summary = train.run_train(*data, settings(True), out)
    return out, summary


def test_dual_head_training_writes_the_presence_loss_and_validation_presence_columns(dual):
    out, _ = dual
    epochs = pd.read_csv(out / "metrics_by_epoch.csv")
    assert list(epochs.columns) == train.epoch_columns(True) == train.EPOCH_COLUMNS + PRESENCE_COLUMNS
    assert epochs["epoch"].tolist() == [1, 2]
    # An untrained head says about 1/2 to every image: a BCE near log 2.
    assert epochs["presence_loss"].between(0.5, 0.9).all()
    assert epochs["val_presence_roc_auc"].between(0, 1).all()
    assert epochs["val_presence_ap"].between(0, 1).all()


def test_the_saved_model_records_its_head_and_its_validation_presence_scores_match_scikit_learn(
    data, dual
):
    out, summary = dual
    model, checkpoint = load_model(out / "model.pt", torch.device("cpu"))
    assert checkpoint["presence_head"] is True and isinstance(model, DualHead)
    assert {"head.weight", "head.bias"} <= set(checkpoint["state_dict"])
    manifest, split_path = data
    _, images, masks = subsets.load_subset(read_manifest(manifest), pd.read_csv(split_path, dtype=str), "val")
    with torch.no_grad():
        _, logits = forward_with_presence(
            model, torch.from_numpy(np.stack(images)).float(), checkpoint["roi_size"], 4, 0.25
        )
    labels = [bool(mask.any()) for mask in masks]
    best = pd.read_csv(out / "metrics_by_epoch.csv").set_index("epoch").loc[summary["best_epoch"]]
    # The checkpoint is still the best validation dice_pos.
    assert best["val_dice"] == pytest.approx(summary["best_val_dice_pos"])
    assert best["val_presence_roc_auc"] == pytest.approx(roc_auc_score(labels, logits.numpy()))
    assert best["val_presence_ap"] == pytest.approx(average_precision_score(labels, logits.numpy()))


def test_a_model_without_a_head_never_builds_one_nor_calls_the_presence_loss(data, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a model without presence_head reached the presence code")

    class NeverBuilt(DualHead):
        # A type still, as networks.segmentation_network asks isinstance of it.
        def __init__(self, network):
            forbidden()

    monkeypatch.setattr(networks, "DualHead", NeverBuilt)
    monkeypatch.setattr(epoch_loop, "dual_head_loss", forbidden)
    monkeypatch.setattr(epoch_loop, "forward_with_presence", forbidden)
    train.run_train(*data, settings(False, epochs=1), tmp_path / "out")
    checkpoint = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert checkpoint["presence_head"] is False
    assert not any(name.startswith(("head.", "network.")) for name in checkpoint["state_dict"])
    assert list(pd.read_csv(tmp_path / "out" / "metrics_by_epoch.csv").columns) == train.EPOCH_COLUMNS


def test_two_runs_without_a_head_and_the_same_seed_give_byte_identical_weights(data, tmp_path):
    for name in ("a", "b"):
        train.run_train(*data, settings(False, epochs=1), tmp_path / name)
    a, b = (torch.load(tmp_path / name / "model.pt", weights_only=True)["state_dict"] for name in "ab")
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert tensor.numpy().tobytes() == b[name].numpy().tobytes(), name


def test_the_head_starts_on_the_same_network_weights_as_a_model_without_one():
    model_settings = settings(True)["model"]
    torch.manual_seed(0)
    dual_model = networks.build_model(model_settings, 3, True)
    torch.manual_seed(0)
    plain = networks.build_model(model_settings, 3, False)
    for name, tensor in plain.state_dict().items():
        assert torch.equal(dual_model.network.state_dict()[name], tensor), name


def test_a_dual_head_run_interrupted_after_an_epoch_resumes_to_the_uninterrupted_result(
    data, dual, tmp_path, monkeypatch
):
    reference, _ = dual
    original, calls = epoch_loop.validate, []

    def validate_then_signal(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(epoch_loop, "validate", validate_then_signal)
    with pytest.raises(TrainingInterrupted):
        train.run_train(*data, settings(True), tmp_path / "out")
    saved = torch.load(tmp_path / "out" / "resume" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1 and "head.weight" in saved["model"]
    summary = train.run_train(*data, settings(True), tmp_path / "out")
    assert summary["resumed_from_epoch"] == 1
    weights, expected = (torch.load(f / "model.pt", weights_only=True) for f in (tmp_path / "out", reference))
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(weights["state_dict"][name], tensor), name
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "out" / "metrics_by_epoch.csv").drop(columns="seconds"),
        pd.read_csv(reference / "metrics_by_epoch.csv").drop(columns="seconds"),
        check_exact=True,
    )
    resumed = artifacts.read_json(tmp_path / "out" / "train_summary.json")
    assert resumed["best_epoch"] == expected["best_epoch"]


def test_a_3d_unet_with_a_presence_head_trains_one_step_and_validates(tmp_path):
    model_settings = complete_run_section(
        "model",
        {"network": "UNet", "spatial_dims": 3, "kwargs": {"channels": [4, 8], "strides": [2]},
         "presence_head": True},
    )
    train_section = complete_run_section("train", {"batch_size": 2, "device": "cpu", "epochs": 1})
    rng = np.random.default_rng(0)
    masks = [np.zeros((8, 8, 8), np.uint8) for _ in range(2)]
    masks[0][2:5, 2:5, 2:5] = 1
    images = [rng.random((1, 8, 8, 8), dtype=np.float32) + mask for mask in masks]
    setup = EpochSetup(build_loss("DiceCE", batch_dice=False), torch.device("cpu"), None, images, masks,
                       [8, 8, 8], 2, 0.5)
    items = [
        {"image": image, "label": mask[None].astype(np.float32)}
        for image, mask in zip(images, masks, strict=True)
    ]
    parts = build_training_parts(model_settings, train_section, items, [True, False], [8, 8, 8], setup, 0)
    assert isinstance(parts.model, DualHead)
    head = parts.model.head.weight.detach().clone()
    scores, steps, seen, _ = train_epoch(parts, setup, 1, 1, lambda: None)
    assert len(steps) == 1 and seen == 2
    assert np.isfinite(scores["presence_loss"]) and np.isfinite(scores["train_loss"])
    assert not torch.equal(parts.model.head.weight, head)
    val = validate(parts.model, setup.loss_fn, images, masks, [8, 8, 8], 2, torch.device("cpu"), None)
    assert 0 <= val["presence_roc_auc"] <= 1 and 0 <= val["presence_ap"] <= 1
