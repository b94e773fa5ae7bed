"""2D pictures (PNG, JPEG, TIFF, BMP, GIF) read and written through PIL.

Never guesses what a picture means: a colour mask whose channels differ needs its channel, and
32-bit float pictures are refused rather than rescaled.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from lesionflow.io.geometry import Geometry, Loaded, pixel_geometry
from lesionflow.io.masks import DEFAULT_MASK_THRESHOLD, lesion_mask
from lesionflow.pipeline.artifacts import atomic_path
from lesionflow.pipeline.errors import LesionflowError, one_line

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
# A colour mask whose channels never differ by more than this is greyscale saved as RGB
# (JPEG chroma noise stays well below it); above it, which channel holds the lesion is ambiguous.
GREY_CHANNEL_SPREAD = 48
# PIL modes of 16-bit (and 32-bit integer) greyscale pictures; their values span 0-65535.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
# Errors PIL raises for a file it cannot identify or decode (truncated, garbage, too large).
PICTURE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# How read_picture reads each PIL mode, in the words of the data stage's images.csv (read_as);
# any other mode (CMYK, YCbCr) is converted to RGB.
PICTURE_READINGS = {
    "1": "1-bit: 0 or 1",
    "L": "8-bit grey: / 255",
    "LA": "8-bit grey + alpha: grey / 255, alpha dropped",
    "P": "palette: colours as RGB / 255",
    "PA": "palette + alpha: colours as RGB / 255, alpha dropped",
    "RGB": "8-bit RGB: / 255",
    "RGBA": "8-bit RGBA: RGB / 255, alpha dropped",
    **dict.fromkeys(SIXTEEN_BIT_MODES, "16-bit grey: / 65535"),
}


def open_picture(path: str | os.PathLike, what: str) -> Image.Image:
    """The decoded picture at ``path``; a LesionflowError naming ``what`` and the file otherwise."""
    try:
        picture = Image.open(path)
        picture.load()  # decode now, so a truncated file fails here and not deep in training
    except PICTURE_ERRORS as err:
        raise LesionflowError(f"cannot read {what} {path}: {one_line(err)}") from None
    return picture


def picture_geometry(path: str | os.PathLike) -> Geometry:
    """The geometry of a picture from its header alone, without decoding its pixels."""
    try:
        with Image.open(path) as picture:
            width, height = picture.size
    except PICTURE_ERRORS as err:
        raise LesionflowError(f"cannot read image {path}: {one_line(err)}") from None
    return pixel_geometry((height, width))


def picture_reading(path: str | os.PathLike) -> str:
    """How :func:`read_picture` reads the picture at ``path`` (its mode, from the header), in words."""
    try:
        with Image.open(path) as picture:
            mode, colour_bits = picture.mode, _png_colour_bits(picture)
    except PICTURE_ERRORS as err:
        raise LesionflowError(f"cannot read image {path}: {one_line(err)}") from None
    if colour_bits == 16 and mode in ("RGB", "RGBA"):
        # Pillow decodes 16-bit colour PNGs to 8 bits per channel (it keeps the high byte): the
        # values are right to within 1/255, and the report must not claim more precision.
        return f"16-bit {mode}: high byte / 255 (Pillow reads 8 bits per channel)"
    return PICTURE_READINGS.get(mode, f"{mode}: converted to RGB / 255")


def _png_colour_bits(picture: Image.Image) -> int | None:
    """Bits per channel of a colour PNG as stored (its IHDR chunk), else None."""
    if picture.format != "PNG" or picture.fp is None:
        return None
    position = picture.fp.tell()
    picture.fp.seek(24)  # 8 signature bytes, IHDR length and type, width and height
    depth, colour_type = picture.fp.read(2)
    picture.fp.seek(position)
    return depth if colour_type in (2, 6) else None  # truecolour, truecolour with alpha


def read_picture(path: str | os.PathLike) -> Loaded:
    """A picture as float32 ``(C, H, W)`` in [0, 1]: RGB gives C=3, greyscale C=1.

    16-bit greyscale is scaled by 65535; an alpha channel is dropped; palette images become RGB.
    """
    picture = open_picture(path, "image")
    if picture.mode in SIXTEEN_BIT_MODES:
        values, scale = np.asarray(picture)[None], 65535.0
    elif picture.mode in ("1", "L", "LA"):
        values, scale = np.asarray(picture.convert("L"))[None], 255.0
    elif picture.mode == "F":
        raise LesionflowError(
            f"cannot read image {path}: 32-bit float images are not supported; save it as 8- or 16-bit PNG"
        )
    else:
        values, scale = np.asarray(picture.convert("RGB")).transpose(2, 0, 1), 255.0
    # One float32 copy, scaled and clipped in place: a 4288 x 2848 photograph is 140 MiB as
    # float32, and each temporary copy would add as much to the peak memory.
    array = np.ascontiguousarray(values, dtype=np.float32)
    array *= np.float32(1.0 / scale)
    return Loaded(np.clip(array, 0.0, 1.0, out=array), pixel_geometry(array.shape[1:]))


def mask_channels(picture: Image.Image) -> tuple[np.ndarray, int]:
    """A decoded mask's values as integers ``(H, W, C)`` (C = 1 greyscale, 3 colour) and their scale.

    The scale is 257 for 16-bit masks, so a threshold on the 8-bit scale can be multiplied by it,
    and 1 otherwise. A bilevel (mode "1") mask gives 0 and 1, which read as a label mask. A
    32-bit float mask (mode "F") is the caller's to refuse.
    """
    if picture.mode == "1":
        return np.asarray(picture, dtype=np.uint8)[..., None], 1
    if picture.mode in SIXTEEN_BIT_MODES:
        return np.asarray(picture)[..., None], 257
    if picture.mode in ("L", "LA"):
        return np.asarray(picture.getchannel(0))[..., None], 1
    # Converting an RGB picture would copy 36 MB of a fundus mask for nothing.
    return np.asarray(picture if picture.mode == "RGB" else picture.convert("RGB")), 1


def colour_spread(channels: np.ndarray) -> int:
    """The largest difference between the channels of one pixel: 0 for a greyscale mask."""
    if channels.shape[2] == 1:
        return 0
    # Elementwise maxima of the three planes are ~20 times faster than a max over the last axis.
    red, green, blue = channels[..., 0], channels[..., 1], channels[..., 2]
    highest = np.maximum(np.maximum(red, green), blue)
    lowest = np.minimum(np.minimum(red, green), blue)
    return int((highest - lowest).max())


def lesion_values(channels: np.ndarray, channel: int | None, path: str | os.PathLike) -> np.ndarray:
    """The 2D values that hold the lesion: ``channel`` of a colour mask, else its only channel.

    A colour mask whose channels differ by more than GREY_CHANNEL_SPREAD needs ``channel``: the
    lesion colour is never guessed.
    """
    if channels.shape[2] == 1:
        return channels[..., 0]
    if channel is None:
        spread = colour_spread(channels)
        if spread > GREY_CHANNEL_SPREAD:
            raise LesionflowError(
                f"mask {path} is a colour image whose channels differ by up to {spread}; "
                "say which channel holds the lesion (data.mask_channel, or a mask_channel "
                "column in the manifest: 0 red, 1 green, 2 blue)"
            )
        channel = 0
    return channels[..., channel]


def read_picture_mask(
    path: str | os.PathLike, channel: int | None = None, threshold: int = DEFAULT_MASK_THRESHOLD
) -> Loaded:
    """A mask picture as bool ``(H, W)``: a pixel is lesion where its value is above ``threshold``.

    The default cut at 127 (lesion >= 128 on the 8-bit scale) is half-way between 0 and 255, so
    JPEG artefacts around a 0/255 mask do not count as lesion. A mask holding only 0 and 1 is a
    label mask and 1 is lesion. 16-bit masks are compared with ``threshold`` scaled to 16 bits. A
    colour mask whose channels differ (for example red on black) needs ``channel`` (0 red, 1
    green, 2 blue): a greyscale conversion would dim red lesions to ~76.
    """
    picture = open_picture(path, "mask")
    if picture.mode == "F":
        raise LesionflowError(f"cannot read mask {path}: 32-bit float masks are not supported")
    channels, scale = mask_channels(picture)
    mask = lesion_mask(lesion_values(channels, channel, path), threshold, scale)
    return Loaded(mask, pixel_geometry(mask.shape))


def write_png_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write a bool ``(H, W)`` mask as an 8-bit 0/255 PNG, atomically.

    PNG only: a lossy format (JPEG) would blur the 0/255 edge that :func:`read_picture_mask` cuts.
    """
    with atomic_path(path) as tmp:
        # The temporary file has no .png suffix for PIL to go by, so the format is named.
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")


def write_png_probability(path: str | os.PathLike, prob: np.ndarray) -> None:
    """Write a ``(H, W)`` probability map in [0, 1] as an 8-bit grey PNG (0 to 255), atomically.

    For looking at, beside the mask: 8 bits keep a probability to 0.004.
    """
    levels = np.rint(np.clip(prob, 0, 1) * 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(levels).save(tmp, format="PNG")
