"""The infer_scores stage: the predicted score of each val or test volume, averaged over mirror-flip TTA.

Never reads the true score (the score column of images.csv is not even loaded) and never
calibrates: it writes the network's raw outputs, each TTA transform's and their mean.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from lesionflow.io.readers import read_image
from lesionflow.model.networks import read_model_file, resolve_device, restored
from lesionflow.model.regressors import build_regressor, fit_to_roi
from lesionflow.model.tta import TTATransform, checked_names, get_transforms
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.resources import peak_rss_mb
from lesionflow.pipeline.settings import complete_section

SUBSETS = ("val", "test")
CHECKPOINT_KEYS = ("state_dict", "model_settings", "task", "in_channels", "spatial_dims", "roi_size")
# images.csv columns read; the true score is left out on purpose.
IMAGE_COLUMNS = ("image_id", "subject", "split", "image", "visit")


def regression_tta_names(names: Sequence[str]) -> list[str]:
    """``infer.tta`` if every name is identity or a mirror flip (flip0 ... flip012); else an error.

    A score does not move with the volume, so mirror flips need no inverse; quarter turns (and
    the 2D aliases hflip, vflip, hvflip) are refused, as the schema refuses them for regression.
    """
    names = checked_names(names)
    refused = [
        name for name in names
        if name != "identity" and not (name.startswith("flip") and name[4:].isdigit())
    ]
    if refused:
        raise LesionflowError(
            f"infer.tta: {', '.join(refused)} not available for regression; use identity and "
            "flip<axes> (flip0, flip1, flip2, flip01, ... flip012)"
        )
    return names


def load_regressor(model_path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Rebuild the regressor saved by the train stage; return it (eval mode) and the checkpoint."""
    checkpoint = read_model_file(model_path, device)
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing or checkpoint["task"] != "regression":
        raise LesionflowError(
            f"{model_path}: not a lesionflow regression checkpoint "
            f"({'missing ' + ', '.join(missing) if missing else 'task ' + repr(checkpoint['task'])})"
        )
    model = build_regressor(checkpoint["model_settings"], checkpoint["in_channels"])
    return restored(model, checkpoint, device), checkpoint


def read_score_images(path: str | os.PathLike, subset: str) -> pd.DataFrame:
    """Rows of the preprocess stage's ``images.csv`` in split ``subset``, without the score column."""
    if not Path(path).is_file():
        raise LesionflowError(f"image table {path} does not exist")
    table = pd.read_csv(
        path, usecols=lambda column: column in IMAGE_COLUMNS, dtype=str, keep_default_na=False
    )
    missing = [column for column in IMAGE_COLUMNS[:4] if column not in table.columns]
    if missing:
        raise LesionflowError(f"image table {path}: missing column {', '.join(missing)}")
    if "visit" not in table.columns:
        table["visit"] = ""
    return table[table["split"] == subset].reset_index(drop=True)


@torch.no_grad()
def tta_outputs(
    model: torch.nn.Module, batch: torch.Tensor, transforms: Sequence[TTATransform]
) -> np.ndarray:
    """The raw output of each volume of ``batch`` under each transform: shape (B, transforms)."""
    model.eval()
    columns = [model(t.forward(batch)).float().reshape(-1).cpu().numpy() for t in transforms]
    return np.stack(columns, axis=1).astype(np.float64)


def _checked_volume(row: dict[str, Any], checkpoint: dict[str, Any]) -> np.ndarray:
    image = read_image(row["image"]).array
    channels, spatial_dims = checkpoint["in_channels"], checkpoint["spatial_dims"]
    if image.shape[0] != channels or image.ndim != spatial_dims + 1:
        raise LesionflowError(
            f"{row['image']}: image {row['image_id']} has shape {image.shape}; the model "
            f"expects {channels} channels and {spatial_dims} spatial dims"
        )
    return fit_to_roi(image, checkpoint["roi_size"])


def run_score_infer(
    images_csv: str | os.PathLike,
    preprocess_json: str | os.PathLike,
    model_path: str | os.PathLike,
    settings: dict[str, Any],
    subset: str,
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Write ``<subset>_scores.csv`` and ``<subset>_infer.json`` into ``out_dir``; return the summary.

    Each volume is centre padded or cropped to the training input size (model.pt's roi_size) and
    predicted under every ``infer.tta`` transform; ``prediction`` is the mean of the raw outputs,
    ``prediction_<name>`` each transform's.
    """
    if subset not in SUBSETS:
        raise LesionflowError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
    infer = complete_section(settings, "infer", ("tta", "batch_size", "device"))
    names = regression_tta_names(list(infer["tta"]))  # fail on a bad name before loading anything
    started = time.perf_counter()
    preprocess = artifacts.read_json(preprocess_json)["settings"]
    if preprocess.get("tile_size") is not None:
        raise LesionflowError(
            f"{preprocess_json}: preprocess.tile_size is set; a regression model predicts whole volumes"
        )
    device = resolve_device(infer["device"], "infer.device")
    model, checkpoint = load_regressor(model_path, device)
    # Only the checkpoint knows the spatial axes: flip2 of a 2D model fails before any image is read.
    transforms = get_transforms(names, checkpoint["spatial_dims"])
    rows = read_score_images(images_csv, subset).to_dict("records")
    batch_size = int(infer["batch_size"])
    outputs = []
    with tqdm(total=len(rows), desc=f"infer_scores {subset}", unit="image", file=sys.stderr) as bar:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            volumes = np.stack([_checked_volume(row, checkpoint) for row in chunk])
            outputs.append(tta_outputs(model, torch.from_numpy(volumes).to(device), transforms))
            bar.update(len(chunk))
    values = np.concatenate(outputs) if outputs else np.zeros((0, len(names)))
    table = pd.DataFrame(
        {
            "image_id": [row["image_id"] for row in rows],
            "subject": [row["subject"] for row in rows],
            "visit": [row["visit"] for row in rows],
            "prediction": values.mean(axis=1),
            **{f"prediction_{name}": values[:, i] for i, name in enumerate(names)},
        }
    )
    out = Path(out_dir)
    artifacts.write_csv(table, out / f"{subset}_scores.csv")
    summary = {
        "subset": subset,
        "settings": {"infer": {"tta": names, "batch_size": batch_size, "device": str(device)}},
        "n": len(rows),
        "tta": names,
        "roi_size": list(checkpoint["roi_size"]),
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
    }
    artifacts.write_json(out / f"{subset}_infer.json", summary)
    print(
        f"infer_scores {subset}: {len(rows)} volumes, tta {names}, {summary['seconds']:.1f}s",
        file=sys.stderr,
    )
    return summary
