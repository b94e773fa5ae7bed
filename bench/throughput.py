"""Benchmark: training and inference images/s of lesionflow vs. bare MONAI loops, and the cost of TTA.

It never writes into the repository except its JSON report (--out): data, model and maps live in a
temporary folder.

Everything runs in one process on the model and sizes of the demo's ``unet`` run
(config/config.yaml, resolved with ``resolve_config``: MONAI UNet, 128 x 128 RGB images trained
whole, batch 8, DiceCE, AdamW + OneCycle, flips / quarter turns / intensity jitter), on data made
by lesionflow's own generator (the data, split and preprocess stage functions, as the pipeline
runs them; --images sets how many). Both sides of every pair get the same torch threads
(--threads), the same in-memory arrays and a warm-up; each figure is the median of --repeats
timings, the two sides interleaved.

- training: lesionflow's ``train_epoch`` (the narrowest public function that runs one epoch on
  in-memory data, with its parts from ``build_training_parts``: lesion-oversampling sampler,
  MONAI loader and augmentations, per-batch scores) vs. a bare MONAI loop (the same network,
  DiceCELoss, AdamW + OneCycleLR, the same augmentations as plain MONAI transforms, a shuffling
  DataLoader of the same batch size; no lesionflow code in the loop). Also vs. the bare optimizer
  steps alone on ready batches (compute only, no loader), to show what the loader costs.
- inference: the infer stage function ``run_infer`` on the test split (model load, reading every
  preprocessed image, prediction, restoring and writing the maps included) vs. the bare forward
  pass of the same network at batch 8 on in-memory tensors under ``torch.no_grad``; and vs. MONAI's
  ``sliding_window_inference`` when the run predicts in windows (the demo's does not: its
  window is the whole image, so that reference is reported as not applicable).
- TTA: ``tta.predict_batch`` with k = 1, 2, 4, 8 transforms on a batch of 8 vs. k plain forward
  passes of that batch (2D has 7 distinct transforms; the 8th repeats hvflip as flip01).

    .venv/bin/python bench/throughput.py [--images 160] [--repeats 3] [--threads 2]
        [--out bench/out/throughput.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from monai.data import DataLoader, Dataset
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from lesionflow.data.dataset import run_data
from lesionflow.data.manifest import read_manifest
from lesionflow.data.preprocess import run_preprocess
from lesionflow.data.split import run_split
from lesionflow.data.subsets import load_subset, read_split
from lesionflow.model.checkpoint import seed_epoch
from lesionflow.model.epoch import EpochSetup, build_training_parts, train_epoch
from lesionflow.model.infer import run_infer
from lesionflow.model.networks import build_loss, build_network
from lesionflow.model.tta import get_transforms, predict_batch
from lesionflow.pipeline.config import resolve_config

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "config" / "config.yaml"
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "throughput.json"
RUN = "unet"
BARE_INFER_BATCH = 8
TTA_KS = (1, 2, 4, 8)
TTA_NAMES = ("identity", "hflip", "vflip", "hvflip", "rot90", "rot180", "rot270", "flip01")


# ---------------------------------------------------------------- data and settings


def demo_run(n_images: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The demo's data settings (``n_images`` of them), its split and its ``unet`` run, on the CPU."""
    config = resolve_config(yaml.safe_load(DEMO_CONFIG.read_text()))
    data = {**config.data, "synthetic": {**config.data["synthetic"], "n_images": n_images}}
    run = config.runs[RUN]
    run = {
        **run,
        "train": {**run["train"], "device": "cpu", "num_workers": 0},
        "infer": {**run["infer"], "device": "cpu"},
    }
    return data, config.split, run


def prepared_data(data: dict[str, Any], split: dict[str, Any], run: dict[str, Any], work: Path) -> Path:
    """Generate, split and preprocess the data as the pipeline's first stages do; the preprocess folder."""
    run_data(data, work / "data")
    run_split(work / "data" / "manifest.csv", split, work / "split")
    manifest = work / "data" / "manifest.csv"
    run_preprocess(manifest, work / "split" / "split.csv", run["preprocess"], work / "pre")
    return work / "pre"


