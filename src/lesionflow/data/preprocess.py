"""The preprocess stage: crop, resize, normalise and tile every image; stitch and map back.

The array functions are pure (arrays in, arrays out, no files) and work on ``(C, *spatial)``
images and ``(*spatial)`` masks through one code path, so 3D volumes take the same route as 2D
pictures. :func:`run_preprocess` is the stage: it reads one source image at a time, writes the
preprocessed image and its tiles, and a manifest and split of the tiles that training reads.

It must never:

- let a tile of one source image carry another image's subject or id: tile rows keep the
  source image's subject, so a subject-grouped split keeps every tile of an image together;
- leave a pixel out of every tile, or count a pixel twice when stitching (weights are
  normalised per pixel);
- hold all the tiles of a large image at once: tiles are cut by a generator and stitched into
  two image-sized float32 accumulators;
- turn a binary mask into anything but a binary mask.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from lesionflow.data import dataset
from lesionflow.data.split import read_split
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.config import fill_defaults, run_section_schema
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.resources import peak_rss_mb

# A fundus disc is far brighter than this (about 0.3-0.9 at its darkest rim), while the black
# surround of a JPEG fundus photograph stays below about 0.05 (about 12 / 255).
FOV_THRESHOLD = 0.06
# Openings of this many iterations of the cross-shaped element cut the thin bridges that join
# specks and burnt-in text to the disc; the largest connected component then drops them.
FOV_OPENING_ITERATIONS = 2
# MONAI's default sigma of the Gaussian importance map, as a fraction of the tile size.
GAUSSIAN_SIGMA_SCALE = 0.125
STITCH_WEIGHTS = ("gaussian", "uniform")
# none: pixels as read, in [0, 1]; image: each channel of each image to mean 0 and std 1.
NORMALISATIONS = ("none", "image")
# Names of the origin columns of tile rows, from the last spatial axis backwards.
AXIS_NAMES = ("z", "y", "x")
# Interpolation used when a resize enlarges an image, by number of spatial dimensions.
UPSAMPLING_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def foreground(image: np.ndarray, threshold: float = FOV_THRESHOLD) -> np.ndarray:
    """Pixels whose brightest channel exceeds ``threshold``, as bool ``(*spatial)``."""
    return image.max(axis=0) > threshold


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a bool mask; an all-False mask when it has none."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def field_of_view_box(image: np.ndarray, threshold: float = FOV_THRESHOLD) -> tuple[slice, ...]:
    """The bounding box of the bright field of view (a fundus disc on black), one slice per axis.

    ``image`` is ``(C, *spatial)`` in [0, 1]. Foreground is where the brightest channel exceeds
    ``threshold``; a binary opening and the largest connected component remove noise specks and
    burnt-in labels, so they cannot widen the box. Returns slices of the spatial axes only (index
    an image with ``image[(slice(None), *box)]``, a mask with ``mask[box]``); the whole image
    when no field of view is found.
    """
    spatial = image.shape[1:]
    opened = ndimage.binary_opening(foreground(image, threshold), iterations=FOV_OPENING_ITERATIONS)
    disc = largest_component(opened)
    box = ndimage.find_objects(disc.astype(np.uint8))
    if not box or box[0] is None:
        return tuple(slice(0, size) for size in spatial)
    return tuple(box[0])


def resize_scale(shape: Sequence[int], max_size: int) -> float:
    """The scale that brings the longest spatial side of ``shape`` down to ``max_size``.

    Never above 1: small images are not enlarged. ``shape`` is the spatial shape.
    """
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1:
        raise LesionflowError(f"preprocess.max_size: expected a positive integer, got {max_size!r}")
    return min(1.0, max_size / max(shape))


def resized_shape(shape: Sequence[int], scale: float) -> tuple[int, ...]:
    """The spatial shape after resizing by ``scale``: each side rounded, at least 1 pixel."""
    return tuple(max(1, round(size * scale)) for size in shape)


def _interpolate(array: np.ndarray, scale: float, mode_down: str = "area") -> np.ndarray:
    """``(C, *spatial)`` float32 resized by ``scale`` (area average down, linear up)."""
    size = resized_shape(array.shape[1:], scale)
    mode = mode_down if scale < 1 else UPSAMPLING_MODES[len(size)]
    options: dict[str, Any] = {} if mode == "area" else {"align_corners": False}
    # from_numpy shares the caller's memory: only the (smaller) result is allocated.
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    return F.interpolate(tensor, size=size, mode=mode, **options)[0].numpy()


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """A ``(C, *spatial)`` image resized by ``scale``, keeping its aspect; scale 1 returns it as is.

    Downscaling averages the source pixels under each output pixel (area interpolation, free of
    aliasing); upscaling is (bi/tri)linear.
    """
    if scale == 1:
        return image
    return _interpolate(image, scale)


def resize_mask(mask: np.ndarray, scale: float) -> np.ndarray:
    """A bool ``(*spatial)`` mask resized by ``scale``, still bool; scale 1 returns it as is.

    The mask is area-averaged and cut at 0.5 (a majority vote of the source pixels under each
    output pixel) rather than sampled with nearest neighbour: nearest keeps or drops a small lesion
    by where one sample happens to fall, and shifts outlines by up to a source pixel, while the
    vote is deterministic and keeps the lesion area on average. Ties count as lesion, so a lesion
    covering half an output pixel is kept. Upscaling interpolates linearly and cuts at 0.5 too.
    """
    if scale == 1:
        return mask
    return _interpolate(mask[None].astype(np.float32), scale)[0] >= 0.5


def normalise_channels(
    image: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image - mean) / std`` per channel, with the ``mean`` and ``std`` used (float32 ``(C,)``).

    ``mean`` / ``std`` default to the image's own statistics; pass a training set's to normalise
    other images alike. A constant channel has std 0 and is divided by 1 instead, so it becomes 0
    rather than NaN.
    """
    axes = tuple(range(1, image.ndim))
    if mean is None:
        mean = image.mean(axis=axes, dtype=np.float64)
    if std is None:
        std = image.std(axis=axes, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    safe_std = np.where(std > 0, std, np.float32(1.0))
    expand = (slice(None),) + (None,) * len(axes)
    normalised = (image.astype(np.float32) - mean[expand]) / safe_std[expand]
    return normalised, mean, std


def _per_axis(value: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, Sequence) else (value,) * ndim


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0


def checked_tile_and_stride(
    tile: int | Sequence[int], stride: int | Sequence[int], ndim: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``tile`` and ``stride`` as one int per spatial axis, checked.

    Raises LesionflowError naming ``preprocess.tile_size`` / ``preprocess.tile_stride`` unless
    both are positive integers (or sequences of ``ndim`` of them) with stride <= tile.
    """
    tiles, strides = _per_axis(tile, ndim), _per_axis(stride, ndim)
    if len(tiles) != ndim or not all(_is_positive_int(t) for t in tiles):
        raise LesionflowError(
            f"preprocess.tile_size: expected a positive integer (or {ndim} of them), got {tile!r}"
        )
    if len(strides) != ndim or not all(_is_positive_int(s) for s in strides):
        raise LesionflowError(
            f"preprocess.tile_stride: expected a positive integer (or {ndim} of them), got {stride!r}"
        )
    if any(s > t for s, t in zip(strides, tiles, strict=True)):
        raise LesionflowError(
            f"preprocess.tile_stride: {stride!r} is larger than preprocess.tile_size {tile!r}; "
            "the pixels between tiles would be in none of them"
        )
    return tuple(int(t) for t in tiles), tuple(int(s) for s in strides)


def axis_origins(size: int, tile: int, stride: int) -> list[int]:
    """Tile starts along one axis: every ``stride`` from 0, the last one flush with the end.

    A side shorter than the tile gets one tile at 0 (padded at the end by :func:`cut_tiles`).
    """
    return list(range(0, size - tile, stride)) + [max(size - tile, 0)]


def tile_origins(
    shape: Sequence[int], tile: int | Sequence[int], stride: int | Sequence[int]
) -> list[tuple[int, ...]]:
    """Top-left (first) corners of tiles that cover every pixel of a ``shape`` (spatial) image.

    Tiles start every ``stride`` pixels along each axis and the last tile of each axis is flush
    with the border, so no tile reaches outside an image at least one tile large and no padding is
    needed (the last step is shorter than ``stride``). A side shorter than ``tile`` gets a single
    tile at 0, which :func:`cut_tiles` pads with zeros at the end (bottom/right). With stride ==
    tile and sides that are multiples of it, tiles do not overlap. These are the window
    placements of MONAI's ``sliding_window_inference`` with ``overlap = 1 - stride / tile``,
    except that MONAI pads a too-small image on both sides rather than at the end. Row-major order.
    """
    tiles, strides = checked_tile_and_stride(tile, stride, len(shape))
    per_axis = [axis_origins(*sizes) for sizes in zip(shape, tiles, strides, strict=True)]
    return [tuple(origin) for origin in itertools.product(*per_axis)]


def tile_slices(origin: Sequence[int], tile: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    """The part of the image a tile at ``origin`` covers (cut at the border), one slice per axis."""
    return tuple(
        slice(start, min(start + size, end)) for start, size, end in zip(origin, tile, shape, strict=True)
    )


def crop_or_pad(array: np.ndarray, origin: Sequence[int], tile: Sequence[int]) -> np.ndarray:
    """A new ``(*lead, *tile)`` array: the tile of ``array`` at ``origin``, zero beyond its border.

    The spatial axes are the last ``len(tile)`` axes of ``array``.
    """
    ndim = len(tile)
    lead = array.shape[: array.ndim - ndim]
    region = tile_slices(origin, tile, array.shape[array.ndim - ndim :])
    out = np.zeros(lead + tuple(tile), dtype=array.dtype)
    inside = tuple(slice(0, s.stop - s.start) for s in region)
    out[(..., *inside)] = array[(..., *region)]
    return out


def cut_tiles(
    image: np.ndarray, mask: np.ndarray, origins: Iterable[Sequence[int]], tile: int | Sequence[int]
) -> Iterator[tuple[tuple[int, ...], np.ndarray, np.ndarray]]:
    """Yield ``(origin, image_tile, mask_tile)`` for each origin, one tile at a time.

    ``image`` is ``(C, *spatial)``, ``mask`` ``(*spatial)``; tiles are new ``(C, *tile)`` and
    ``(*tile)`` arrays (safe to modify), zero-padded where they reach past the border. A generator,
    so a large image is never copied into all its tiles at once.
    """
    tiles = _per_axis(tile, mask.ndim)
    for origin in origins:
        yield tuple(origin), crop_or_pad(image, origin, tiles), crop_or_pad(mask, origin, tiles)


def tile_weights(tile: Sequence[int], weights: str) -> np.ndarray:
    """The blending weight of each pixel of a tile, float32 ``(*tile)``.

    ``gaussian`` is MONAI's importance map (sigma = 0.125 of the tile size, minimum clamped to a
    small positive value), so tile borders, where a network sees least context, count least;
    ``uniform`` weighs every pixel alike. Raises LesionflowError naming
    ``preprocess.stitch_weights`` for another value.
    """
    if weights not in STITCH_WEIGHTS:
        raise LesionflowError(
            f"preprocess.stitch_weights: expected one of {', '.join(STITCH_WEIGHTS)}, got {weights!r}"
        )
    mode = "gaussian" if weights == "gaussian" else "constant"
    importance = compute_importance_map(
        tuple(tile), mode=mode, sigma_scale=GAUSSIAN_SIGMA_SCALE, dtype=torch.float32
    )
    return importance.numpy()


class Stitcher:
    """Accumulates per-tile maps into their weighted average over a whole image.

    Holds two image-sized float32 arrays (weighted sum and weight sum), never the tiles. Parts of
    a tile past the border (padding) are dropped. Where the tiles agree the result equals them;
    with ``weights="gaussian"`` it equals MONAI's ``sliding_window_inference(mode="gaussian")``
    over the same windows.
    """

    def __init__(self, shape: Sequence[int], weights: str = "gaussian") -> None:
        tile_weights((1,) * len(shape), weights)  # validates the name before any work
        self.shape = tuple(int(size) for size in shape)
        self.weights = weights
        self.total: np.ndarray | None = None
        self.weight_sum = np.zeros(self.shape, dtype=np.float32)
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def add(self, tile_map: np.ndarray, origin: Sequence[int]) -> None:
        """Add one ``(*lead, *tile)`` map whose first corner is at ``origin``."""
        ndim = len(self.shape)
        tile_shape = tuple(tile_map.shape[tile_map.ndim - ndim :])
        if tile_shape not in self._cache:
            self._cache[tile_shape] = tile_weights(tile_shape, self.weights)
        if self.total is None:
            lead = tuple(tile_map.shape[: tile_map.ndim - ndim])
            self.total = np.zeros(lead + self.shape, dtype=np.float32)
        region = tile_slices(origin, tile_shape, self.shape)
        inside = tuple(slice(0, s.stop - s.start) for s in region)
        weight = self._cache[tile_shape][inside]
        self.total[(..., *region)] += np.asarray(tile_map, dtype=np.float32)[(..., *inside)] * weight
        self.weight_sum[region] += weight

    def result(self) -> np.ndarray:
        """The stitched float32 ``(*lead, *shape)`` map; ValueError if a pixel got no tile."""
        if self.total is None or not (self.weight_sum > 0).all():
            raise ValueError("stitch: the tiles do not cover every pixel of the image")
        return self.total / self.weight_sum


def stitch(
    tiles: Iterable[np.ndarray],
    origins: Iterable[Sequence[int]],
    shape: Sequence[int],
    weights: str = "gaussian",
) -> np.ndarray:
    """The weighted average of overlapping per-tile maps, as one float32 ``(*lead, *shape)`` map.

    ``tiles`` are ``(*lead, *tile)`` maps (for example probabilities, with or without a channel
    axis) in the order of ``origins``, and may be a generator; ``shape`` is the spatial shape of
    the full image. See :class:`Stitcher`.
    """
    stitcher = Stitcher(shape, weights)
    for tile_map, origin in zip(tiles, origins, strict=True):
        stitcher.add(tile_map, origin)
    return stitcher.result()


def tile_id(image_id: str, origin: Sequence[int]) -> str:
    """The id of the tile of ``image_id`` at ``origin``, e.g. ``IDRiD_01_t0512_1024`` (y, x)."""
    return f"{image_id}_t" + "_".join(f"{int(start):04d}" for start in origin)


def tile_rows(image_id: str, subject: str, origins: Iterable[Sequence[int]]) -> list[dict[str, Any]]:
    """Manifest rows of the tiles of one source image, one per origin.

    Columns: ``image_id`` (the tile id), ``source_image_id``, ``subject`` (the source image's
    subject, so tiles split with their image) and ``origin_y``, ``origin_x`` (``origin_z`` first
    in 3D).
    """
    rows = []
    for origin in origins:
        names = AXIS_NAMES[len(AXIS_NAMES) - len(origin) :]
        row: dict[str, Any] = {
            "image_id": tile_id(image_id, origin),
            "source_image_id": image_id,
            "subject": subject,
        }
        row.update({f"origin_{name}": int(start) for name, start in zip(names, origin, strict=True)})
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the stage

# How a preprocessed image is stored: float16 keeps a normalised image to about 1e-3, far below
# the 1/255 steps of the 8-bit source, at half the size of float32.
IMAGE_SUFFIX = ".npy"
MASK_SUFFIX = ".png"
ITEM_COLUMNS = ["image_id", "subject", "image", "mask", "source_image_id"]
IMAGE_COLUMNS = [
    "image_id", "subject", "split", "image", "mask", "original_image", "original_mask",
    "original_height", "original_width", "crop_y0", "crop_y1", "crop_x0", "crop_x1",
    "scale", "height", "width", "lesion_pixels",
]


def preprocess_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The preprocess section with the schema's defaults filled; an unknown key is an error naming it."""
    if "preprocess" in settings and isinstance(settings["preprocess"], Mapping):
        settings = settings["preprocess"]
    section, schema = run_section_schema("preprocess")
    unknown = [key for key in settings if key not in section["properties"]]
    if unknown:
        raise LesionflowError(
            f"preprocess.{unknown[0]}: unknown setting; expected {', '.join(section['properties'])}"
        )
    resolved = fill_defaults(dict(settings), section, schema)
    if resolved["max_size"] is not None:
        resize_scale((1, 1), resolved["max_size"])  # validates it, naming preprocess.max_size
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
        and settings["max_size"] is None
        and settings["normalise"] == "none"
        and settings["tile_size"] is None
    )


