"""Tests of resumable training: a killed, signalled or rerun training ends as an uninterrupted one.

Equality is exact on CPU with num_workers 0: model.pt weights (torch.equal), every metric of
metrics_by_epoch.csv but the wall-clock seconds, lr_by_step.csv, and train_summary.json but its
timings and memory. Subprocesses run scripts/train.py as the workflow does, with the thread count
of this process, so their floating-point sums match the in-process reference bit for bit.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from schema_settings import synthetic_settings
from tiny_data import split_with_each_class

from lesionflow.data.manifest import read_manifest
from lesionflow.data.synthetic import generate_dataset
from lesionflow.io.readers import read_mask
from lesionflow.model import epoch as epoch_loop
from lesionflow.model import train
from lesionflow.model.checkpoint import CHECKPOINT_FILE, RESUME_DIR, training_fingerprint
from lesionflow.model.interrupt import TrainingInterrupted
from lesionflow.pipeline import artifacts

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train.py"
EPOCHS = 4
# What may differ between an interrupted and an uninterrupted run.
VOLATILE_SUMMARY_KEYS = {
    "wall_time_s", "peak_rss_mb", "peak_gpu_memory_mb", "throughput_images_per_s",
    "resumed_from_epoch",
}
SETTINGS = {
    "model": {
        "network": "UNet", "spatial_dims": 2,
        "kwargs": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
        "presence_head": False,
    },
    "train": {
        "epochs": EPOCHS, "batch_size": 4, "learning_rate": 0.01, "weight_decay": 1e-4,
        "scheduler": "onecycle", "loss": "DiceCE", "positive_oversampling": 0.5,
        "augment": {"flip": True, "rotate90": True, "intensity": True},
        "early_stopping_patience": None, "seed": 0, "patch_size": None, "device": "cpu",
        "num_workers": 0, "batch_dice": False, "presence_loss_weight": 0.5,
    },
}


def settings_with(**train_overrides):
    return {"model": SETTINGS["model"], "train": {**SETTINGS["train"], **train_overrides}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 32x32 synthetic dataset; val holds a lesion-positive and a lesion-free image."""
    root = tmp_path_factory.mktemp("resume_data")
    manifest = generate_dataset(root / "data", **synthetic_settings(n_images=14, image_size=32, seed=3))
    split = split_with_each_class(manifest, {"val": (True, False), "test": (True, False)})
    split_path = root / "split.csv"
    split.to_csv(split_path, index=False)
    return manifest, split_path


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """Output folder of one uninterrupted training."""
    out = tmp_path_factory.mktemp("reference") / "out"
    train.run_train(*data, SETTINGS, out)
    return out


def checkpoint_path(out):
    return out / RESUME_DIR / CHECKPOINT_FILE


def start_training(data, out, log):
    """scripts/train.py in a subprocess, its output in ``log`` as in the workflow's job log."""
    manifest, split_path = data
    command = [
        sys.executable, str(SCRIPT), "--manifest", str(manifest), "--split", str(split_path),
        "--settings", json.dumps(SETTINGS), "--out", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    with open(log, "w") as handle:
        # Niced, so on a busy machine the polling test still sees each checkpoint in time.
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, preexec_fn=lambda: os.nice(10)
        )