def subset_arrays(prepared: Path, subset: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The preprocessed images ``(C, H, W)`` and masks of one subset, as the train stage loads them."""
    _, images, masks = load_subset(
        read_manifest(prepared / "manifest.csv"), read_split(prepared / "split.csv"), subset
    )
    return images, masks


def median_of(repeats: int, *calls: Callable[[], float]) -> list[float]:
    """The median of ``repeats`` timings of each call, after one untimed warm-up; order alternates."""
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for rep in range(repeats):
        order = range(len(calls)) if rep % 2 == 0 else reversed(range(len(calls)))
        for index in order:
            times[index].append(calls[index]())
    return [statistics.median(values) for values in times]


def stopwatch(call: Callable[[], object]) -> float:
    """Seconds ``call()`` takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# ---------------------------------------------------------------- training


def bare_transforms(augment: dict[str, bool]) -> Compose:
    """The augmentations of the run as plain MONAI transforms (whole images, square: turns apply)."""
    keys = ["image", "label"]
    steps: list[Any] = []
    if augment["flip"]:
        steps += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in (0, 1)]
    if augment["rotate90"]:
        steps.append(RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(0, 1)))
    if augment["intensity"]:
        steps += [
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.05, prob=0.5),
        ]
    steps.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(steps)


def lesionflow_trainer(
    run: dict[str, Any], items: list[dict[str, np.ndarray]], val: tuple[list, list], roi_size: list[int]
) -> Callable[[], float]:
    """One call = one lesionflow training epoch (``train_epoch``); returns its wall seconds."""
    train = run["train"]
    setup = EpochSetup(
        build_loss(train["loss"], batch_dice=bool(train["batch_dice"])), torch.device("cpu"), None,
        val[0], val[1], roi_size, int(train["batch_size"]), float(train["presence_loss_weight"]),
    )
    positive = [bool(item["label"].any()) for item in items]
    parts = build_training_parts(run["model"], train, items, positive, roi_size, setup, 0)
    epoch = [0]

    def one_epoch() -> float:
        epoch[0] += 1
        seed_epoch(int(train["seed"]), epoch[0], parts)
        return stopwatch(lambda: train_epoch(parts, setup, epoch[0], 1, lambda: None))

    return one_epoch


def bare_trainer(
    run: dict[str, Any], items: list[dict[str, np.ndarray]], epochs: int
) -> tuple[Callable[[], float], Callable[[], float]]:
    """A bare MONAI epoch (loader + augmentations + steps) and the same steps alone on ready batches."""
    train, batch_size = run["train"], int(run["train"]["batch_size"])
    torch.manual_seed(int(train["seed"]))
    model = build_network(run["model"], int(items[0]["image"].shape[0]), 1)
    loss_fn = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(train["learning_rate"]), weight_decay=float(train["weight_decay"])
    )
    loader = DataLoader(Dataset(items, transform=bare_transforms(train["augment"])),
                        batch_size=batch_size, shuffle=True, num_workers=0)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=float(train["learning_rate"]), total_steps=2 * len(loader) * epochs, pct_start=0.3
    )
    ready = [(batch["image"], batch["label"]) for batch in loader]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()

    def epoch() -> float:
        model.train()
        start = time.perf_counter()
        for batch in loader:
            step(batch["image"], batch["label"])
        return time.perf_counter() - start

    def steps_alone() -> float:
        model.train()
        start = time.perf_counter()
        for x, y in ready:
            step(x, y)
        return time.perf_counter() - start

    return epoch, steps_alone