@dataclass(frozen=True)
class Prepared:
    """One source image after preprocessing, and where it came from in the original."""

    image: np.ndarray
    mask: np.ndarray
    box: tuple[slice, ...]
    scale: float


def prepare_image(image: np.ndarray, mask: np.ndarray, settings: Mapping[str, Any]) -> Prepared:
    """Crop to the field of view, resize and normalise one image and its mask, as configured."""
    box = (
        field_of_view_box(image)
        if settings["crop_field_of_view"]
        else tuple(slice(0, size) for size in image.shape[1:])
    )
    image, mask = image[(slice(None), *box)], mask[box]
    scale = 1.0 if settings["max_size"] is None else resize_scale(image.shape[1:], settings["max_size"])
    image, mask = resize_image(image, scale), resize_mask(mask, scale)
    if settings["normalise"] == "image":
        image = normalise_channels(image)[0]
    return Prepared(image, mask, box, scale)


def resize_to(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A ``(*spatial)`` float map resized to ``shape`` (bi/trilinear), as float32."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    mode = UPSAMPLING_MODES[len(shape)]
    return F.interpolate(tensor, size=tuple(shape), mode=mode, align_corners=False)[0, 0].numpy()


def restore_map(prob: np.ndarray, row: Mapping[str, Any]) -> np.ndarray:
    """A preprocessed-resolution probability map placed back on its original image, float32.

    ``row`` is the image's row of ``images.csv``. The map is resized (bilinear) to the
    field-of-view box and pasted into an original-sized map that is 0 outside the box, so metrics
    are computed at the resolution of the reference mask.
    """
    box = (int(row["crop_y1"]) - int(row["crop_y0"]), int(row["crop_x1"]) - int(row["crop_x0"]))
    inside = prob if tuple(prob.shape) == box else resize_to(prob, box)
    full = np.zeros((int(row["original_height"]), int(row["original_width"])), dtype=np.float32)
    full[int(row["crop_y0"]) : int(row["crop_y1"]), int(row["crop_x0"]) : int(row["crop_x1"])] = inside
    return full


def _save_mask(mask: np.ndarray, path: Path) -> None:
    with artifacts.atomic_path(path) as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")


def _save_image(image: np.ndarray, path: Path) -> None:
    with artifacts.atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, image.astype(np.float16))


