"""The infer stage: probability maps of one split's images from a trained model, with TTA.

Each preprocessed image is predicted window by window (the tiles, or sliding windows of the
training patch), TTA applied to every batch of windows; the windows are stitched with Gaussian
weights and the whole-image map is mapped back to the original image, so that metrics are
computed at the resolution of the reference masks. A dual-head model also gives each image a
presence logit: its head's, averaged over TTA as a probability, then the highest over the image's
windows. Never thresholds, tunes or scores: it writes probabilities and nothing else.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lesionflow.data.geometry import ORIGINAL_RESOLUTION, restore_map
from lesionflow.data.tiles import Stitcher, tile_id, tile_origins
from lesionflow.io.readers import read_image
from lesionflow.model.dual_head import DualHead
from lesionflow.model.networks import build_model, read_model_file, resolve_device, restored
from lesionflow.model.presence import highest_logit, presence_table
from lesionflow.model.tta import checked_names, get_transforms, window_predictions
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.resources import peak_rss_mb
from lesionflow.pipeline.settings import complete_section

SUBSETS = ("val", "test")
# Maps are stored as float16: probabilities to about 1e-3, far finer than any threshold grid.
STORED_DTYPE = np.float16
CHECKPOINT_KEYS = ("state_dict", "model_settings", "in_channels", "spatial_dims")


def load_model(model_path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network saved by the train stage; return it (eval mode) and the checkpoint.

    A DualHead when the checkpoint records ``presence_head``.
    """
    checkpoint = read_model_file(model_path, device)
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise LesionflowError(
            f"{model_path}: not a lesionflow checkpoint (missing {', '.join(missing)})"
        )
    # Model files written before presence heads existed have no key and no head.
    model = build_model(
        checkpoint["model_settings"], checkpoint["in_channels"],
        bool(checkpoint.get("presence_head", False)), checkpoint.get("out_channels", 1),
    )
    return restored(model, checkpoint, device), checkpoint


def windows_of(
    preprocess: Mapping[str, Any], roi_size: list[int] | None, spatial_dims: int, overlap: float
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None, str]:
    """Window shape, stride and blending weights of the whole-image prediction.

    With tiles, the windows are the tiles (``preprocess.tile_size`` / ``tile_stride``), so the
    per-tile maps and the stitched image come from one pass. Otherwise they are the training
    patch every ``(1 - infer.sw_overlap)`` of it, as MONAI's sliding window places them; a model
    trained on whole images (no roi) sees each image whole.
    """
    if preprocess["tile_size"] is not None:
        tile = (int(preprocess["tile_size"]),) * spatial_dims
        stride = (int(preprocess["tile_stride"]),) * spatial_dims
        return tile, stride, preprocess["stitch_weights"]
    if roi_size is None:
        return None, None, "gaussian"
    stride = tuple(max(1, int(size * (1 - overlap))) for size in roi_size)
    return tuple(roi_size), stride, "gaussian"


def read_image_table(path: str | os.PathLike, subset: str) -> pd.DataFrame:
    """The rows of ``images.csv`` (written by the preprocess stage) in split ``subset``."""
    if not Path(path).is_file():
        raise LesionflowError(f"image table {path} does not exist")
    table = pd.read_csv(path, dtype={"image_id": str, "subject": str, "split": str})
    return table[table["split"] == subset].reset_index(drop=True)


def stitched_map(
    model: torch.nn.Module,
    image: np.ndarray,
    windows: tuple,
    transforms: list[str],
    roi_size: Any,
    batch_size: int,
    device: torch.device,
    overlap: float,
    on_window: Callable[[tuple, np.ndarray, Any], None] | None = None,
) -> np.ndarray:
    """The probability map of one ``(C, *spatial)`` model input: its windows (``windows`` as
    :func:`windows_of` gives them) predicted with TTA and stitched; each window's origin,
    probabilities and presence logit go to ``on_window`` as they come (tiles are written one by one)."""
    window, stride, weights = windows
    shape = image.shape[1:]
    size = window or shape
    stitcher = Stitcher(shape, weights)
    for origin, prob, logit in window_predictions(
        model, image, tile_origins(shape, size, stride or size), size, transforms, roi_size, batch_size,
        device, overlap,
    ):  # fmt: skip
        stitcher.add(prob, origin)
        if on_window is not None:
            on_window(origin, prob, logit)
    return stitcher.result()


