"""Tests of lesionflow.model.train: artifacts and their columns, checkpoint choice on val, sampling."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lesionflow.data import dataset
from lesionflow.data.synthetic import generate_dataset
from lesionflow.model import train
from lesionflow.model.infer import load_model
from lesionflow.model.tta import predict_probabilities
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError

SUMMARY_KEYS = {
    "iterations", "wall_time_s", "best_epoch", "best_val_dice_pos", "final_train_loss",
    "final_val_loss", "epochs_run", "stopped_early", "peak_gpu_memory_mb", "peak_rss_mb",
    "device", "n_train", "n_val", "torch_version", "monai_version", "gpu_name",
    "throughput_images_per_s", "amp_dtype", "resumed_from_epoch", "num_workers", "deterministic",
}


def tiny_dataset(root, n_images=12, size=32):
    """Synthetic images plus a split.csv with lesion-positive and lesion-free images in val/test."""
    manifest = generate_dataset(root / "data", n_images=n_images, image_size=size, seed=1)
    frame = dataset.read_manifest(manifest)
    positive = [bool(dataset.load_mask(path).any()) for path in frame["mask"]]
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
        },
        "train": {
            "epochs": 2, "batch_size": 4, "learning_rate": 0.01, "weight_decay": 1e-4,
            "scheduler": "onecycle", "loss": "DiceCE", "positive_oversampling": 0.5,
            "augment": {"flip": True, "rotate90": True, "intensity": True},
            "early_stopping_patience": None, "seed": 0, "patch_size": None, "device": "cpu",
            "num_workers": 0,
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
    assert (out / "training_curves.png").stat().st_size > 10_000
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
    assert not (out / train.RESUME_DIR).exists()


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
    ids, images, masks = dataset.load_subset(
        dataset.read_manifest(manifest), pd.read_csv(split_path, dtype=str), "val"
    )
    probs = predict_probabilities(model, images, ["identity"], checkpoint["roi_size"], 4, "cpu")
    dice = [
        2 * ((p >= 0.5) & m).sum() / ((p >= 0.5).sum() + m.sum())
        for p, m in zip(probs, masks, strict=True)
        if m.any()
    ]
    assert np.mean(dice) == pytest.approx(summary["best_val_dice_pos"], abs=1e-6)


def test_training_never_loads_the_test_split(tmp_path, monkeypatch):
    manifest, split_path, _ = tiny_dataset(tmp_path)
    requested = []
    original = dataset.load_subset

    def recording(manifest_df, split_df, subset):
        requested.append(subset)
        return original(manifest_df, split_df, subset)

    monkeypatch.setattr(dataset, "load_subset", recording)
    train.run_train(manifest, split_path, tiny_settings(epochs=1), tmp_path / "out")
    assert sorted(requested) == ["train", "val"]


def test_early_stopping_keeps_the_best_epoch_after_patience_runs_out(tmp_path, monkeypatch):
    manifest, split_path, _ = tiny_dataset(tmp_path)
    scripted = iter([0.5, 0.6, 0.4, 0.3, 0.7, 0.8])

    def fake_validate(*args, **kwargs):
        return {"loss": 1.0, "dice": next(scripted), "iou": 0.1, "pearson": 0.1}

    monkeypatch.setattr(train, "_validate", fake_validate)
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
    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert train.resolve_num_workers(None) == 3
    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert train.resolve_num_workers(None) == 0
    assert train.resolve_num_workers(2) == 2


def test_cpu_training_uses_no_mixed_precision():
    assert train.amp_dtype_for(torch.device("cpu")) is None


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


def test_oversampling_puts_the_requested_share_of_positives_in_every_batch():
    positive = [True] * 3 + [False] * 17
    sampler = train.LesionBatchSampler(positive, batch_size=4, positive_fraction=0.5, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    assert all(len(batch) == 4 and sum(positive[i] for i in batch) == 2 for batch in batches)


def test_zero_oversampling_is_plain_shuffling_of_every_image_once():
    positive = [True] * 3 + [False] * 8
    batches = list(train.LesionBatchSampler(positive, 4, 0.0, seed=0))
    assert [len(b) for b in batches] == [4, 4, 3]
    assert sorted(i for batch in batches for i in batch) == list(range(11))


def test_batch_scores_match_hand_computed_dice_iou_and_skip_lesion_free_images():
    target = torch.zeros((2, 1, 4, 4))
    target[0, 0, :2, :2] = 1  # 4 lesion pixels; image 1 is lesion-free
    probs = torch.zeros((2, 1, 4, 4))
    probs[0, 0, :2, :1] = 0.9  # 2 of them found
    probs[0, 0, 3, 3] = 0.8  # plus one false positive
    scores = train.batch_scores(probs, target)
    assert scores["dice"].tolist() == pytest.approx([2 * 2 / (3 + 4)])
    assert scores["iou"].tolist() == pytest.approx([2 / 5])
    expected_r = np.corrcoef(probs[0].flatten().numpy(), target[0].flatten().numpy())[0, 1]
    assert scores["pearson"].tolist() == pytest.approx([expected_r], abs=1e-5)


def test_batch_scores_agree_with_lesionflow_metrics_on_random_maps():
    from lesionflow.evaluation import metrics

    rng = np.random.default_rng(0)
    probs = rng.random((6, 1, 9, 7)).astype(np.float32)
    target = rng.random((6, 1, 9, 7)) > 0.7
    target[2] = False  # a lesion-free image is left out
    scores = train.batch_scores(torch.from_numpy(probs), torch.from_numpy(target).float())
    keep = target.reshape(6, -1).any(axis=1)
    pred = probs[:, 0] >= 0.5
    np.testing.assert_allclose(scores["dice"], metrics.dice_per_image(pred, target[:, 0])[keep])
    np.testing.assert_allclose(scores["iou"], metrics.iou_per_image(pred, target[:, 0])[keep])
    np.testing.assert_allclose(
        scores["pearson"], metrics.pearson_per_image(probs[:, 0], target[:, 0])[keep], atol=1e-5
    )
