"""Small image/mask pairs and manifests that the data tests build alike."""

from pathlib import Path

import numpy as np
from PIL import Image


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


def write_manifest(folder: Path, text: str) -> Path:
    """``folder/manifest.csv`` holding ``text``."""
    path = folder / "manifest.csv"
    path.write_text(text)
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