def run_infer(
    images_path: str | os.PathLike,
    preprocess_path: str | os.PathLike,
    model_path: str | os.PathLike,
    settings: dict[str, Any],
    subset: str,
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Write the probability maps of split ``subset`` into ``out_dir``, and return a summary.

    ``<subset>.npz``: one float16 map per source image at its original size;
    ``<subset>_tiles.npz``: one per item training saw (each tile, or each whole preprocessed
    image when not tiling) at the preprocessed resolution; ``<subset>_presence.csv``: per
    source image the presence head's logit and probability (presence.TABLE_COLUMNS; both empty
    for a model without a head); ``<subset>_infer.json``: counts, windows, resolution, whether
    the model has a presence head, seconds and peak memory. Images are read, predicted and
    written one at a time.
    """
    if subset not in SUBSETS:
        raise LesionflowError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
    infer = complete_section(settings, "infer", ("tta", "batch_size", "sw_overlap", "device"))
    transforms = list(infer["tta"])
    checked_names(transforms)  # fail on a bad name before loading anything
    started = time.perf_counter()
    device = resolve_device(infer["device"], "infer.device")
    model, checkpoint = load_model(model_path, device)
    # Only the checkpoint knows the spatial axes: flip2 of a 2D model fails before any image is read.
    get_transforms(transforms, checkpoint["spatial_dims"])
    preprocess = artifacts.read_json(preprocess_path)["settings"]
    rows = read_image_table(images_path, subset)
    channels, spatial_dims = checkpoint["in_channels"], checkpoint["spatial_dims"]
    roi_size = checkpoint.get("roi_size") or checkpoint.get("patch_size")
    overlap = float(infer["sw_overlap"])
    window, stride, weights = windows_of(preprocess, roi_size, spatial_dims, overlap)
    batch_size = int(infer["batch_size"])
    tiled = preprocess["tile_size"] is not None
    out = Path(out_dir)
    n_items = 0
    presence_logits = []
    with (
        artifacts.array_writer(out / f"{subset}.npz") as add_image,
        artifacts.array_writer(out / f"{subset}_tiles.npz") as add_item,
        tqdm(total=len(rows), desc=f"infer {subset}", unit="image", file=sys.stderr) as bar,
    ):
        for row in rows.to_dict("records"):
            image = read_image(row["image"]).array
            if image.shape[0] != channels or image.ndim != spatial_dims + 1:
                raise LesionflowError(
                    f"{row['image']}: image {row['image_id']} has shape {image.shape}; the model "
                    f"expects {channels} channels and {spatial_dims} spatial dims"
                )
            window_logits = []

            def on_window(origin, prob, logit, image_id=row["image_id"], logits=window_logits):
                logits.append(logit)
                if tiled:
                    add_item(tile_id(image_id, origin), prob.astype(STORED_DTYPE))

            whole = stitched_map(
                model, image, (window, stride, weights), transforms, roi_size, batch_size, device, overlap,
                on_window,
            )  # fmt: skip
            n_items += len(window_logits) if tiled else 1
            if not tiled:
                add_item(row["image_id"], whole.astype(STORED_DTYPE))
            add_image(row["image_id"], restore_map(whole, row).astype(STORED_DTYPE))
            presence_logits.append(highest_logit(window_logits))
            bar.update(1)
    artifacts.write_csv(
        presence_table(rows["image_id"].tolist(), presence_logits), out / f"{subset}_presence.csv"
    )
    summary = {
        "subset": subset,
        "n_images": len(rows),
        "n_items": n_items,
        "tta": transforms,
        "window": list(window) if window else None,
        "stride": list(stride) if stride else None,
        "stitch_weights": weights,
        "presence_head": isinstance(model, DualHead),
        "resolution": ORIGINAL_RESOLUTION,
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
    }
    artifacts.write_json(out / f"{subset}_infer.json", summary)
    print(
        f"infer {subset}: {len(rows)} images, {n_items} items, tta {transforms}, "
        f"{summary['seconds']:.1f}s, peak RSS {summary['peak_rss_mb']:.0f} MiB",
        file=sys.stderr,
    )
    return summary
