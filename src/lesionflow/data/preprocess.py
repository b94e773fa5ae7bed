"""The preprocess stage: crop, resize, normalise and tile every image, and record how to map back.

:func:`run_preprocess` reads one source image at a time, writes the preprocessed image and its
tiles, and a manifest and split of the items that training reads. The array work is in
``geometry`` (crop box, resize) and ``tiles`` (cutting, stitching).

It must never:

- let a tile of one source image carry another image's subject or id: tile rows keep the
  source image's subject, so a subject-grouped split keeps every tile of an image together;
- fill a setting the pipeline did not hand it: settings arrive complete (the schema's defaults
  are filled by ``pipeline.config``), and are only checked here;
- hold more than one source image at a time.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from lesionflow.data.axis_columns import axis_cell
from lesionflow.data.class_items import prepared_stack, with_item_stack, write_stack_tiles
from lesionflow.data.class_masks import load_class_masks, manifest_classes, write_classes
from lesionflow.data.geometry import (
    field_of_view_box,
    resample_factors,
    resampled_shape,
    resize_image_to,
    resize_mask_to,
    resize_scale,
)
from lesionflow.data.intensity import NORMALISATIONS, normalised
from lesionflow.data.manifest import (
    load_manifest_image,
    load_manifest_mask,
    manifest_has_masks,
    modality_columns,
    read_manifest,
)
from lesionflow.data.score_column import SCORE_COLUMN, VISIT_COLUMN
from lesionflow.data.subsets import read_split
from lesionflow.data.tiles import checked_tile_and_stride, cut_tiles, tile_origins, tile_rows, tile_weights
from lesionflow.io.geometry import Geometry
from lesionflow.io.pictures import PICTURE_SUFFIXES
from lesionflow.io.readers import file_suffix, read_geometry, write_image, write_mask
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.resources import peak_rss_mb

# The keys of the preprocess section, as the schema (pipeline/config.schema.yaml) lists them;
# a test holds the two together, and the schema alone gives their defaults.
SETTING_KEYS = (
    "crop_field_of_view", "target_spacing", "max_size", "normalise", "tile_size", "tile_stride",
    "stitch_weights",
)


# How a preprocessed image is stored (see _save_image); masks by their source's kind (mask_suffix).
IMAGE_SUFFIX = ".npy"
ITEM_COLUMNS = ["image_id", "subject", "image", "mask", "source_image_id"]
# Geometry columns hold one value per spatial axis as a JSON list (see axis_columns), so 2D and 3D
# tables have the same columns; axis_columns.read_axis_columns parses them back.
IMAGE_COLUMNS = [
    "image_id", "subject", "split", "image", "mask", "original_image", "original_mask",
    "original_shape", "original_spacing", "crop_start", "crop_stop", "scale", "shape", "spacing",
    "lesion_pixels",
]
# Data manifest columns that every item and image row carries from its source image when present:
# a regression run's target and the visit that tells a subject's scans apart.
CARRIED_COLUMNS = (SCORE_COLUMN, VISIT_COLUMN)


def carried_columns(manifest_df: pd.DataFrame) -> list[str]:
    """The columns of :data:`CARRIED_COLUMNS` that the data manifest has, in that order."""
    return [column for column in CARRIED_COLUMNS if column in manifest_df.columns]


def preprocess_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocess section, checked: every key known and present, every value valid.

    ``settings`` is the section, or a mapping holding it under ``preprocess``. The pipeline hands
    complete settings; code that builds them by hand fills them with
    ``pipeline.config.complete_run_section("preprocess", ...)``. Errors name the key. The one
    value derived here is ``tile_stride``, which is ``tile_size`` when null (no overlap).
    """
    if "preprocess" in settings and isinstance(settings["preprocess"], Mapping):
        settings = settings["preprocess"]
    unknown = [key for key in settings if key not in SETTING_KEYS]
    if unknown:
        raise LesionflowError(
            f"preprocess.{unknown[0]}: unknown setting; expected {', '.join(SETTING_KEYS)}"
        )
    missing = [key for key in SETTING_KEYS if key not in settings]
    if missing:
        raise LesionflowError(
            f"preprocess.{missing[0]}: missing; the stage takes complete settings "
            "(pipeline.config.complete_run_section fills the schema's defaults)"
        )
    resolved = dict(settings)
    if resolved["max_size"] is not None:
        resize_scale((1, 1), resolved["max_size"])  # validates it, naming preprocess.max_size
    target = resolved["target_spacing"]
    if target is not None and (
        not isinstance(target, list | tuple)
        or not target
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in target)
    ):
        raise LesionflowError(
            f"preprocess.target_spacing: expected null or a list of positive sizes (mm), got {target!r}"
        )
    if resolved["tile_size"] is not None:
        if resolved["tile_stride"] is None:
            resolved["tile_stride"] = resolved["tile_size"]
        checked_tile_and_stride(resolved["tile_size"], resolved["tile_stride"], 1)
    elif resolved["tile_stride"] is not None:
        raise LesionflowError("preprocess.tile_stride: set preprocess.tile_size too, or neither")
    tile_weights((2,), resolved["stitch_weights"])  # validates the name
    if resolved["normalise"] not in NORMALISATIONS:
        raise LesionflowError(
            f"preprocess.normalise: expected one of {', '.join(NORMALISATIONS)}, "
            f"got {resolved['normalise']!r}"
        )
    return resolved


