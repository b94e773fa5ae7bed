"""The infer stage: probability maps of one split's images from a trained model, with TTA.

Each preprocessed image is predicted window by window (the tiles, or sliding windows of the
training patch), TTA applied to every batch of windows; the windows are stitched with Gaussian
weights and the whole-image map is mapped back to the original image, so that metrics are
computed at the resolution of the reference masks. A dual-head model also gives each image a
presence logit: its head's, averaged over TTA as a probability, then the highest over the image's
windows. Never thresholds, tunes or scores: it writes probabilities and nothing else.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lesionflow.data.geometry import ORIGINAL_RESOLUTION, restore_map
from lesionflow.data.tiles import Stitcher, crop_or_pad, tile_id, tile_origins
from lesionflow.io.background import WriteBehind, read_ahead
from lesionflow.io.readers import read_image
from lesionflow.model.class_heads import checkpoint_head, per_class_logits
from lesionflow.model.dual_head import DualHead
from lesionflow.model.networks import build_model, read_model_file, resolve_device, restored
from lesionflow.model.presence import highest_logit, presence_table
from lesionflow.model.tta import checked_names, get_transforms, windows_across_images
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

    A DualHead when the checkpoint records ``presence_head``. A model of several exclusive classes
    is returned as per-class logits (``class_heads.per_class_logits``), whose sigmoid is each
    class's softmax probability, as every other model's sigmoid is its classes' probabilities.
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
    return per_class_logits(restored(model, checkpoint, device), checkpoint_head(checkpoint)), checkpoint


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


def model_input(row: Mapping[str, Any], channels: int, spatial_dims: int) -> np.ndarray:
    """The ``(C, *spatial)`` image of an images.csv row, checked against what the model takes."""
    image = read_image(row["image"]).array
    if image.shape[0] != channels or image.ndim != spatial_dims + 1:
        raise LesionflowError(
            f"{row['image']}: image {row['image_id']} has shape {image.shape}; the model "
            f"expects {channels} channels and {spatial_dims} spatial dims"
        )
    return image


def _write_original_size(add: Callable, row: Mapping[str, Any], whole: np.ndarray, classes: bool) -> None:
    # Several classes: one map per class, each placed back on the original image.
    restored = np.stack([restore_map(c, row) for c in whole]) if classes else restore_map(whole, row)
    add(row["image_id"], restored.astype(STORED_DTYPE))


@dataclass
class StitchedImage:
    """One image's whole-image map, stitched from its windows, and each window's origin,
    probabilities and presence logit (the tiles' maps, when the windows are the tiles)."""

    owner: Any
    map: np.ndarray
    windows: list[tuple[tuple[int, ...], np.ndarray, float]]


@dataclass
class _Stitching:
    owner: Any
    stitcher: Stitcher
    remaining: int
    windows: list = field(default_factory=list)


def stitched_maps(
    model: torch.nn.Module,
    images: Iterable[tuple[Any, np.ndarray]],
    windows: tuple,
    transforms: list[str],
    roi_size: Any,
    batch_size: int,
    device: torch.device,
    overlap: float,
) -> Iterator[StitchedImage]:
    """The probability map of each ``(owner, (C, *spatial) image)``, in order: its windows
    (``windows`` as :func:`windows_of` gives them) predicted with TTA, in batches shared with the
    images before and after it (:func:`lesionflow.model.tta.windows_across_images`), and stitched."""
    window, stride, weights = windows
    open_images: deque[_Stitching] = deque()

    def cut() -> Iterator[tuple[_Stitching, tuple[int, ...], np.ndarray]]:
        for owner, image in images:
            shape = image.shape[1:]
            size = window or shape
            origins = [tuple(int(v) for v in o) for o in tile_origins(shape, size, stride or size)]
            stitching = _Stitching(owner, Stitcher(shape, weights), len(origins))
            open_images.append(stitching)
            for origin in origins:
                yield stitching, origin, crop_or_pad(image, origin, size)

    for stitching, origin, prob, logit in windows_across_images(
        model, cut(), transforms, roi_size, batch_size, device, overlap
    ):
        stitching.stitcher.add(prob, origin)
        stitching.windows.append((origin, prob, logit))
        stitching.remaining -= 1
        while open_images and open_images[0].remaining == 0:
            done = open_images.popleft()
            yield StitchedImage(done.owner, done.stitcher.result(), done.windows)


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
    the model has a presence head, seconds and peak memory. The windows of consecutive images
    share batches; the next images are read, and finished maps written, in threads of their own
    while the network runs (a few images held at a time).
    """
    if subset not in SUBSETS:
        raise LesionflowError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
    infer = complete_section(settings, "infer", ("tta", "batch_size", "sw_overlap", "device"))
    transforms = list(infer["tta"])
    checked_names(transforms)  # fail on a bad name before loading anything
    started = time.perf_counter()
    device = resolve_device(infer["device"], "infer.device")
    model, checkpoint = load_model(model_path, device)
    classes = checkpoint.get("classes")
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
    read = functools.partial(model_input, channels=channels, spatial_dims=spatial_dims)
    with (
        artifacts.array_writer(out / f"{subset}.npz") as add_image,
        artifacts.array_writer(out / f"{subset}_tiles.npz") as add_item,
        # The next images are read, and the finished maps written, while the network runs.
        WriteBehind() as writer,
        tqdm(total=len(rows), desc=f"infer {subset}", unit="image", file=sys.stderr) as bar,
    ):
        images = read_ahead(rows.to_dict("records"), read)
        for done in stitched_maps(
            model, images, (window, stride, weights), transforms, roi_size, batch_size, device, overlap
        ):
            row = done.owner
            items = [(tile_id(row["image_id"], origin), prob) for origin, prob, _ in done.windows]
            for name, item in items if tiled else [(row["image_id"], done.map)]:
                writer.submit(add_item, name, item.astype(STORED_DTYPE))
                n_items += 1
            writer.submit(_write_original_size, add_image, row, done.map, classes is not None)
            presence_logits.append(highest_logit([logit for *_, logit in done.windows]))
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
        **({} if classes is None else {"classes": classes["names"]}),
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
