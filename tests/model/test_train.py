"""Tests of lesionflow.model.train: artifacts and their columns, checkpoint choice on val, settings."""

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from schema_settings import synthetic_settings

from lesionflow.data import subsets
from lesionflow.data.manifest import read_manifest
from lesionflow.data.synthetic import generate_dataset
from lesionflow.io.readers import read_mask
from lesionflow.model import epoch as epoch_loop
from lesionflow.model import train
from lesionflow.model.checkpoint import RESUME_DIR
from lesionflow.model.infer import load_model
from lesionflow.model.sampling import resolve_num_workers
from lesionflow.model.tta import predict_probabilities
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

SUMMARY_KEYS = {
    "iterations", "wall_time_s", "best_epoch", "best_val_dice_pos", "final_train_loss",
    "final_val_loss", "epochs_run", "stopped_early", "peak_gpu_memory_mb", "peak_rss_mb",
    "device", "n_train", "n_val", "torch_version", "monai_version", "gpu_name",
    "throughput_images_per_s", "amp_dtype", "resumed_from_epoch", "num_workers", "deterministic",
}


def tiny_dataset(root, n_images=12, size=32):
    """Synthetic images plus a split.csv with lesion-positive and lesion-free images in val/test."""
    manifest = generate_dataset(
        root / "data", **synthetic_settings(n_images=n_images, image_size=size, seed=1)
    )
    frame = read_manifest(manifest)
    positive = [bool(read_mask(path).array.any()) for path in frame["mask"]]
    split = pd.DataFrame(
        {"image_id": frame["image_id"], "subject": frame["subject"], "lesion_positive": positive}
    )
    split["split"] = "train"
    for subset in ("val", "test"):
        for flag in (True, False):
            index = split.index[(split["split"] == "train") & (split["lesion_positive"] == flag)][0]
            split.loc[index, "split"] = subset
    split_path = root / "split.csv"
    split[["image_id", "subject", "split", "lesion_positive"]].to_csv(split_path, index=False)
    return manifest, split_path, split


def tiny_settings(**train_overrides):
    settings = {
        "model": {
            "network": "UNet", "spatial_dims": 2,
            "kwargs": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
            "presence_head": False,
        },
        "train": {
            "epochs": 2, "batch_size": 4, "learning_rate": 0.01, "weight_decay": 1e-4,
            "scheduler": "onecycle", "loss": "DiceCE", "positive_oversampling": 0.5,
            "augment": {"flip": True, "rotate90": True, "intensity": True},
            "early_stopping_patience": None, "seed": 0, "patch_size": None, "device": "cpu",
            "num_workers": 0, "batch_dice": False, "presence_loss_weight": 0.5,
        },
    }
    settings["train"].update(train_overrides)
    return settings


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    manifest, split_path, split = tiny_dataset(root)
    summary = train.run_train(manifest, split_path, tiny_settings(epochs=3), root / "out")
    return root / "out", manifest, split_path, split, summary


def test_training_writes_every_artifact_with_the_contract_columns(trained):
    out, _, _, split, summary = trained
    epochs = pd.read_csv(out / "metrics_by_epoch.csv")
    assert list(epochs.columns) == train.EPOCH_COLUMNS
    assert epochs["epoch"].tolist() == [1, 2, 3]
    steps = pd.read_csv(out / "lr_by_step.csv")
    assert list(steps.columns) == ["step", "epoch", "lr", "loss"]
    # The training-report stage draws the curves: a plot edit must never retrain a model.
    assert not list(out.glob("*.png"))
    written = artifacts.read_json(out / "train_summary.json")
    assert SUMMARY_KEYS <= set(written)
    assert written["n_train"] == int((split["split"] == "train").sum())
    assert written["n_val"] == 2 and written["device"] == "cpu"
    assert written["peak_gpu_memory_mb"] is None and written["peak_rss_mb"] > 0
    assert written["epochs_run"] == 3 and written["stopped_early"] is False
    assert summary["iterations"] == len(steps)
    # On CPU: full precision, no GPU, deterministic, and a fresh (not resumed) run.
    assert written["gpu_name"] is None and written["amp_dtype"] is None
    assert written["deterministic"] is True and written["resumed_from_epoch"] is None
    assert written["num_workers"] == 0 and written["throughput_images_per_s"] > 0
    assert not (out / RESUME_DIR).exists()
    # The settings that trained the model, which the training report's collapse causes quote.
    assert written["train_settings"] == tiny_settings(epochs=3)["train"]


def test_lr_schedule_has_one_row_per_optimizer_step(trained):
    out, _, _, split, _ = trained
    steps = pd.read_csv(out / "lr_by_step.csv")
    batches_per_epoch = math.ceil(int((split["split"] == "train").sum()) / 4)
    assert len(steps) == 3 * batches_per_epoch
    assert steps["step"].tolist() == list(range(1, len(steps) + 1))
    assert steps.groupby("epoch").size().tolist() == [batches_per_epoch] * 3
    # OneCycle rises to the peak learning rate and then anneals far below it.
    assert steps["lr"].max() == pytest.approx(0.01, rel=0.05)
    assert steps["lr"].iloc[-1] < steps["lr"].max() / 100