def is_identity(settings: Mapping[str, Any]) -> bool:
    """Whether ``settings`` leave every image as it is: no crop, resize, normalisation or tiles."""
    return (
        not settings["crop_field_of_view"]
        and settings["target_spacing"] is None
        and settings["max_size"] is None
        and settings["normalise"] == "none"
        and settings["tile_size"] is None
    )


@dataclass(frozen=True)
class Prepared:
    """One source image after preprocessing, and where it came from in the original.

    ``mask`` is None for an image without a mask (a dataset of scores only).
    """

    image: np.ndarray
    mask: np.ndarray | None
    box: tuple[slice, ...]
    scale: float


def prepare_image(
    image: np.ndarray,
    mask: np.ndarray | None,
    spacing: Sequence[float],
    settings: Mapping[str, Any],
    source: str,
) -> Prepared:
    """Crop to the field of view, resample, resize and normalise one image and its mask, as configured.

    ``spacing`` is the image's voxel size (its reader's), used with ``target_spacing``; ``source``
    names the image in errors. Every step works from the image alone, so ``mask`` may be None
    (an image without a mask), and the prepared mask is then None too.
    """
    box = (
        field_of_view_box(image)
        if settings["crop_field_of_view"]
        else tuple(slice(0, size) for size in image.shape[1:])
    )
    image = image[(slice(None), *box)]
    factors = resample_factors(spacing, settings["target_spacing"], source)
    shape, scale = resampled_shape(image.shape[1:], factors, settings["max_size"])
    prepared_mask = None if mask is None else resize_mask_to(mask[box], shape)
    image = normalised(resize_image_to(image, shape), settings["normalise"])
    return Prepared(image, prepared_mask, box, scale)


def mask_suffix(source_mask: str | os.PathLike) -> str:
    """How the preprocessed masks of a source mask are stored: PNG for pictures, else ``.npy``.

    A PNG can be opened to look at; volumes have no picture format.
    """
    return ".png" if file_suffix(source_mask) in PICTURE_SUFFIXES else ".npy"


def stored_image(image: np.ndarray) -> np.ndarray:
    """A prepared image as this stage stores it, and so as the network later reads it."""
    # float16 keeps a normalised image to about 1e-3, far below the 1/255 steps of an 8-bit
    # source, at half the size of float32.
    return image.astype(np.float16)


def _save_image(image: np.ndarray, path: Path) -> None:
    write_image(path, stored_image(image))


def _geometry_cells(original: Geometry, box: tuple[slice, ...], shape: Sequence[int]) -> dict[str, str]:
    """The per-axis cells of one source image: where the preprocessed image lies in the original."""
    # A preprocessed pixel covers (box side / preprocessed side) source pixels along each axis;
    # the rounding of the resized shape makes this differ slightly from spacing / scale.
    spacing = [
        pixel * (part.stop - part.start) / n
        for pixel, part, n in zip(original.spacing, box, shape, strict=True)
    ]
    return {
        "original_shape": axis_cell(original.shape),
        "original_spacing": axis_cell(original.spacing),
        "crop_start": axis_cell(part.start for part in box),
        "crop_stop": axis_cell(part.stop for part in box),
        "shape": axis_cell(shape),
        "spacing": axis_cell(spacing),
    }