def _image_row(
    row: Mapping[str, Any], split: str, original_shape: Sequence[int], prepared: Prepared, out: Path
) -> dict[str, Any]:
    image_id = str(row["image_id"])
    box = prepared.box
    return {
        "image_id": image_id,
        "subject": str(row["subject"]),
        "split": split,
        "image": str(out / "images" / f"{image_id}{IMAGE_SUFFIX}"),
        "mask": str(out / "masks" / f"{image_id}{MASK_SUFFIX}"),
        "original_image": row["image"],
        "original_mask": row["mask"],
        "original_height": int(original_shape[0]),
        "original_width": int(original_shape[1]),
        "crop_y0": box[0].start,
        "crop_y1": box[0].stop,
        "crop_x0": box[1].start,
        "crop_x1": box[1].stop,
        "scale": prepared.scale,
        "height": int(prepared.mask.shape[0]),
        "width": int(prepared.mask.shape[1]),
        "lesion_pixels": int(prepared.mask.sum()),
    }


def _write_tiles(
    prepared: Prepared, image_row: Mapping[str, Any], settings: Mapping[str, Any], out: Path
) -> list[dict[str, Any]]:
    tile = settings["tile_size"]
    origins = tile_origins(prepared.mask.shape, tile, settings["tile_stride"])
    rows = tile_rows(image_row["image_id"], image_row["subject"], origins)
    for row, (_, image_tile, mask_tile) in zip(
        rows, cut_tiles(prepared.image, prepared.mask, origins, tile), strict=True
    ):
        row["image"] = str(out / "tiles" / f"{row['image_id']}{IMAGE_SUFFIX}")
        row["mask"] = str(out / "tile_masks" / f"{row['image_id']}{MASK_SUFFIX}")
        row["lesion_pixels"] = int(mask_tile.sum())
        _save_image(image_tile, Path(row["image"]))
        _save_mask(mask_tile, Path(row["mask"]))
    return rows


