"""Benchmark: per-image metrics plus lesion matching, against MONAI's metric classes on the same masks.

It never writes into the repository except its JSON report (--out).

lesionflow scores every test image with Dice, IoU, precision, recall, HD95, mean surface distance,
Pearson r and connected-component lesion matching. The bare reference is MONAI computing the
metrics it has (DiceMetric, MeanIoU, ConfusionMatrixMetric for precision and recall,
HausdorffDistanceMetric at the 95th percentile, SurfaceDistanceMetric) one image per call, on
the same masks, in the same run; MONAI gets one torch thread because more threads only slow it
down on small CPU machines. The report gives the ratio lesionflow / MONAI (below 1 = faster) and
the time of the subject bootstrap of the resulting per-image table.

    .venv/bin/python bench/metrics.py [--images 1000] [--size 512] [--resamples 2000]
        [--out bench/out/metrics.json]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.metrics import (
    ConfusionMatrixMetric,
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    SurfaceDistanceMetric,
)

from lesionflow.evaluation.bootstrap import Resampler
from lesionflow.evaluation.metrics import LesionMatching, score_images
from lesionflow.evaluation.summary import summarise
from lesionflow.pipeline.config import complete_run_section

# The schema's evaluate settings; a null lesion_matching.connectivity is the one tuning locks,
# tune.connectivity by default.
EVALUATE = complete_run_section("evaluate", {})
MATCHING = LesionMatching(
    connectivity=complete_run_section("tune", {})["connectivity"],
    criterion=EVALUATE["lesion_matching"]["criterion"],
    min_overlap=EVALUATE["lesion_matching"]["min_overlap"],
)


def _disc(mask: np.ndarray, centre: np.ndarray, radius: float) -> None:
    r = int(np.ceil(radius))
    y0, x0 = int(centre[0]), int(centre[1])
    ys, xs = np.ogrid[-r : r + 1, -r : r + 1]
    blob = ys**2 + xs**2 <= radius**2
    top, left = max(y0 - r, 0), max(x0 - r, 0)
    bottom, right = min(y0 + r + 1, mask.shape[0]), min(x0 + r + 1, mask.shape[1])
    dy, dx = top - (y0 - r), left - (x0 - r)
    mask[top:bottom, left:right] |= blob[dy : dy + bottom - top, dx : dx + right - left]


def make_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference with 0 (40 % of images) or 1-12 exudate-like lesions, and a plausible prediction.

    Lesions have radii of 1-10 pixels (3 to ~300 pixels each), so most images are more than 99 %
    background, as in fundus exudate masks. The prediction misses some lesions, grows or shrinks
    the others by up to two pixels and adds a few small false positives.
    """
    gt = np.zeros((size, size), dtype=bool)
    pred = np.zeros_like(gt)
    n_lesions = 0 if rng.random() < 0.4 else int(rng.integers(1, 13))
    for _ in range(n_lesions):
        centre = rng.integers(0, size, 2)
        radius = float(rng.uniform(1, 10))
        _disc(gt, centre, radius)
        if rng.random() < 0.85:  # detected, with a boundary error
            _disc(pred, centre + rng.integers(-2, 3, 2), max(radius + rng.uniform(-2, 2), 0.5))
    for _ in range(int(rng.poisson(0.7))):
        _disc(pred, rng.integers(0, size, 2), float(rng.uniform(0.5, 4)))
    return pred, gt


def lesionflow_time(preds, gts) -> tuple[float, pd.DataFrame]:
    ids = [str(i) for i in range(len(preds))]
    subjects = [f"s{i // 2}" for i in range(len(preds))]
    start = time.perf_counter()
    per_image, lesions = score_images(
        ids, subjects, preds, gts, matching=MATCHING, size_bins=EVALUATE["size_bins"]
    )
    return time.perf_counter() - start, (per_image, lesions)