def _image_row(
    row: Mapping[str, Any],
    split: str,
    original: Geometry,
    prepared: Prepared,
    out: Path,
    carried: Sequence[str],
) -> dict[str, Any]:
    image_id = str(row["image_id"])
    mask = prepared.mask
    return {
        "image_id": image_id,
        "subject": str(row["subject"]),
        "split": split,
        "image": str(out / "images" / f"{image_id}{IMAGE_SUFFIX}"),
        # An image without a mask keeps empty mask cells and unknown (None) lesion pixels.
        "mask": "" if mask is None else str(out / "masks" / f"{image_id}{mask_suffix(row['mask'])}"),
        "original_image": row["image"],
        "original_mask": row["mask"],
        **_geometry_cells(original, prepared.box, prepared.image.shape[1:]),
        "scale": prepared.scale,
        "lesion_pixels": None if mask is None else int(mask.sum()),
        **{column: row[column] for column in carried},
    }


def _write_tiles(
    prepared: Prepared, image_row: Mapping[str, Any], settings: Mapping[str, Any], out: Path,
    stack: np.ndarray | None,
) -> list[dict[str, Any]]:
    tile = settings["tile_size"]
    suffix = Path(image_row["mask"]).suffix
    origins = tile_origins(prepared.mask.shape, tile, settings["tile_stride"])
    rows = tile_rows(image_row["image_id"], image_row["subject"], origins)
    if stack is not None:  # several lesion classes: each tile's class stack beside its mask
        write_stack_tiles(rows, stack, prepared.mask, origins, tile, out)
    for row, (_, image_tile, mask_tile) in zip(
        rows, cut_tiles(prepared.image, prepared.mask, origins, tile), strict=True
    ):
        row.update({column: image_row[column] for column in CARRIED_COLUMNS if column in image_row})
        row["image"] = str(out / "tiles" / f"{row['image_id']}{IMAGE_SUFFIX}")
        row["mask"] = str(out / "tile_masks" / f"{row['image_id']}{suffix}")
        row["lesion_pixels"] = int(mask_tile.sum())
        _save_image(image_tile, Path(row["image"]))
        write_mask(row["mask"], mask_tile)
    return rows


