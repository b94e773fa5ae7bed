"""Tiles: where they start, how they are cut, and how per-tile maps are stitched back together.

Pure array functions, one code path for 2D and 3D. It must never leave a pixel out of every
tile, count a pixel twice when stitching (weights are normalised per pixel), nor hold all the
tiles of a large image at once (tiles come from a generator; stitching keeps two image-sized
float32 accumulators).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from monai.data.utils import compute_importance_map

from lesionflow.pipeline.errors import LesionflowError

# MONAI's default sigma of the Gaussian importance map, as a fraction of the tile size.
GAUSSIAN_SIGMA_SCALE = 0.125
STITCH_WEIGHTS = ("gaussian", "uniform")
# Names of the origin columns of tile rows, from the last spatial axis backwards.
AXIS_NAMES = ("z", "y", "x")


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


@functools.lru_cache(maxsize=32)
def shared_tile_weights(tile: tuple[int, ...], weights: str) -> np.ndarray:
    """:func:`tile_weights`, computed once per tile shape and kept read-only: every image of a
    subset is stitched from windows of the same few shapes."""
    array = tile_weights(tile, weights)
    array.setflags(write=False)
    return array


class Stitcher:
    """Accumulates per-tile maps into their weighted average over a whole image.

    Holds two image-sized float32 arrays (weighted sum and weight sum), never the tiles. Parts of
    a tile past the border (padding) are dropped. Where the tiles agree the result equals them;
    with ``weights="gaussian"`` it equals MONAI's ``sliding_window_inference(mode="gaussian")``
    over the same windows.
    """

    def __init__(self, shape: Sequence[int], weights: str) -> None:
        shared_tile_weights((1,) * len(shape), weights)  # validates the name before any work
        self.shape = tuple(int(size) for size in shape)
        self.weights = weights
        self.total: np.ndarray | None = None
        self.weight_sum = np.zeros(self.shape, dtype=np.float32)

    def add(self, tile_map: np.ndarray, origin: Sequence[int]) -> None:
        """Add one ``(*lead, *tile)`` map whose first corner is at ``origin``."""
        ndim = len(self.shape)
        tile_shape = tuple(tile_map.shape[tile_map.ndim - ndim :])
        if self.total is None:
            lead = tuple(tile_map.shape[: tile_map.ndim - ndim])
            self.total = np.zeros(lead + self.shape, dtype=np.float32)
        region = tile_slices(origin, tile_shape, self.shape)
        inside = tuple(slice(0, s.stop - s.start) for s in region)
        weight = shared_tile_weights(tile_shape, self.weights)[inside]
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
    weights: str,
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
