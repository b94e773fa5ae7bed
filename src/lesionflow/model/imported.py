"""The import_predictions stage: another tool's predictions (an nnU-Net folder, or masks or maps named
by image id) as an external run's probability maps, in the infer stage's files.

Must never read a test prediction when importing validation (tuning must not see them), nor turn a
hard mask into a probability: a masks-only run says so in its record.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionflow.data.axis_columns import axis_values
from lesionflow.data.subsets import read_split
from lesionflow.io.prediction_folder import read_prediction_folder, write_subset_npz
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

SUBSETS = ("val", "test")
# The presence table of the infer stage; an imported run has no image-level classifier.
PRESENCE_COLUMNS = ("image_id", "presence_logit", "presence_probability")


def expected_shapes(images: pd.DataFrame, image_ids: list[str]) -> dict[str, tuple[int, ...]]:
    """Each image id's spatial shape as lesionflow reads the image (the data stage's images.csv)."""
    shapes = dict(zip(images["image_id"].astype(str), images["shape"], strict=True))
    missing = [image_id for image_id in image_ids if image_id not in shapes]
    if missing:
        raise LesionflowError(f"images.csv of the data stage lacks the image ids {missing[:5]}")
    return {image_id: tuple(int(n) for n in axis_values(shapes[image_id], "shape")) for image_id in image_ids}


def subset_ids(split: pd.DataFrame, subset: str) -> tuple[list[str], list[str]]:
    """The image ids of ``subset`` and those of every other subset (whose files are skipped)."""
    ids = split["image_id"].astype(str)
    chosen = split["split"] == subset
    return ids[chosen].tolist(), ids[~chosen].tolist()


def run_import(
    images_path: str | os.PathLike,
    split_path: str | os.PathLike,
    settings: dict[str, Any],
    subset: str,
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Write ``<subset>.npz`` (one map per image at its original size), ``<subset>_tiles.npz`` (the
    same maps: an external run's items are its whole images), ``<subset>_presence.csv`` (no
    classifier: empty) and ``<subset>_infer.json`` (the folder, its kind, formats and notes) from the
    run's ``external`` settings (``predictions`` folder, lesion ``label``); return the record.
    """
    if subset not in SUBSETS:
        raise LesionflowError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
    external = complete_section(settings, "external", ("predictions", "label"))
    images = pd.read_csv(images_path, dtype={"image_id": str})
    wanted, others = subset_ids(read_split(split_path), subset)
    folder = Path(external["predictions"])
    predictions = read_prediction_folder(
        folder, expected_shapes(images, wanted), int(external["label"]), skipped_ids=others
    )
    out = Path(out_dir)
    for name in (f"{subset}.npz", f"{subset}_tiles.npz"):
        write_subset_npz(predictions, out / name)
    presence = pd.DataFrame({"image_id": wanted, "presence_logit": np.nan, "presence_probability": np.nan})
    artifacts.write_csv(presence[list(PRESENCE_COLUMNS)], out / f"{subset}_presence.csv")
    record = {
        "subset": subset,
        "source": "external",
        "folder": str(folder),
        "label": int(external["label"]),
        "kind": predictions.kind,
        "n_images": len(wanted),
        "formats": predictions.formats,
        "notes": predictions.notes,
    }
    artifacts.write_json(out / f"{subset}_infer.json", record)
    print(
        f"import {subset}: {len(wanted)} images from {folder} ({predictions.kind})"
        + "".join(f"; {note}" for note in predictions.notes),
        file=sys.stderr,
    )
    return record