def _identity_tables(manifest_df: pd.DataFrame, split_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Nothing to change: the items are the source images, read where the data stage left them.
    items = manifest_df.copy()
    items["source_image_id"] = items["image_id"]
    carried = carried_columns(manifest_df)
    images = []
    for row, split in zip(manifest_df.to_dict("records"), split_df["split"], strict=True):
        geometry = read_geometry(row["image"])
        whole = tuple(slice(0, size) for size in geometry.shape)
        images.append(
            {
                "image_id": row["image_id"], "subject": row["subject"], "split": split,
                "image": row["image"], "mask": row["mask"], "original_image": row["image"],
                "original_mask": row["mask"], **_geometry_cells(geometry, whole, geometry.shape),
                "scale": 1.0, "lesion_pixels": None, **{column: row[column] for column in carried},
            }
        )
    return items, pd.DataFrame(images, columns=IMAGE_COLUMNS + carried)


def _prepared_tables(
    manifest_df: pd.DataFrame, split_df: pd.DataFrame, settings: Mapping[str, Any], out: Path, classes: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prepare and write every source image (and its tiles), one at a time; return both tables.
    With ``classes`` (data.labels), each image's and tile's class stack is prepared too."""
    item_rows, image_rows = [], []
    carried = carried_columns(manifest_df)
    masks = manifest_has_masks(manifest_df)
    records = manifest_df.to_dict("records")
    for row, split in tqdm(
        zip(records, split_df["split"], strict=True), total=len(records), desc="preprocess",
        unit="image", file=sys.stderr,
    ):
        image, geometry = load_manifest_image(row)
        mask = load_manifest_mask(row) if masks else None
        prepared = prepare_image(image, mask, geometry.spacing, settings, row["image"])
        image_row = _image_row(row, split, geometry, prepared, out, carried)
        del image
        _save_image(prepared.image, Path(image_row["image"]))
        if prepared.mask is not None:
            write_mask(image_row["mask"], prepared.mask)
        stack = prepared_stack(load_class_masks(row), prepared) if classes else None
        image_rows.append(image_row)
        if settings["tile_size"] is None:
            item = {**image_row, "source_image_id": image_row["image_id"]}
            item_rows.append(item if stack is None else with_item_stack(item, stack, out))
        else:
            item_rows += _write_tiles(prepared, image_row, settings, out, stack)
    items = pd.DataFrame(item_rows)
    images = pd.DataFrame(image_rows, columns=IMAGE_COLUMNS + carried)
    return items, images


def run_preprocess(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    settings: Mapping[str, Any],
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """The preprocess stage: write the items training sees, with their split, and the image table.

    Writes to ``out_dir``: ``manifest.csv`` (the items: tiles, or whole preprocessed images when
    not tiling, each with its ``source_image_id`` and its source's subject), ``split.csv`` (each
    item in its source image's subset, so no tile of a test image reaches training),
    ``images.csv`` (each source image: preprocessed file, field-of-view box, scale, original
    size, subset) and ``preprocess.json`` (the settings and counts). Source images are read and
    written one at a time. With nothing to change, the items are the source files themselves.
    Items and image rows carry their source's ``score`` and ``visit`` when the data manifest has
    them (a regression run's target and visit). A data manifest without masks gives items and
    image rows with empty ``mask`` cells and no mask files; tiles, a segmentation feature, are
    then refused naming preprocess.tile_size.
    """
    settings = preprocess_settings(settings)
    started = time.perf_counter()
    out = Path(out_dir).absolute()
    manifest_df = read_manifest(manifest_path)
    classes = manifest_classes(manifest_path)
    if settings["tile_size"] is not None and not manifest_has_masks(manifest_df):
        raise LesionflowError(
            f"preprocess.tile_size: tiles are for segmentation, but the data manifest {manifest_path} "
            "has no masks (no mask column); set preprocess.tile_size: null"
        )
    split_df = read_split(split_path).set_index("image_id").loc[manifest_df["image_id"]].reset_index()
    # Several images per case are stacked into one file, so they are never read in place.
    if is_identity(settings) and not modality_columns(manifest_df.columns):
        items, images = _identity_tables(manifest_df, split_df)
    else:
        items, images = _prepared_tables(manifest_df, split_df, settings, out, classes is not None)
    split_of_source = dict(zip(images["image_id"], images["split"], strict=True))
    item_split = pd.DataFrame(
        {
            "image_id": items["image_id"],
            "subject": items["subject"],
            "split": [split_of_source[i] for i in items["source_image_id"]],
            "source_image_id": items["source_image_id"],
        }
    )
    extras = [c for c in items.columns if c not in ITEM_COLUMNS and c not in IMAGE_COLUMNS]
    if classes is not None:
        write_classes(out, classes)  # before the manifest: a finished manifest has its classes
    artifacts.write_csv(items[ITEM_COLUMNS + extras], out / "manifest.csv")
    artifacts.write_csv(item_split, out / "split.csv")
    artifacts.write_csv(images, out / "images.csv")
    record = {
        "settings": settings,
        "identity": is_identity(settings),
        "n_images": len(images),
        "n_items": len(items),
        "items_per_split": item_split["split"].value_counts().to_dict(),
        "scale": {"min": float(images["scale"].min()), "max": float(images["scale"].max())},
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
    }
    if settings["tile_size"] is not None:
        record["lesion_free_items"] = int((items["lesion_pixels"] == 0).sum())
    artifacts.write_json(out / "preprocess.json", record)
    print(
        f"preprocess: {len(images)} images -> {len(items)} items, "
        f"{record['seconds']:.1f}s, peak RSS {record['peak_rss_mb']:.0f} MiB",
        file=sys.stderr,
    )
    return record