def test_saved_checkpoint_is_the_best_validation_epoch_and_reproduces_its_dice(trained):
    out, manifest, split_path, split, summary = trained
    epochs = pd.read_csv(out / "metrics_by_epoch.csv")
    best_row = int(epochs["val_dice"].idxmax())
    assert summary["best_epoch"] == epochs.loc[best_row, "epoch"]
    assert summary["best_val_dice_pos"] == pytest.approx(epochs.loc[best_row, "val_dice"])
    model, checkpoint = load_model(out / "model.pt", torch.device("cpu"))
    assert set(checkpoint) >= {
        "state_dict", "model_settings", "in_channels", "patch_size", "best_epoch", "spatial_dims",
    }
    assert checkpoint["best_epoch"] == summary["best_epoch"] and checkpoint["in_channels"] == 3
    ids, images, masks = subsets.load_subset(
        read_manifest(manifest), pd.read_csv(split_path, dtype=str), "val"
    )
    sw_overlap = complete_run_section("infer", {})["sw_overlap"]
    probs = predict_probabilities(model, images, ["identity"], checkpoint["roi_size"], 4, "cpu", sw_overlap)
    dice = [
        2 * ((p >= 0.5) & m).sum() / ((p >= 0.5).sum() + m.sum())
        for p, m in zip(probs, masks, strict=True)
        if m.any()
    ]
    assert np.mean(dice) == pytest.approx(summary["best_val_dice_pos"], abs=1e-6)


def test_training_never_loads_the_test_split(tmp_path, monkeypatch):
    manifest, split_path, _ = tiny_dataset(tmp_path)
    requested = []
    original = subsets.load_subset

    def recording(manifest_df, split_df, subset, **options):
        requested.append(subset)
        return original(manifest_df, split_df, subset, **options)

    monkeypatch.setattr(subsets, "load_subset", recording)
    train.run_train(manifest, split_path, tiny_settings(epochs=1), tmp_path / "out")
    assert sorted(requested) == ["train", "val"]


def test_early_stopping_keeps_the_best_epoch_after_patience_runs_out(tmp_path, monkeypatch):
    manifest, split_path, _ = tiny_dataset(tmp_path)
    scripted = iter([0.5, 0.6, 0.4, 0.3, 0.7, 0.8])

    def fake_validate(*args, **kwargs):
        return {"loss": 1.0, "dice": next(scripted), "iou": 0.1, "pearson": 0.1}

    monkeypatch.setattr(epoch_loop, "validate", fake_validate)
    settings = tiny_settings(epochs=6, early_stopping_patience=2)
    summary = train.run_train(manifest, split_path, settings, tmp_path / "out")
    assert summary["best_epoch"] == 2 and summary["best_val_dice_pos"] == 0.6
    assert summary["epochs_run"] == 4 and summary["stopped_early"] is True
    assert len(pd.read_csv(tmp_path / "out" / "metrics_by_epoch.csv")) == 4


def test_same_seed_gives_the_same_losses(tmp_path):
    manifest, split_path, _ = tiny_dataset(tmp_path)
    settings = tiny_settings(epochs=1, scheduler="cosine")
    train.run_train(manifest, split_path, settings, tmp_path / "a")
    train.run_train(manifest, split_path, settings, tmp_path / "b")
    a = pd.read_csv(tmp_path / "a" / "lr_by_step.csv")
    b = pd.read_csv(tmp_path / "b" / "lr_by_step.csv")
    pd.testing.assert_frame_equal(a, b)


def test_same_seed_and_worker_count_give_the_same_losses_with_worker_processes(tmp_path):
    manifest, split_path, _ = tiny_dataset(tmp_path)
    settings = tiny_settings(epochs=1, num_workers=1)
    summary = train.run_train(manifest, split_path, settings, tmp_path / "a")
    train.run_train(manifest, split_path, settings, tmp_path / "b")
    assert summary["num_workers"] == 1
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "lr_by_step.csv"), pd.read_csv(tmp_path / "b" / "lr_by_step.csv")
    )


def test_null_num_workers_uses_the_jobs_cpus_less_one(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert resolve_num_workers(None) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert resolve_num_workers(None) == 0
    assert resolve_num_workers(2) == 2


def test_negative_num_workers_names_train_num_workers(tmp_path):
    # Settings are checked before any file is read.
    with pytest.raises(LesionflowError, match=r"train\.num_workers"):
        train.run_train("manifest.csv", "split.csv", tiny_settings(num_workers=-1), tmp_path / "out")


def test_patch_training_stores_the_patch_as_the_inference_roi(tmp_path):
    manifest, split_path, _ = tiny_dataset(tmp_path)
    settings = tiny_settings(epochs=1, patch_size=[16, 16], scheduler="none")
    train.run_train(manifest, split_path, settings, tmp_path / "out")
    checkpoint = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    assert checkpoint["patch_size"] == [16, 16] and checkpoint["roi_size"] == [16, 16]
    steps = pd.read_csv(tmp_path / "out" / "lr_by_step.csv")
    assert steps["lr"].nunique() == 1


def test_validation_without_lesion_positive_images_is_a_user_error(tmp_path):
    manifest, split_path, split = tiny_dataset(tmp_path)
    split.loc[(split["split"] == "val") & split["lesion_positive"], "split"] = "train"
    split.to_csv(split_path, index=False)
    with pytest.raises(LesionflowError, match="val"):
        train.run_train(manifest, split_path, tiny_settings(epochs=1), tmp_path / "out")


def test_patch_size_of_the_wrong_dimension_names_train_patch_size(tmp_path):
    manifest, split_path, _ = tiny_dataset(tmp_path)
    with pytest.raises(LesionflowError, match=r"train\.patch_size"):
        train.run_train(
            manifest, split_path, tiny_settings(patch_size=[16, 16, 16]), tmp_path / "out"
        )