def training(run: dict[str, Any], prepared: Path, repeats: int) -> dict[str, Any]:
    """Training images/s: lesionflow's epoch, the bare MONAI epoch, the bare steps alone."""
    images, masks = subset_arrays(prepared, "train")
    val = subset_arrays(prepared, "val")
    items = [
        {"image": image, "label": mask[None].astype(np.float32)}
        for image, mask in zip(images, masks, strict=True)
    ]
    roi_size = list(images[0].shape[1:])
    ours = lesionflow_trainer(run, items, val, roi_size)
    bare_epoch, bare_steps = bare_trainer(run, items, repeats + 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Num foregrounds 0.*")
        seconds = median_of(repeats, ours, bare_epoch, bare_steps)
    n = len(items)
    return {
        "train_images": n,
        "image_shape": list(images[0].shape),
        "batch_size": int(run["train"]["batch_size"]),
        "median_epoch_s": dict(zip(("lesionflow", "bare_monai", "bare_steps_only"), seconds, strict=True)),
        "images_per_s": {
            "lesionflow": n / seconds[0], "bare_monai": n / seconds[1], "bare_steps_only": n / seconds[2],
        },
    }


# ---------------------------------------------------------------- inference and TTA


def save_model(run: dict[str, Any], prepared: Path, path: Path) -> torch.nn.Module:
    """An untrained network saved as the train stage saves model.pt; the network, in eval mode."""
    images, _ = subset_arrays(prepared, "val")
    channels, roi_size = int(images[0].shape[0]), list(images[0].shape[1:])
    torch.manual_seed(int(run["train"]["seed"]))
    model = build_network(run["model"], channels, 1)
    info = {
        "model_settings": run["model"], "in_channels": channels, "out_channels": 1,
        "spatial_dims": run["model"]["spatial_dims"], "patch_size": run["train"]["patch_size"],
        "roi_size": roi_size, "presence_head": False,
    }
    torch.save({"state_dict": model.state_dict(), **info, "best_epoch": 0}, path)
    return model.eval()


def bare_forward(model: torch.nn.Module, batch: torch.Tensor) -> Callable[[], float]:
    """One call = the plain forward pass of ``batch`` in chunks of BARE_INFER_BATCH; its seconds."""

    @torch.no_grad()
    def forward() -> float:
        start = time.perf_counter()
        for first in range(0, len(batch), BARE_INFER_BATCH):
            model(batch[first : first + BARE_INFER_BATCH])
        return time.perf_counter() - start

    return forward


def inference(run: dict[str, Any], prepared: Path, model: torch.nn.Module, model_path: Path,
              work: Path, repeats: int) -> dict[str, Any]:
    """Inference images/s of run_infer on the test split vs. the bare forward pass (and windows)."""
    images, _ = subset_arrays(prepared, "test")
    batch = torch.from_numpy(np.stack(images)).float()
    settings = {"infer": run["infer"]}
    summaries: list[dict[str, Any]] = []
    counter = [0]

    def ours() -> float:
        counter[0] += 1
        out = work / f"infer-{counter[0]}"
        start = time.perf_counter()
        summaries.append(run_infer(prepared / "images.csv", prepared / "preprocess.json", model_path,
                                   settings, "test", out))
        return time.perf_counter() - start

    calls = [ours, bare_forward(model, batch)]
    window = None
    summary_probe = run_infer(prepared / "images.csv", prepared / "preprocess.json", model_path, settings,
                              "test", work / "infer-probe")
    if summary_probe["window"] and summary_probe["window"] != list(batch.shape[2:]):
        window = summary_probe["window"]
        overlap = float(run["infer"]["sw_overlap"])

        @torch.no_grad()
        def windows() -> float:
            start = time.perf_counter()
            for first in range(0, len(batch), BARE_INFER_BATCH):
                sliding_window_inference(
                    batch[first : first + BARE_INFER_BATCH], tuple(window), int(run["infer"]["batch_size"]),
                    model, overlap=overlap, mode="gaussian",
                )
            return time.perf_counter() - start

        calls.append(windows)
    seconds = median_of(repeats, *calls)
    n = len(images)
    result = {
        "test_images": n,
        "image_shape": list(images[0].shape),
        "run_infer": {key: summaries[-1][key] for key in ("tta", "window", "stride", "n_items")},
        "infer_batch_size": int(run["infer"]["batch_size"]),
        "bare_batch_size": BARE_INFER_BATCH,
        "median_s": {"lesionflow": seconds[0], "bare_forward": seconds[1]},
        "images_per_s": {"lesionflow": n / seconds[0], "bare_forward": n / seconds[1]},
    }
    if window is None:
        result["sliding_window"] = "not applicable: the run predicts every image whole (window = image)"
    else:
        result["median_s"]["bare_sliding_window"] = seconds[2]
        result["images_per_s"]["bare_sliding_window"] = n / seconds[2]
    return result


def tta_cost(run: dict[str, Any], prepared: Path, model: torch.nn.Module, repeats: int) -> dict[str, Any]:
    """Seconds of predict_batch with k transforms vs. k plain forward passes, on one batch of 8."""
    images, _ = subset_arrays(prepared, "test")
    batch = torch.from_numpy(np.stack(images[:BARE_INFER_BATCH])).float()
    roi_size = list(batch.shape[2:])
    overlap = float(run["infer"]["sw_overlap"])
    result = {}
    for k in TTA_KS:
        transforms = get_transforms(TTA_NAMES[:k], run["model"]["spatial_dims"])

        def ours(transforms=transforms) -> float:
            return stopwatch(
                lambda: predict_batch(model, batch, transforms, roi_size, BARE_INFER_BATCH, overlap)
            )

        @torch.no_grad()
        def plain(k=k) -> float:
            start = time.perf_counter()
            for _ in range(k):
                model(batch)
            return time.perf_counter() - start

        seconds = median_of(repeats, ours, plain)
        result[str(k)] = {"transforms": list(TTA_NAMES[:k]), "predict_batch_s": seconds[0],
                          "k_forwards_s": seconds[1], "ratio": seconds[0] / seconds[1]}
    return {"batch": BARE_INFER_BATCH, "image_shape": list(batch.shape[1:]), "by_k": result}


# ---------------------------------------------------------------- report


def measure(n_images: int, repeats: int, work: Path) -> dict[str, Any]:
    """Every measurement of the benchmark, as one result dict."""
    data, split, run = demo_run(n_images)
    prepared = prepared_data(data, split, run, work)
    model_path = work / "model.pt"
    model = save_model(run, prepared, model_path)
    return {
        "config": str(DEMO_CONFIG.relative_to(REPO)),
        "run": RUN,
        "model": run["model"],
        "train_settings": {key: run["train"][key] for key in
                           ("batch_size", "learning_rate", "loss", "scheduler", "patch_size", "augment")},
        "training": training(run, prepared, repeats),
        "inference": inference(run, prepared, model, model_path, work, repeats),
        "tta": tta_cost(run, prepared, model, repeats),
    }


def print_report(result: dict[str, Any]) -> None:
    """The figures, as lines."""
    train, infer = result["training"], result["inference"]
    rates = train["images_per_s"]
    print(f"training ({train['train_images']} images {train['image_shape']}, batch {train['batch_size']}):")
    for name, rate in rates.items():
        print(f"  {name:<16}{rate:8.1f} images/s  ratio lesionflow / this {rates['lesionflow'] / rate:5.2f}")
    rates = infer["images_per_s"]
    print(f"inference ({infer['test_images']} images, run_infer {infer['run_infer']}):")
    for name, rate in rates.items():
        print(f"  {name:<20}{rate:8.1f} images/s  ratio lesionflow / this {rates['lesionflow'] / rate:5.2f}")
    if "sliding_window" in infer:
        print(f"  sliding window: {infer['sliding_window']}")
    print(f"TTA on a batch of {result['tta']['batch']}:")
    for k, entry in result["tta"]["by_k"].items():
        print(f"  k={k}: predict_batch {1000 * entry['predict_batch_s']:7.1f} ms, "
              f"{k} forwards {1000 * entry['k_forwards_s']:7.1f} ms, ratio {entry['ratio']:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160, help="images generated (the demo has 240)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both sides")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON report goes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lesionflow-throughput-") as work:
        result = measure(args.images, args.repeats, Path(work))
    result.update(threads=args.threads, repeats=args.repeats, total_seconds=time.perf_counter() - started)
    print_report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
