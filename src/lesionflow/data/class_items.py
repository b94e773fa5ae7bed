"""The preprocess stage's class stacks: each item's bool ``(C, *spatial)`` stack, prepared as its mask.

A stack is cropped and resized channel by channel exactly as the item's binary mask (the union of
its classes) is, and cut into the same tiles, so every channel lies on its item's pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lesionflow.data.class_masks import STACK_FOLDER, save_class_masks
from lesionflow.data.geometry import resize_mask_to
from lesionflow.data.manifest import CLASS_MASKS_COLUMN
from lesionflow.data.tiles import cut_tiles


class PreparedImage(Protocol):
    """What a preprocessed image tells of where it lies in its source: the crop box, the new mask."""

    box: tuple[slice, ...]
    mask: np.ndarray | None


def prepared_stack(stack: np.ndarray, prepared: PreparedImage) -> np.ndarray:
    """A source image's class stack cropped to ``prepared.box`` and resized to its prepared mask's shape."""
    shape = prepared.mask.shape
    return np.stack([resize_mask_to(channel[prepared.box], shape) for channel in stack])


def stack_path(out: Path, item_id: str) -> str:
    """Where the preprocess stage writes an item's class stack."""
    return str(out / STACK_FOLDER / f"{item_id}.npz")


def with_item_stack(item: Mapping[str, Any], stack: np.ndarray, out: Path) -> dict[str, Any]:
    """The item row with its class stack written and named in ``class_masks``."""
    path = stack_path(out, str(item["image_id"]))
    save_class_masks(path, stack)
    return {**item, CLASS_MASKS_COLUMN: path}


def write_stack_tiles(
    rows: Sequence[dict[str, Any]],
    stack: np.ndarray,
    mask: np.ndarray,
    origins: Iterable[Sequence[int]],
    tile: int | Sequence[int],
    out: Path,
) -> None:
    """Cut ``stack`` into the tiles of ``rows`` (one per origin, as the image and mask are cut),
    write each, and name it in its row's ``class_masks``."""
    for row, (_, stack_tile, _) in zip(rows, cut_tiles(stack, mask, origins, tile), strict=True):
        row[CLASS_MASKS_COLUMN] = stack_path(out, str(row["image_id"]))
        save_class_masks(row[CLASS_MASKS_COLUMN], stack_tile)
