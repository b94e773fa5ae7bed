"""Small image/mask pairs and manifests that the data tests build alike."""

from pathlib import Path

import numpy as np
from PIL import Image
from schema_settings import top_level_section

# The score settings the plan always passes to the data stage; the schema's defaults: no score.
NO_SCORES = {key: top_level_section("data")[key] for key in ("score_column", "score_range", "invalid_scores")}


def ramp(width: int = 16, height: int = 12) -> np.ndarray:
    """An RGB image that is not constant (the manifest check refuses constant images)."""
    image = np.full((height, width, 3), 40, dtype=np.uint8)
    image[..., 1] = np.arange(width, dtype=np.uint8) * 10
    return image


def binary_mask(width: int = 16, height: int = 12) -> np.ndarray:
    """A 0/255 mask with one 3 x 4 lesion of 12 pixels."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[2:5, 3:7] = 255
    return mask


def write_pair(folder: Path, name: str, lesion_pixels: int = 0, size: int = 16) -> None:
    """An RGB image and a 0/255 mask with ``lesion_pixels`` lesion pixels in the first row(s).

    The image is a ramp, not a constant: the data stage refuses constant images.
    """
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    image = np.full((size, size, 3), 60, dtype=np.uint8)
    image[..., 1] = np.arange(size, dtype=np.uint8)
    mask = np.zeros(size * size, dtype=np.uint8)
    mask[:lesion_pixels] = 255
    Image.fromarray(image).save(folder / "images" / f"{name}.png")
    Image.fromarray(mask.reshape(size, size)).save(folder / "masks" / f"{name}.png")


def write_manifest(folder: Path, text: str | bytes) -> Path:
    """``folder/manifest.csv`` holding ``text`` (UTF-8) or exactly the bytes given."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def small_manifest(folder: Path) -> Path:
    """A valid manifest of three images from two subjects; image b is lesion-free."""
    for name, pixels in (("a", 5), ("b", 0), ("c", 12)):
        write_pair(folder, name, pixels)
    return write_manifest(
        folder,
        "image,mask,subject,scanner\n"
        "images/a.png,masks/a.png,0042,x\n"
        "images/b.png,masks/b.png,0042,y\n"
        "images/c.png,masks/c.png,0007,x\n",
    )