def _identity_tables(manifest_df: pd.DataFrame, split_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Nothing to change: the items are the source images, read where the data stage left them.
    items = manifest_df.copy()
    items["source_image_id"] = items["image_id"]
    images = []
    for row, split in zip(manifest_df.to_dict("records"), split_df["split"], strict=True):
        height, width = Image.open(row["image"]).size[::-1]
        images.append(
            {
                "image_id": row["image_id"], "subject": row["subject"], "split": split,
                "image": row["image"], "mask": row["mask"], "original_image": row["image"],
                "original_mask": row["mask"], "original_height": height, "original_width": width,
                "crop_y0": 0, "crop_y1": height, "crop_x0": 0, "crop_x1": width, "scale": 1.0,
                "height": height, "width": width, "lesion_pixels": None,
            }
        )
    return items, pd.DataFrame(images, columns=IMAGE_COLUMNS)


def _prepared_tables(
    manifest_df: pd.DataFrame, split_df: pd.DataFrame, settings: Mapping[str, Any], out: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prepare and write every source image (and its tiles), one at a time; return both tables."""
    item_rows, image_rows = [], []
    records = manifest_df.to_dict("records")
    for row, split in tqdm(
        zip(records, split_df["split"], strict=True), total=len(records), desc="preprocess",
        unit="image", file=sys.stderr,
    ):
        image = dataset.load_image(row["image"])
        prepared = prepare_image(image, dataset.load_manifest_mask(row), settings)
        image_row = _image_row(row, split, image.shape[1:], prepared, out)
        del image
        _save_image(prepared.image, Path(image_row["image"]))
        _save_mask(prepared.mask, Path(image_row["mask"]))
        image_rows.append(image_row)
        if settings["tile_size"] is None:
            item_rows.append({**image_row, "source_image_id": image_row["image_id"]})
        else:
            item_rows += _write_tiles(prepared, image_row, settings, out)
    items = pd.DataFrame(item_rows)
    images = pd.DataFrame(image_rows, columns=IMAGE_COLUMNS)
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
    """
    settings = preprocess_settings(settings)
    started = time.perf_counter()
    out = Path(out_dir).absolute()
    manifest_df = dataset.read_manifest(manifest_path)
    split_df = read_split(split_path).set_index("image_id").loc[manifest_df["image_id"]].reset_index()
    if is_identity(settings):
        items, images = _identity_tables(manifest_df, split_df)
    else:
        items, images = _prepared_tables(manifest_df, split_df, settings, out)
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
