"""Checks of the figure files the notebooks save, shared by the report and workflow tests."""

from pathlib import Path

import numpy as np
from PIL import Image


def not_blank(path: Path) -> bool:
    """Whether the picture at ``path`` holds more than one colour: a blank figure has one.

    Compares every pixel with the first instead of counting colours, which sorts every pixel
    (seconds per figure, where this takes milliseconds).
    """
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return bool((pixels != pixels[0, 0]).any())