def wait_for_checkpoint(process, path, epoch, timeout=180.0):
    """Poll until the checkpoint records ``epoch`` or later; return the epoch it records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"training ended with {process.returncode} before epoch {epoch}"
        with contextlib.suppress(FileNotFoundError):
            saved = torch.load(path, map_location="cpu", weights_only=True)["epoch"]
            if saved >= epoch:
                return saved
        time.sleep(0.02)
    process.kill()
    raise AssertionError(f"no checkpoint of epoch {epoch} within {timeout} s")


def assert_same_training(out, reference):
    """Bitwise-equal weights; equal metrics, schedule and summary except timings and memory."""
    weights = torch.load(out / "model.pt", weights_only=True)
    expected = torch.load(reference / "model.pt", weights_only=True)
    assert weights["best_epoch"] == expected["best_epoch"]
    assert weights["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(weights["state_dict"][name], tensor), name
    for table, volatile in (("metrics_by_epoch.csv", ["seconds"]), ("lr_by_step.csv", [])):
        pd.testing.assert_frame_equal(
            pd.read_csv(out / table).drop(columns=volatile),
            pd.read_csv(reference / table).drop(columns=volatile),
            check_exact=True,
        )
    summary, reference_summary = (
        {k: v for k, v in artifacts.read_json(folder / "train_summary.json").items()
         if k not in VOLATILE_SUMMARY_KEYS}
        for folder in (out, reference)
    )
    assert summary == reference_summary


def interrupt_after_epoch(monkeypatch, epoch, signum=signal.SIGTERM):
    """Make the in-process training send itself ``signum`` once epoch ``epoch`` is validated."""
    validate = epoch_loop.validate
    calls = []

    def validate_then_signal(*args, **kwargs):
        result = validate(*args, **kwargs)
        calls.append(1)
        if len(calls) == epoch:
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(epoch_loop, "validate", validate_then_signal)


def test_uninterrupted_training_removes_its_resume_folder(reference):
    assert (reference / "model.pt").exists()
    assert not (reference / RESUME_DIR).exists()
    assert artifacts.read_json(reference / "train_summary.json")["resumed_from_epoch"] is None


def test_rerun_after_sigkill_resumes_and_ends_bitwise_equal_to_an_uninterrupted_run(
    data, reference, tmp_path
):
    out = tmp_path / "out"
    process = start_training(data, out, tmp_path / "first.log")
    killed_at = wait_for_checkpoint(process, checkpoint_path(out), 2)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (out / "model.pt").exists(), "training finished before it could be killed"
    saved = torch.load(checkpoint_path(out), weights_only=True)["epoch"]
    assert killed_at <= saved < EPOCHS

    rerun = start_training(data, out, tmp_path / "second.log")
    assert rerun.wait(timeout=300) == 0
    log = (tmp_path / "second.log").read_text()
    assert f"resuming from checkpoint at epoch {saved} of {EPOCHS}" in log
    assert_same_training(out, reference)
    assert artifacts.read_json(out / "train_summary.json")["resumed_from_epoch"] == saved
    assert not (out / RESUME_DIR).exists()


def test_sigterm_exits_143_keeping_the_last_epoch_and_the_rerun_ends_equal(
    data, reference, tmp_path, capfd
):
    out = tmp_path / "out"
    process = start_training(data, out, tmp_path / "first.log")
    wait_for_checkpoint(process, checkpoint_path(out), 1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM == 143
    checkpoint = torch.load(checkpoint_path(out), weights_only=True)
    saved = checkpoint["epoch"]
    assert {"fingerprint", "model", "optimizer", "scheduler", "scaler", "rng", "progress"} <= set(checkpoint)
    assert set(checkpoint["rng"]) == {"python", "numpy", "torch", "cuda", "sampler", "transforms"}
    assert len(checkpoint["progress"]["epoch_rows"]) == saved >= checkpoint["progress"]["best_epoch"] >= 1
    log = (tmp_path / "first.log").read_text()
    assert f"received SIGTERM: checkpoint of epoch {saved} kept; exiting so a retry resumes" in log
    assert "Traceback" not in log
    assert not any((out / name).exists() for name in ("model.pt", "train_summary.json"))

    capfd.readouterr()
    summary = train.run_train(*data, SETTINGS, out)
    assert f"resuming from checkpoint at epoch {saved} of {EPOCHS}" in capfd.readouterr().err
    assert summary["resumed_from_epoch"] == saved
    assert_same_training(out, reference)


def test_best_weights_chosen_before_an_interruption_survive_the_resumption(data, tmp_path, monkeypatch):
    # Scripted validation makes epoch 1 the best, so model.pt must be the checkpoint's best weights.
    def scripted(values):
        scores = iter(values)
        return lambda *args, **kwargs: {"loss": 1.0, "dice": next(scores), "iou": 0.1, "pearson": 0.1}

    monkeypatch.setattr(epoch_loop, "validate", scripted([0.6, 0.5, 0.4, 0.3]))
    train.run_train(*data, SETTINGS, tmp_path / "reference")

    monkeypatch.setattr(epoch_loop, "validate", scripted([0.6, 0.5, 0.4, 0.3]))
    interrupt_after_epoch(monkeypatch, 2, signal.SIGUSR1)
    with pytest.raises(TrainingInterrupted) as stopped:
        train.run_train(*data, SETTINGS, tmp_path / "out")
    assert stopped.value.epoch == 2 and stopped.value.exit_code == 128 + signal.SIGUSR1
    # The rerun validates epochs 3 and 4 only, so the script goes on where it stopped.
    monkeypatch.setattr(epoch_loop, "validate", scripted([0.4, 0.3]))
    summary = train.run_train(*data, SETTINGS, tmp_path / "out")
    assert summary["best_epoch"] == 1 and summary["resumed_from_epoch"] == 2
    assert_same_training(tmp_path / "out", tmp_path / "reference")


def test_signal_after_the_last_epoch_leaves_a_rerun_only_the_artifacts_to_write(
    data, reference, tmp_path, monkeypatch, capfd
):
    out = tmp_path / "out"
    interrupt_after_epoch(monkeypatch, EPOCHS)
    with pytest.raises(TrainingInterrupted) as stopped:
        train.run_train(*data, SETTINGS, out)
    assert stopped.value.epoch == EPOCHS and not (out / "model.pt").exists()
    monkeypatch.undo()

    capfd.readouterr()
    summary = train.run_train(*data, SETTINGS, out)
    err = capfd.readouterr().err
    assert f"resuming from checkpoint at epoch {EPOCHS} of {EPOCHS}" in err
    assert "epoch 1/" not in err and summary["resumed_from_epoch"] == EPOCHS
    assert_same_training(out, reference)


def test_checkpoint_of_other_settings_is_ignored_and_training_starts_afresh(
    data, reference, tmp_path, monkeypatch, capfd
):
    out = tmp_path / "out"
    interrupt_after_epoch(monkeypatch, 1)
    with pytest.raises(TrainingInterrupted):
        train.run_train(*data, settings_with(learning_rate=0.02), out)
    assert torch.load(checkpoint_path(out), weights_only=True)["epoch"] == 1
    monkeypatch.undo()

    capfd.readouterr()
    summary = train.run_train(*data, SETTINGS, out)
    err = capfd.readouterr().err
    assert "it was written for other settings or data" in err and "starting afresh" in err
    assert "resuming" not in err and summary["resumed_from_epoch"] is None
    assert_same_training(out, reference)


def test_device_and_worker_count_do_not_change_the_fingerprint(data):
    images = [read_mask(path).array for path in read_manifest(data[0])["mask"][:2]]
    fingerprint = training_fingerprint(SETTINGS, [images])
    assert training_fingerprint(settings_with(device="cuda", num_workers=3), [images]) == fingerprint
    assert training_fingerprint(settings_with(seed=1), [images]) != fingerprint
    assert training_fingerprint(SETTINGS, [images[:1]]) != fingerprint


def test_truncated_checkpoint_is_reported_in_one_line_and_training_starts_afresh(
    data, reference, tmp_path, monkeypatch, capfd
):
    out = tmp_path / "out"
    interrupt_after_epoch(monkeypatch, 1)
    with pytest.raises(TrainingInterrupted):
        train.run_train(*data, SETTINGS, out)
    monkeypatch.undo()
    path = checkpoint_path(out)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    capfd.readouterr()
    summary = train.run_train(*data, SETTINGS, out)
    reports = [line for line in capfd.readouterr().err.splitlines() if str(path) in line]
    assert len(reports) == 1 and "cannot be read" in reports[0] and "starting afresh" in reports[0]
    assert summary["resumed_from_epoch"] is None
    assert_same_training(out, reference)
    assert not (out / RESUME_DIR).exists()