def monai_time(preds, gts) -> float:
    metrics = [
        DiceMetric(include_background=True, ignore_empty=False),
        MeanIoU(include_background=True, ignore_empty=False),
        ConfusionMatrixMetric(include_background=True, metric_name=("precision", "sensitivity")),
        HausdorffDistanceMetric(include_background=True, percentile=95),
        SurfaceDistanceMetric(include_background=True, symmetric=True),
    ]
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Empty masks make MONAI warn once per image; those values are NaN or inf by design.
        warnings.simplefilter("ignore")
        for pred, gt in zip(preds, gts, strict=True):
            p = torch.from_numpy(pred[None, None]).float()
            g = torch.from_numpy(gt[None, None]).float()
            for metric in metrics:
                metric(p, g)
        for metric in metrics:
            metric.aggregate()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--resamples", type=int, default=EVALUATE["bootstrap"]["n_resamples"])
    parser.add_argument("--chunk", type=int, default=100, help="images held in memory at once")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    ours = theirs = 0.0
    tables, lesion_tables = [], []
    for start in range(0, args.images, args.chunk):
        pairs = [make_pair(rng, args.size) for _ in range(min(args.chunk, args.images - start))]
        preds, gts = [p for p, _ in pairs], [g for _, g in pairs]
        # Alternate the order so neither side always runs on a warm cache.
        if (start // args.chunk) % 2:
            theirs += monai_time(preds, gts)
            seconds, (per_image, lesions) = lesionflow_time(preds, gts)
        else:
            seconds, (per_image, lesions) = lesionflow_time(preds, gts)
            theirs += monai_time(preds, gts)
        ours += seconds
        offset = start
        tables.append(per_image.assign(image_id=(per_image["image_id"].astype(int) + offset).astype(str)))
        lesion_tables.append(lesions.assign(image_id=(lesions["image_id"].astype(int) + offset).astype(str)))
    per_image = pd.concat(tables, ignore_index=True)
    per_image["subject"] = [f"s{int(i) // 2}" for i in per_image["image_id"]]
    lesions = pd.concat(lesion_tables, ignore_index=True)
    lesions["subject"] = [f"s{int(i) // 2}" for i in lesions["image_id"]]

    start = time.perf_counter()
    boot = EVALUATE["bootstrap"]
    resampler = Resampler.from_subjects(
        per_image["subject"].tolist(), args.resamples, boot["seed"], boot["confidence"], "evaluate.bootstrap"
    )
    summary = summarise(per_image, lesions, resampler, EVALUATE["size_bins"])
    bootstrap_seconds = time.perf_counter() - start

    result = {
        "images": args.images,
        "size": args.size,
        "reference_lesions": int(summary["n_ref_lesions"]),
        "lesion_free_images": int(summary["n_gt_empty"]),
        "lesionflow_s": round(ours, 3),
        "monai_s": round(theirs, 3),
        "ratio_lesionflow_over_monai": round(ours / theirs, 3),
        "lesionflow_ms_per_image": round(1000 * ours / args.images, 3),
        "monai_ms_per_image": round(1000 * theirs / args.images, 3),
        "bootstrap_resamples": args.resamples,
        "bootstrap_subjects": len(resampler.subjects),
        "bootstrap_summary_s": round(bootstrap_seconds, 3),
    }
    print(
        f"{args.images} images {args.size}x{args.size}, {result['reference_lesions']} reference lesions, "
        f"{result['lesion_free_images']} lesion-free images\n"
        f"lesionflow (all per-image metrics + lesion matching): {ours:.2f} s\n"
        f"MONAI (Dice, IoU, precision/recall, HD95, surface distance): {theirs:.2f} s\n"
        f"ratio lesionflow / MONAI: {ours / theirs:.2f}\n"
        f"subject bootstrap of every summary metric ({args.resamples} resamples, "
        f"{len(resampler.subjects)} subjects): {bootstrap_seconds:.2f} s"
    )
    print(json.dumps(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
