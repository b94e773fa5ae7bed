"""The infer stage: probability maps of one split's images from a trained model, with TTA.

Never thresholds, tunes or scores: it writes probabilities and nothing else.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lesionflow import artifacts, dataset
from lesionflow.errors import LesionflowError
from lesionflow.models import build_network, resolve_device
from lesionflow.split import read_split
from lesionflow.tta import get_transforms, predict_probabilities

SUBSETS = ("val", "test")
CHECKPOINT_KEYS = ("state_dict", "model_settings", "in_channels", "spatial_dims")


def load_model(model_path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network saved by the train stage; return it (eval mode) and the checkpoint."""
    try:
        checkpoint = torch.load(model_path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        reason = str(err).splitlines()[0]
        raise LesionflowError(f"{model_path}: cannot read the checkpoint ({reason})") from None
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise LesionflowError(
            f"{model_path}: not a lesionflow checkpoint (missing {', '.join(missing)})"
        )
    model = build_network(
        checkpoint["model_settings"], checkpoint["in_channels"], checkpoint.get("out_channels", 1)
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), checkpoint


def run_infer(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    model_path: str | os.PathLike,
    settings: dict[str, Any],
    subset: str,
    out_path: str | os.PathLike,
) -> dict[str, Any]:
    """Write ``{image_id: probability map (float16)}`` for split ``subset`` to ``out_path`` (.npz).

    Returns a small summary: subset, number of images, TTA transforms, seconds.
    """
    if subset not in SUBSETS:
        raise LesionflowError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
    infer = settings.get("infer")
    if not isinstance(infer, dict):
        raise LesionflowError("settings: expected a section 'infer'")
    transforms = list(infer.get("tta", ["identity"]))
    get_transforms(transforms)  # fail on a bad name before loading anything
    started = time.perf_counter()
    device = resolve_device(infer.get("device", "auto"), "infer.device")
    model, checkpoint = load_model(model_path, device)

    manifest = dataset.read_manifest(manifest_path)
    split = read_split(split_path)
    ids, images, _ = dataset.load_subset(manifest, split, subset)
    channels, spatial_dims = checkpoint["in_channels"], checkpoint["spatial_dims"]
    for image_id, image in zip(ids, images, strict=True):
        if image.shape[0] != channels or image.ndim != spatial_dims + 1:
            raise LesionflowError(
                f"{manifest_path}: image {image_id} has shape {image.shape}; the model expects "
                f"{channels} channels and {spatial_dims} spatial dims"
            )
    roi_size = checkpoint.get("roi_size") or checkpoint.get("patch_size")
    with tqdm(total=len(ids), desc=f"infer {subset}", unit="image", file=sys.stderr) as bar:
        probabilities = predict_probabilities(
            model, images, transforms, roi_size, int(infer.get("batch_size", 16)), device,
            sw_overlap=float(infer.get("sw_overlap", 0.25)), progress=bar.update,
        )
    maps = zip(ids, probabilities, strict=True)
    artifacts.save_arrays(out_path, {image_id: prob.astype(np.float16) for image_id, prob in maps})
    summary = {
        "subset": subset,
        "n_images": len(ids),
        "tta": transforms,
        "seconds": time.perf_counter() - started,
    }
    print(
        f"infer {subset}: {len(ids)} images, tta {transforms}, {summary['seconds']:.1f}s",
        file=sys.stderr,
    )
    return summary
