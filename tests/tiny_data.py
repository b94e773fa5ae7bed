"""Tiny datasets: written into a test's temp dir, or made in memory."""

import numpy as np
import pandas as pd
from PIL import Image

from lesionflow.data.manifest import read_manifest
from lesionflow.io.readers import read_mask


def write_tiny_manifest(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,mask,subject"]
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(folder / f"img{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"mask{i}.png")
        rows.append(f"img{i}.png,mask{i}.png,s{i}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def random_mask_stack(n=12, shape=(16, 16), seed=0):
    """Random predicted and reference masks with the three empty cases in the first three."""
    rng = np.random.default_rng(seed)
    preds = rng.random((n, *shape)) > 0.7
    gts = rng.random((n, *shape)) > 0.8
    preds[0] = False  # empty prediction, non-empty reference
    gts[1] = False  # non-empty prediction, empty reference
    preds[2] = gts[2] = False  # both empty
    return preds, gts


def split_with_each_class(manifest, picks: dict[str, tuple[bool, ...]]) -> pd.DataFrame:
    """A split of a generated dataset's manifest: every image in train, but for each subset of
    ``picks`` one image per flag (True: lesion-positive, False: lesion-free) moved there."""
    frame = read_manifest(manifest)
    positive = [bool(read_mask(path).array.any()) for path in frame["mask"]]
    split = pd.DataFrame({"image_id": frame["image_id"], "subject": frame["subject"]})
    split["split"], split["lesion_positive"] = "train", positive
    for subset, flags in picks.items():
        for flag in flags:
            index = split.index[(split["split"] == "train") & (split["lesion_positive"] == flag)][0]
            split.loc[index, "split"] = subset
    return split
