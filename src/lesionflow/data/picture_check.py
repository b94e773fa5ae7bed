"""The manifest check's picture part: what is wrong with a 2D picture or its mask, one line per problem.

It must never change a file, and never hold more than one picture's pixels: sizes come from the
lazy file header, pixels are decoded per file and dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lesionflow.io.pictures import PICTURE_ERRORS, mask_channels

# PIL's own message for a file it does not recognise repeats the path, which the line already names.
UNIDENTIFIED = "cannot be opened as an image: not a PNG, JPEG, TIFF or GIF picture"
SIXTEEN_BIT_MAX = 65535


def _reason(err: Exception) -> str:
    # PIL's messages can span lines; a report line must not.
    return " ".join(str(err).split()) or type(err).__name__


def picture_image_problems(file: Path) -> tuple[tuple[int, int] | None, list[str]]:
    """The picture's size (width, height) from its header, or None, and what is wrong with it."""
    try:
        picture = Image.open(file)
    except Image.UnidentifiedImageError:
        return None, [UNIDENTIFIED]
    except PICTURE_ERRORS as err:
        return None, [f"cannot be opened as an image ({_reason(err)})"]
    with picture:
        size = picture.size
        try:
            picture.load()
        except PICTURE_ERRORS as err:
            return size, [f"cannot be decoded ({_reason(err)}); is it truncated?"]
        return size, _pixel_problems(picture)


def _pixel_problems(picture: Image.Image) -> list[str]:
    """NaN pixels, unreadable float data, or an image whose pixels are all equal."""
    if picture.mode == "F":
        # Float TIFFs are the only 2D pictures that can hold NaN; their pixels are needed here.
        values = np.asarray(picture, dtype=np.float32)
        problems = []
        nan = int(np.isnan(values).sum())
        if nan:
            problems.append(f"{nan} of {values.size} pixels are NaN")
        problems.append("32-bit float images are not supported; save it as 8- or 16-bit PNG or TIFF")
        return problems
    if picture.mode == "I":
        # io.pictures reads it as 16 bits (older Pillow opens 16-bit PNGs so): anything beyond
        # would be clipped without a word.
        low, high = picture.getextrema()
        if low < 0 or high > SIXTEEN_BIT_MAX:
            return [
                f"32-bit integer values from {low} to {high} do not fit the 16-bit range 0 to "
                f"{SIXTEEN_BIT_MAX} it is read in; save it as 8- or 16-bit PNG or TIFF"
            ]
    # Two different pixels prove a picture is not constant; only when they agree is every pixel
    # scanned (getextrema runs in C, without a numpy copy of the picture).
    width, height = picture.size
    if picture.getpixel((0, 0)) != picture.getpixel((width // 2, height // 2)):
        return []
    extrema = picture.getextrema()
    per_band = extrema if isinstance(extrema[0], tuple) else (extrema,)
    # Alpha is dropped by io.pictures.read_picture, so a constant picture with varying alpha is
    # still constant.
    seen = [pair for pair, band in zip(per_band, picture.getbands(), strict=True) if band != "A"]
    if any(low != high for low, high in seen):
        return []
    value = seen[0][0] if len(seen) == 1 else tuple(low for low, _ in seen)
    return [f"every pixel has the same value {value}: a constant image holds nothing to learn from"]


def picture_mask_channels(
    file: Path, image_size: tuple[int, int] | None
) -> tuple[np.ndarray | None, int, list[str]]:
    """A picture mask's channels and bit scale (None when unreadable), and what is wrong with it.

    ``image_size`` is the image's (width, height), or None when there is none to compare with.
    Whether the values make a readable mask is the caller's rule, shared with volumes.
    """
    try:
        picture = Image.open(file)
    except Image.UnidentifiedImageError:
        return None, 1, [UNIDENTIFIED]
    except PICTURE_ERRORS as err:
        return None, 1, [f"cannot be opened as an image ({_reason(err)})"]
    problems: list[str] = []
    with picture:
        if image_size is not None and picture.size != image_size:
            width, height = picture.size
            problems.append(f"size {width}x{height} differs from the image's {image_size[0]}x{image_size[1]}")
        try:
            picture.load()
        except PICTURE_ERRORS as err:
            return None, 1, [*problems, f"cannot be decoded ({_reason(err)}); is it truncated?"]
        if picture.mode == "F":
            return None, 1, [*problems, "32-bit float masks are not supported; save it as an 8-bit PNG"]
        channels, scale = mask_channels(picture)
    return channels, scale, problems
