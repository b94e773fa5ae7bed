"""Quality at equal training time on IDRiD hard exudates: config/idrid-ex.yaml against a bare script.

Runs the pipeline on config/idrid-ex.yaml (../shared/data/idrid-ex) in a work folder, then trains
a bare MONAI script, written as a researcher would without lesionflow, for the same wall time as
lesionflow's train job, on lesionflow's own split (train images only; no validation tuning), and
scores both on the same test images at their original resolution:

- lesionflow: the evaluate stage's test dice_pos (every IDRiD image holds exudates, so this is the
  mean Dice over the test images), with the config's TTA and the threshold and minimum area it
  locked on validation;
- bare: the same UNet, DiceCE, Adam, random 256-pixel crops of the images downscaled to 1024
  pixels wide, sliding-window inference, probability >= 0.5, upsampled to the original size.

    .venv/bin/python bench/idrid_quality.py [--work DIR] [--out bench/out/idrid_quality.json]

The issue's goal: lesionflow >= 1.1 x the bare script's test Dice. With 4 test images the ratio is
noisy; the JSON holds each image's Dice too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IDRID = REPO.parent / "shared" / "data" / "idrid-ex"
WIDTH, CROP, BATCH, LR = 1024, 256, 8, 1e-3


def run_pipeline(work: Path) -> dict:
    """Run config/idrid-ex.yaml in ``work``; the run's keys by stage, from the plan it wrote."""
    work.mkdir(parents=True, exist_ok=True)
    config = (REPO / "config" / "idrid-ex.yaml").read_text()
    (work / "config.yaml").write_text(
        config.replace("../shared/data/idrid-ex/manifest.csv", str(IDRID / "manifest.csv"))
    )
    snakemake = Path(sys.executable).parent / "snakemake"
    command = [
        str(snakemake),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(work / "config.yaml"),
        "--cores",
        "2",
        "--profile",
        str(REPO / "profiles" / "local"),
    ]
    with open(work / "snakemake.log", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    plans = sorted((work / ".lesionflow" / "plans").glob("*.json"), key=os.path.getmtime)
    return json.loads(plans[-1].read_text())["runs"]["unet"]


def read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def read_reference(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))[..., 0] > 127


def downscaled(image: np.ndarray, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The image (3, h, w) at WIDTH pixels wide, standardised per image, and its mask likewise."""
    height = round(image.shape[0] * WIDTH / image.shape[1])
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None]
    small = F.interpolate(tensor, size=(height, WIDTH), mode="area")[0]
    small = (small - small.mean()) / (small.std() + 1e-6)
    if mask is None:
        return small, None
    small_mask = F.interpolate(
        torch.from_numpy(mask[None, None].astype(np.float32)), size=(height, WIDTH), mode="area"
    )
    return small, (small_mask[0] >= 0.5).float()


def random_crops(images: list, masks: list, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(BATCH):
        i = int(rng.integers(len(images)))
        _, h, w = images[i].shape
        y, x = int(rng.integers(h - CROP + 1)), int(rng.integers(w - CROP + 1))
        xs.append(images[i][:, y : y + CROP, x : x + CROP])
        ys.append(masks[i][:, y : y + CROP, x : x + CROP])
    flip = rng.random() < 0.5
    x, y = torch.stack(xs), torch.stack(ys)
    return (x.flip(-1), y.flip(-1)) if flip else (x, y)


def bare(manifest: pd.DataFrame, split: pd.DataFrame, seconds: float, seed: int = 0) -> dict:
    """Train the bare script for ``seconds`` on the train images; each test image's Dice."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows = manifest.set_index("image_id")
    train_ids = split.loc[split["split"] == "train", "image_id"].tolist()
    test_ids = split.loc[split["split"] == "test", "image_id"].tolist()
    pairs = [
        downscaled(read_rgb(IDRID / rows.loc[i, "image"]), read_reference(IDRID / rows.loc[i, "mask"]))
        for i in train_ids
    ]
    images, masks = [p[0] for p in pairs], [p[1] for p in pairs]
    model = UNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=1,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=1,
    )
    loss_fn = DiceCELoss(sigmoid=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=LR)
    started, steps = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - started < seconds:
        x, y = random_crops(images, masks, rng)
        optimiser.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimiser.step()
        steps += 1
    model.eval()
    dice = {}
    with torch.no_grad():
        for image_id in test_ids:
            image = read_rgb(IDRID / rows.loc[image_id, "image"])
            reference = read_reference(IDRID / rows.loc[image_id, "mask"])
            small, _ = downscaled(image, None)
            prob = torch.sigmoid(sliding_window_inference(small[None], (CROP, CROP), 4, model, overlap=0.25))
            full = F.interpolate(prob, size=reference.shape, mode="bilinear", align_corners=False)[
                0, 0
            ].numpy()
            pred = full >= 0.5
            dice[image_id] = float(2 * (pred & reference).sum() / (pred.sum() + reference.sum()))
    return {"steps": steps, "seconds": time.perf_counter() - started, "dice": dice}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "idrid-quality")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "idrid_quality.json")
    args = parser.parse_args()
    if not (IDRID / "manifest.csv").is_file():
        sys.exit(f"idrid_quality: {IDRID} is absent; nothing to measure")
    torch.set_num_threads(2)
    keys = run_pipeline(args.work)
    results = args.work / "results"
    train_summary = json.loads((results / "train" / keys["train"] / "train_summary.json").read_text())
    evaluation = json.loads((results / "evaluate" / keys["evaluate"] / "summary.json").read_text())
    per_image = pd.read_csv(
        results / "evaluate" / keys["evaluate"] / "per_image_test.csv", dtype={"image_id": str}
    )
    split = pd.read_csv(results / "split" / keys["split"] / "split.csv", dtype={"image_id": str})
    manifest = pd.read_csv(IDRID / "manifest.csv", dtype=str)
    if "image_id" not in manifest.columns:
        manifest["image_id"] = manifest["image"].map(lambda cell: Path(cell).stem)
    budget = float(train_summary["wall_time_s"])
    reference = bare(manifest, split, budget)
    ours = float(evaluation["test"]["dice_pos"])
    theirs = float(np.mean(list(reference["dice"].values())))
    result = {
        "train_seconds": budget,
        "lesionflow_test_dice": ours,
        "lesionflow_test_dice_ci": [
            evaluation["test"]["dice_pos_ci_low"],
            evaluation["test"]["dice_pos_ci_high"],
        ],
        "lesionflow_per_image": dict(
            zip(per_image["image_id"], per_image["dice"].astype(float), strict=True)
        ),
        "bare_test_dice": theirs,
        "bare_per_image": reference["dice"],
        "bare_steps": reference["steps"],
        "lesionflow_iterations": train_summary.get("iterations"),
        "ratio": ours / theirs if theirs else float("nan"),
        "goal": 1.1,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("per_image")}, indent=2))


if __name__ == "__main__":
    main()
