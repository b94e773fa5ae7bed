"""Several lesion classes in the data stage: each image's classes read once, stored as one stack.

The data stage reads an image's reference as the user stored it (a label map split by class, or
one mask column per class) and writes two files per image into its folder:

- ``class_masks/<image_id>.npz``: the bool ``(C, *spatial)`` stack, a channel per class (or
  region), laid out as the image reads; every per-class step reads it, and nothing else;
- ``lesion_masks/<image_id><suffix>``: the union of the classes, a binary mask in the image's own
  format and geometry.

Its manifest's ``mask`` column names the union, so whatever asks "is there a lesion" (the split's
stratification, the lesion tables, tiles, oversampling) reads it as it reads a binary dataset's
mask, and a binary dataset's artifacts are what they were; its ``class_masks`` column names the
stack; and ``classes.json`` beside it says what the channels are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from lesionflow.data.lesion_classes import OVERLAPPING, LesionClasses, classes_from_record
from lesionflow.data.manifest import (
    CLASS_MASKS_COLUMN,
    MASK_CHANNEL_COLUMN,
    MASK_THRESHOLD_COLUMN,
    mask_reading,
)
from lesionflow.io.geometry import Loaded
from lesionflow.io.label_maps import read_label_map
from lesionflow.io.readers import export_suffix, read_mask, write_mask_like
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError

CLASSES_FILE = "classes.json"
# The one array in a stack's .npz.
STACK_NAME = "masks"
STACK_FOLDER, UNION_FOLDER = "class_masks", "lesion_masks"
CLASS_IMAGE_COLUMNS = ["image_id", "subject", "class", "lesion_pixels", "n_lesions"]
CLASS_LESION_COLUMNS = ["image_id", "subject", "class", "lesion_pixels"]


def read_reference(row: Mapping[str, Any], classes: LesionClasses) -> Loaded:
    """One user manifest row's reference as a bool ``(C, *spatial)`` stack, one channel per class,
    and its geometry: its label map (``mask``) split by class, or its mask columns read as masks
    (each honouring the row's ``mask_channel`` and ``mask_threshold``). Errors name the file."""
    options = mask_reading(row)
    if classes.kind == OVERLAPPING:
        masks = [read_mask(row[column], **options) for column in classes.columns]
        shapes = {row[column]: mask.array.shape for column, mask in zip(classes.columns, masks, strict=True)}
        if len(set(shapes.values())) > 1:
            raise LesionflowError(f"the class masks of image {row.get('image')} differ in shape: {shapes}")
        stack = classes.stacked({name: mask.array for name, mask in zip(classes.names, masks, strict=True)})
        return Loaded(stack, masks[0].geometry)
    label_map = read_label_map(row["mask"], options.get("channel"))
    try:
        return Loaded(classes.channels(label_map.array), label_map.geometry)
    except LesionflowError as error:
        raise LesionflowError(f"label map {row['mask']}: {error}") from None


def write_classes(folder: str | os.PathLike, classes: LesionClasses) -> None:
    """Write ``classes.json`` into ``folder``, beside the manifest whose stacks it describes."""
    artifacts.write_json(Path(folder) / CLASSES_FILE, classes.record)


def manifest_classes(manifest: str | os.PathLike) -> LesionClasses | None:
    """The classes of the stage manifest at ``manifest`` (its ``classes.json``), or None: binary data."""
    path = Path(manifest).with_name(CLASSES_FILE)
    return classes_from_record(artifacts.read_json(path)) if path.is_file() else None


def load_class_masks(row: Mapping[str, Any]) -> np.ndarray:
    """The bool ``(C, *spatial)`` class stack of one stage manifest row (its ``class_masks`` file)."""
    path = row.get(CLASS_MASKS_COLUMN)
    if not isinstance(path, str) or not path:
        raise LesionflowError(
            f"image {row.get('image_id')}: the manifest row has no {CLASS_MASKS_COLUMN} file; it was "
            "written for binary data (data.labels null)"
        )
    with np.load(path, allow_pickle=False) as stored:
        return stored[STACK_NAME].astype(bool, copy=False)


def save_class_masks(path: str | os.PathLike, stack: np.ndarray) -> None:
    """Write a bool ``(C, *spatial)`` class stack (atomically; compressed, as masks are mostly 0)."""
    artifacts.save_arrays(path, {STACK_NAME: np.asarray(stack, dtype=bool)})


def class_rows(image_id: str, subject: str, stack: np.ndarray, classes: LesionClasses) -> tuple[list, list]:
    """The per-class image rows (lesion pixels, lesion count) and lesion rows (one per connected
    component, face neighbours as in the binary tables) of one image's class stack."""
    images, lesions = [], []
    for name, channel in zip(classes.names, stack, strict=True):
        labels, count = ndimage.label(channel)
        sizes = np.bincount(labels.ravel())[1:]
        images.append(
            {
                "image_id": image_id,
                "subject": subject,
                "class": name,
                "lesion_pixels": int(channel.sum()),
                "n_lesions": int(count),
            }
        )
        lesions += [
            {"image_id": image_id, "subject": subject, "class": name, "lesion_pixels": int(n)} for n in sizes
        ]
    return images, lesions


def split_classes(
    manifest_df: pd.DataFrame, classes: LesionClasses, out: str | os.PathLike, relative: bool
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The manifest with each row's ``mask`` the union of its classes and ``class_masks`` its stack
    (both written under ``out``), and the per-class image and lesion tables.

    ``manifest_df`` has absolute paths (``read_manifest``'s table). ``relative`` writes the new
    cells relative to ``out`` (where the manifest goes, as the built-in generator writes its
    paths), else absolute. ``mask_channel`` and ``mask_threshold`` are dropped: they said how to
    read the user's masks, and the union is written binary.
    """
    out = Path(out)
    (out / STACK_FOLDER).mkdir(parents=True, exist_ok=True)
    (out / UNION_FOLDER).mkdir(parents=True, exist_ok=True)
    unions, stacks, image_rows, lesion_rows = [], [], [], []
    for row in manifest_df.to_dict("records"):
        image_id, subject = str(row["image_id"]), str(row["subject"])
        stack = read_reference(row, classes).array
        stack_name = f"{STACK_FOLDER}/{image_id}.npz"
        union_name = f"{UNION_FOLDER}/{image_id}{export_suffix(row['image'])}"
        save_class_masks(out / stack_name, stack)
        write_mask_like(out / union_name, stack.any(axis=0), row["image"])
        stacks.append(stack_name if relative else str((out / stack_name).absolute()))
        unions.append(union_name if relative else str((out / union_name).absolute()))
        images, lesions = class_rows(image_id, subject, stack, classes)
        image_rows += images
        lesion_rows += lesions
    dropped = [c for c in (MASK_CHANNEL_COLUMN, MASK_THRESHOLD_COLUMN, *classes.columns) if c in manifest_df]
    manifest = manifest_df.drop(columns=dropped).assign(mask=unions, **{CLASS_MASKS_COLUMN: stacks})
    return (
        manifest,
        pd.DataFrame(image_rows, columns=CLASS_IMAGE_COLUMNS),
        pd.DataFrame(lesion_rows, columns=CLASS_LESION_COLUMNS),
    )


def with_class_tables(
    images: pd.DataFrame, class_images: pd.DataFrame, class_lesions: pd.DataFrame, classes: LesionClasses
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """The data stage's tables of several classes: the image table (lesion columns of the union)
    with ``lesion_pixels_<class>`` and ``n_lesions_<class>`` columns, the lesion table one row per
    lesion of each class (a ``class`` column), and the summary's ``classes`` block."""
    wide = class_images.pivot(index="image_id", columns="class", values=["lesion_pixels", "n_lesions"])
    columns = {
        f"{measure}_{name}": wide[(measure, name)].reindex(images["image_id"]).to_numpy()
        for name in classes.names
        for measure in ("lesion_pixels", "n_lesions")
    }
    return images.assign(**columns), class_lesions, class_summary(class_images, class_lesions, classes)


def class_summary(images: pd.DataFrame, lesions: pd.DataFrame, classes: LesionClasses) -> dict[str, Any]:
    """Per class: images with and without it, its lesion count and lesion sizes (pixels)."""
    summary: dict[str, Any] = {"kind": classes.kind, "names": list(classes.names), "per_class": {}}
    for name in classes.names:
        own = images[images["class"] == name]
        areas = lesions.loc[lesions["class"] == name, "lesion_pixels"].to_numpy(dtype=float)
        positive = int((own["lesion_pixels"] > 0).sum())
        summary["per_class"][name] = {
            "n_images_with": positive,
            "n_images_without": len(own) - positive,
            "n_lesions": int(areas.size),
            "median_lesion_pixels": float(np.median(areas)) if areas.size else None,
        }
    return summary
