"""Tests of lesionflow.model.score_train: artifacts, checkpoint on val sRMSE, determinism, resume."""

import math
import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

from lesionflow.model import score_epoch, train
from lesionflow.model.checkpoint import RESUME_DIR
from lesionflow.model.interrupt import TrainingInterrupted
from lesionflow.model.score_epoch import ShuffledBatches
from lesionflow.model.score_infer import load_regressor
from lesionflow.model.score_train import EPOCH_COLUMNS, run_score_train
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError

SPEC_EPOCH_COLUMNS = [
    "epoch", "train_loss", "val_loss", "train_rmse", "val_rmse", "val_srmse", "val_mae",
    "val_pearson", "lr", "seconds",
]
SUMMARY_KEYS = {
    "task", "iterations", "wall_time_s", "best_epoch", "best_val_srmse", "final_train_loss",
    "final_val_loss", "epochs_run", "stopped_early", "resumed_from_epoch", "throughput_images_per_s",
    "peak_gpu_memory_mb", "peak_rss_mb", "device", "gpu_name", "amp_dtype", "deterministic",
    "num_workers", "n_train", "n_val", "val_score_std", "roi_size", "sample_weights",
    "torch_version", "monai_version",
}
SPLITS = ["train"] * 7 + ["val"] * 3 + ["test"] * 2
SETTINGS = {
    "task": "regression",
    "model": {"network": "ResNet10", "spatial_dims": 3, "kwargs": {"widen_factor": 0.125}},
    "train": {
        "epochs": 3, "batch_size": 4, "learning_rate": 0.01, "weight_decay": 1e-4,
        "scheduler": "onecycle", "loss": "MSE", "sample_weights": "inverse_frequency",
        "weight_bins": [2, 5, 10], "augment": {"flip": True, "intensity": True},
        "early_stopping_patience": None, "seed": 0, "patch_size": None, "device": "cpu",
        "num_workers": 0,
    },
}


def settings_with(**train_overrides):
    return {**SETTINGS, "train": {**SETTINGS["train"], **train_overrides}}


