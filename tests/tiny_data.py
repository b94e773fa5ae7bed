"""Tiny datasets written into a test's temp dir."""

import numpy as np
from PIL import Image


def write_tiny_manifest(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,mask,subject"]
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(folder / f"img{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"mask{i}.png")
        rows.append(f"img{i}.png,mask{i}.png,s{i}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"
