"""Which item is in which subset: reading split.csv and loading one subset's images and masks.

Shared by the preprocess, train, tune and evaluate stages, so it must stay small: whatever it
imports is part of all their keys.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.data.class_masks import load_class_masks
from lesionflow.data.manifest import PATH_ATTR, SUBSETS, load_manifest_mask, manifest_has_masks
from lesionflow.io.readers import read_image
from lesionflow.pipeline.errors import LesionflowError

SPLIT_COLUMNS = ("image_id", "subject", "split")


def read_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``split.csv`` with string ids; raise LesionflowError naming the file if malformed."""
    path = Path(path)
    if not path.is_file():
        raise LesionflowError(f"split file {path} does not exist")
    frame = pd.read_csv(
        path, dtype={"image_id": str, "subject": str, "split": str, "source_image_id": str}
    )
    missing = [c for c in SPLIT_COLUMNS if c not in frame.columns]
    if missing:
        raise LesionflowError(f"split file {path} lacks the columns {missing}")
    return frame


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def load_subset(
    manifest_df: pd.DataFrame, split_df: pd.DataFrame, subset: str, class_stacks: bool = False
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Ids, images ``(C, H, W)`` and masks ``(H, W)`` of one split subset, in split.csv order.

    With ``class_stacks`` (several lesion classes), each mask is the item's bool class stack
    ``(n_classes, H, W)`` instead (see ``class_masks``).

    Segmentation reads masks: a manifest without them (see ``manifest.manifest_has_masks``) is a
    LesionflowError naming the manifest (``read_manifest`` keeps its path in the table's attrs).
    """
    if subset not in SUBSETS:
        raise LesionflowError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
    if not manifest_has_masks(manifest_df):
        raise LesionflowError(
            f"manifest {manifest_df.attrs.get(PATH_ATTR, '(not read from a file)')}: the data have no "
            "masks (no mask column); task segmentation needs a mask column (a score-only dataset "
            "trains with task: regression)"
        )
    rows = manifest_df.set_index("image_id", drop=False)
    ids = [str(i) for i in split_df.loc[split_df["split"] == subset, "image_id"]]
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for image_id in ids:
        if image_id not in rows.index:
            raise LesionflowError(
                f"split.csv: image id {image_id!r} ({subset}) is not in the manifest; "
                "the split was made from another dataset"
            )
        row = rows.loc[image_id]
        image = read_image(row["image"]).array
        mask = load_class_masks(row) if class_stacks else load_manifest_mask(row)
        if image.shape[1:] != mask.shape[int(class_stacks) :]:
            raise LesionflowError(
                f"mask {row['mask']} is {_size(mask.shape[int(class_stacks) :])} but its image "
                f"{row['image']} is {_size(image.shape[1:])}; they must match"
            )
        images.append(image)
        masks.append(mask)
    return ids, images, masks