def bright_voxel_volumes(root, shapes=None, seed=0):
    """12 volumes of 16^3 (or ``shapes``) whose score is their number of bright voxels / 10.

    Writes manifest.csv (the preprocess stage's items) and split.csv: 7 train, 3 val, 2 test.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes = shapes or [(16, 16, 16)] * len(SPLITS)
    rows = []
    for i, shape in enumerate(shapes):
        volume = np.zeros((1, *shape), np.float32)
        bright = int(rng.integers(0, 120))
        volume.reshape(-1)[rng.choice(volume.size, bright, replace=False)] = 1.0
        np.save(root / f"v{i}.npy", volume)
        np.save(root / f"m{i}.npy", np.zeros(shape, np.uint8))
        rows.append({
            "image_id": f"v{i}", "subject": f"s{i}", "image": f"v{i}.npy", "mask": f"m{i}.npy",
            "source_image_id": f"v{i}", "score": bright / 10, "visit": "1",
        })
    manifest = pd.DataFrame(rows)
    manifest.to_csv(root / "manifest.csv", index=False)
    split = manifest[["image_id", "subject", "source_image_id"]].assign(split=SPLITS)
    split.to_csv(root / "split.csv", index=False)
    return root / "manifest.csv", root / "split.csv"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return bright_voxel_volumes(tmp_path_factory.mktemp("score_data"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("score_train") / "out"
    summary = train.run_train(*data, SETTINGS, out)
    return out, summary


def assert_same_weights(out, reference):
    weights = torch.load(out / "model.pt", weights_only=True)
    expected = torch.load(reference / "model.pt", weights_only=True)
    assert weights["best_epoch"] == expected["best_epoch"]
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(weights["state_dict"][name], tensor), name
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "metrics_by_epoch.csv").drop(columns="seconds"),
        pd.read_csv(reference / "metrics_by_epoch.csv").drop(columns="seconds"),
        check_exact=True,
    )


def test_regression_training_writes_the_four_artifacts_with_the_spec_columns(trained):
    out, summary = trained
    assert EPOCH_COLUMNS == SPEC_EPOCH_COLUMNS
    epochs = pd.read_csv(out / "metrics_by_epoch.csv")
    assert list(epochs.columns) == SPEC_EPOCH_COLUMNS and epochs["epoch"].tolist() == [1, 2, 3]
    steps = pd.read_csv(out / "lr_by_step.csv")
    assert list(steps.columns) == ["step", "epoch", "lr", "loss"]
    # 7 training volumes in batches of at most 4: two steps per epoch.
    assert steps["step"].tolist() == list(range(1, 7)) and steps["epoch"].tolist() == [1, 1, 2, 2, 3, 3]
    assert steps["lr"].max() == pytest.approx(0.01, rel=0.05)
    written = artifacts.read_json(out / "train_summary.json")
    assert SUMMARY_KEYS <= set(written) and written["task"] == "regression"
    assert written["n_train"] == 7 and written["n_val"] == 3 and written["roi_size"] == [16, 16, 16]
    assert written["epochs_run"] == 3 and written["stopped_early"] is False
    assert written["deterministic"] is True and written["resumed_from_epoch"] is None
    assert written["sample_weights"]["method"] == "inverse_frequency"
    assert sum(row["n"] for row in written["sample_weights"]["bins"]) == 7
    checkpoint = torch.load(out / "model.pt", weights_only=True)
    assert checkpoint["task"] == "regression" and checkpoint["out_channels"] == 1
    assert checkpoint["in_channels"] == 1 and checkpoint["spatial_dims"] == 3
    assert checkpoint["roi_size"] == [16, 16, 16] and checkpoint["patch_size"] is None
    assert sorted(p.name for p in out.iterdir()) == [
        "lr_by_step.csv", "metrics_by_epoch.csv", "model.pt", "train_summary.json",
    ]
    assert not (out / RESUME_DIR).exists() and summary["iterations"] == 6


def test_checkpoint_is_the_epoch_of_lowest_val_srmse_and_reproduces_it(trained, data):
    out, summary = trained
    epochs = pd.read_csv(out / "metrics_by_epoch.csv")
    best = epochs.loc[epochs["val_srmse"].idxmin()]
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best_val_srmse"] == pytest.approx(best["val_srmse"])
    model, checkpoint = load_regressor(out / "model.pt", torch.device("cpu"))
    assert checkpoint["best_epoch"] == summary["best_epoch"]
    manifest, split = (pd.read_csv(path, dtype={"image_id": str}) for path in data)
    val = manifest[split["split"] == "val"]
    volumes = np.stack([np.load(data[0].parent / name) for name in val["image"]])
    with torch.no_grad():
        predicted = model(torch.from_numpy(volumes)).numpy().ravel()
    true = val["score"].to_numpy()
    rmse = np.sqrt(np.mean((predicted - true) ** 2))
    assert rmse / np.std(true) == pytest.approx(summary["best_val_srmse"], rel=1e-5)
    assert np.mean(np.abs(predicted - true)) == pytest.approx(best["val_mae"], rel=1e-5)


def test_same_settings_give_bitwise_the_same_weights(trained, data, tmp_path):
    run_score_train(*data, SETTINGS, tmp_path / "again")
    assert_same_weights(tmp_path / "again", trained[0])


def test_sigterm_keeps_the_last_epoch_and_the_resumed_run_ends_bitwise_equal(
    trained, data, tmp_path, monkeypatch, capfd
):
    validate, calls = score_epoch.validate, []

    def validate_then_signal(*args, **kwargs):
        result = validate(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(score_epoch, "validate", validate_then_signal)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_score_train(*data, SETTINGS, tmp_path / "out")
    assert stopped.value.epoch == 2 and stopped.value.exit_code == 143
    assert not (tmp_path / "out" / "model.pt").exists()
    monkeypatch.undo()
    capfd.readouterr()
    summary = run_score_train(*data, SETTINGS, tmp_path / "out")
    assert "resuming from checkpoint at epoch 2 of 3" in capfd.readouterr().err
    assert summary["resumed_from_epoch"] == 2
    assert_same_weights(tmp_path / "out", trained[0])
    assert not (tmp_path / "out" / RESUME_DIR).exists()


def test_an_item_missing_its_score_names_the_manifest_and_the_image(tmp_path):
    manifest, split = bright_voxel_volumes(tmp_path)
    frame = pd.read_csv(manifest)
    frame.loc[8, "score"] = np.nan  # a val item
    frame.to_csv(manifest, index=False)
    with pytest.raises(LesionflowError, match=rf"{manifest}.*image v8 has no valid score"):
        run_score_train(manifest, split, SETTINGS, tmp_path / "out")
    frame = frame.drop(columns="score")
    frame.to_csv(manifest, index=False)
    with pytest.raises(LesionflowError, match=r"no 'score' column"):
        run_score_train(manifest, split, SETTINGS, tmp_path / "out")


def test_a_score_only_items_manifest_trains_to_the_same_weights_as_one_with_masks(trained, data, tmp_path):
    # The volumes alone, without their mask files, and a manifest without a mask column.
    manifest = pd.read_csv(data[0], dtype={"image_id": str})
    for name in manifest["image"]:
        (tmp_path / name).write_bytes((data[0].parent / name).read_bytes())
    manifest.drop(columns="mask").to_csv(tmp_path / "manifest.csv", index=False)
    summary = train.run_train(tmp_path / "manifest.csv", data[1], SETTINGS, tmp_path / "out")
    assert summary["task"] == "regression" and summary["n_train"] == 7 and summary["n_val"] == 3
    assert not any(tmp_path.glob("m*.npy"))
    assert_same_weights(tmp_path / "out", trained[0])


def test_a_segmentation_run_on_items_without_masks_stops_before_training_saying_so(data, tmp_path):
    pd.read_csv(data[0]).drop(columns="mask").to_csv(data[0].parent / "no_masks.csv", index=False)
    settings = {
        "task": "segmentation",
        "model": complete_run_section("model", {"spatial_dims": 3}),
        "train": complete_run_section("train", {"device": "cpu", "num_workers": 0}),
    }
    refused = r"no_masks\.csv: the data have no masks .* task segmentation needs a mask column"
    with pytest.raises(LesionflowError, match=refused):
        train.run_train(data[0].parent / "no_masks.csv", data[1], settings, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_training_never_reads_a_test_image_or_score(tmp_path):
    manifest, split = bright_voxel_volumes(tmp_path)
    frame = pd.read_csv(manifest)
    for index in np.flatnonzero(np.array(SPLITS) == "test"):
        (tmp_path / frame.loc[index, "image"]).write_bytes(b"not an array")
        frame.loc[index, "score"] = np.nan
    frame.to_csv(manifest, index=False)
    summary = run_score_train(manifest, split, settings_with(epochs=1), tmp_path / "out")
    assert summary["n_train"] == 7 and summary["n_val"] == 3


def test_early_stopping_keeps_the_epoch_of_lowest_val_srmse(data, tmp_path, monkeypatch):
    scripted = iter([3.0, 2.0, 2.5, 2.4, 1.0, 0.5])

    def fake_validate(*args, **kwargs):
        return {"loss": 1.0, "rmse": 1.0, "srmse": next(scripted), "mae": 1.0, "pearson_r": 0.5}

    monkeypatch.setattr(score_epoch, "validate", fake_validate)
    summary = run_score_train(
        *data, settings_with(epochs=6, early_stopping_patience=2), tmp_path / "out"
    )
    assert summary["best_epoch"] == 2 and summary["best_val_srmse"] == 2.0
    assert summary["epochs_run"] == 4 and summary["stopped_early"] is True
    assert torch.load(tmp_path / "out" / "model.pt", weights_only=True)["best_epoch"] == 2


def test_constant_validation_scores_are_an_error_naming_the_split(tmp_path):
    manifest, split = bright_voxel_volumes(tmp_path)
    frame = pd.read_csv(manifest)
    frame.loc[np.array(SPLITS) == "val", "score"] = 1.5
    frame.to_csv(manifest, index=False)
    with pytest.raises(LesionflowError, match=rf"{split}.*'val'.*sRMSE"):
        run_score_train(manifest, split, SETTINGS, tmp_path / "out")


def test_volumes_of_several_shapes_need_a_patch_size_and_are_fitted_to_it(tmp_path):
    shapes = [(20, 14, 16)] + [(16, 16, 16)] * 11
    manifest, split = bright_voxel_volumes(tmp_path, shapes=shapes)
    with pytest.raises(LesionflowError, match=r"train\.patch_size"):
        run_score_train(manifest, split, settings_with(epochs=1), tmp_path / "out")
    summary = run_score_train(
        manifest, split, settings_with(epochs=1, patch_size=[16, 12, 16]), tmp_path / "out"
    )
    assert summary["roi_size"] == [16, 12, 16]
    assert torch.load(tmp_path / "out" / "model.pt", weights_only=True)["roi_size"] == [16, 12, 16]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"augment": {"flip": True, "intensity": True, "rotate90": True}}, "train.augment.rotate90"),
        ({"patch_size": [16, 16]}, "train.patch_size"),
        ({"loss": "DiceCE"}, "train.loss"),
        ({"sample_weights": "balanced"}, "train.sample_weights"),
        ({"num_workers": -1}, "train.num_workers"),
    ],
)
def test_bad_regression_settings_name_their_key_before_any_file_is_read(overrides, key, tmp_path):
    with pytest.raises(LesionflowError, match=key.replace(".", r"\.")):
        run_score_train(
            tmp_path / "manifest.csv", tmp_path / "split.csv", settings_with(**overrides), tmp_path
        )


def test_shuffled_batches_hold_every_index_once_in_batches_of_near_equal_size():
    sampler = ShuffledBatches(9, 4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(9 / 4)
    assert sorted(len(batch) for batch in batches) == [3, 3, 3]
    assert sorted(i for batch in batches for i in batch) == list(range(9))
    sampler.reseed(5)
    first = list(sampler)
    sampler.reseed(5)
    assert list(sampler) == first
