"""The data stage: read and validate a manifest, load images and masks, summarise the dataset.

It must never guess what a user's file means: anything ambiguous is a LesionflowError naming the
file, the row and the column.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from lesionflow.data import synthetic
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError

REQUIRED_COLUMNS = ("image", "mask", "subject")
SUBSETS = ("train", "val", "test")
DEFAULT_MASK_THRESHOLD = 127
# Optional manifest columns that say how to read a colour or unusual mask, row by row.
MASK_CHANNEL_COLUMN = "mask_channel"
MASK_THRESHOLD_COLUMN = "mask_threshold"
# A colour mask whose channels never differ by more than this is greyscale saved as RGB
# (JPEG chroma noise stays well below it); above it, which channel holds the lesion is ambiguous.
GREY_CHANNEL_SPREAD = 48
# PIL modes of 16-bit (and 32-bit integer) greyscale pictures; their values span 0-65535.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def _row_error(path: Path, row: int, column: str, problem: str) -> LesionflowError:
    # Row numbers count the header as row 1, as a spreadsheet shows them.
    return LesionflowError(f"manifest {path}, row {row}, column '{column}': {problem}")


def parse_mask_option(value: str, column: str) -> int | None:
    """The integer in a ``mask_channel`` / ``mask_threshold`` cell, or None for an empty cell.

    Raises ValueError saying what was expected; callers add the manifest, the row and the column.
    """
    if value.strip() == "":
        return None
    low, high = (0, 2) if column == MASK_CHANNEL_COLUMN else (0, 254)
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ValueError(f"expected an integer from {low} to {high} or empty, got {value!r}")
    return number


def manifest_file(folder: Path, cell: str) -> Path:
    """The absolute path that a manifest cell names; cells are relative to the manifest's folder."""
    return Path(os.path.normpath(folder / cell))


def read_manifest_table(path: str | os.PathLike) -> pd.DataFrame:
    """The manifest CSV as text cells, once the file as a whole is sound (readable, columns, rows).

    Raises LesionflowError for a problem of the whole file; problems of single rows are left to
    the caller (:func:`read_manifest` stops at the first, ``manifest_check`` collects them all).
    """
    path = Path(path)
    if not path.is_file():
        raise LesionflowError(f"manifest {path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LesionflowError(f"manifest {path}: not a readable CSV file ({reason})") from None
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise LesionflowError(
            f"manifest {path}: missing column {', '.join(repr(c) for c in missing)}; expected "
            f"columns image, mask, subject (optional image_id), found {', '.join(frame.columns)}"
        )
    if frame.empty:
        raise LesionflowError(f"manifest {path}: has a header but no rows")
    return frame


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Validate a manifest CSV and return ``image_id, subject, image, mask`` (absolute) plus extras.

    Required columns are ``image``, ``mask`` and ``subject``; ``image_id`` defaults to the image
    file stem. Paths are relative to the manifest's folder. Every cell is read as text, so
    subjects such as ``0042`` keep their leading zeros. Optional ``mask_channel`` (0, 1, 2) and
    ``mask_threshold`` (0-254) columns say how to read colour masks (see :func:`load_mask`).
    Errors name the manifest, the row (header = row 1) and the column. Only the table and the
    files' existence are checked, so later stages can re-read the data stage's manifest cheaply;
    the pixel-level checks of a user's manifest are ``manifest_check.validate_manifest``.
    """
    path = Path(path)
    frame = read_manifest_table(path)

    folder = path.parent.absolute()
    has_ids = "image_id" in frame.columns
    ids: list[str] = []
    first_row_of_id: dict[str, int] = {}
    columns: dict[str, list[Any]] = {"image": [], "mask": []}
    mask_options: dict[str, list[int | None]] = {
        c: [] for c in (MASK_CHANNEL_COLUMN, MASK_THRESHOLD_COLUMN) if c in frame.columns
    }
    for index, record in enumerate(frame.to_dict("records")):
        row = index + 2
        for column in REQUIRED_COLUMNS + (("image_id",) if has_ids else ()):
            if record[column].strip() == "":
                raise _row_error(path, row, column, "expected a value, found an empty cell")
        for column in ("image", "mask"):
            file = manifest_file(folder, record[column])
            if not file.is_file():
                raise _row_error(
                    path,
                    row,
                    column,
                    f"file {file} does not exist (paths are relative to the manifest's folder)",
                )
            columns[column].append(str(file))
        image_id = record["image_id"] if has_ids else Path(record["image"]).stem
        if image_id in first_row_of_id:
            where = "image_id" if has_ids else "image"
            why = "" if has_ids else " (the image file stem, as there is no image_id column)"
            raise _row_error(
                path,
                row,
                where,
                f"image id {image_id!r}{why} is already used in row {first_row_of_id[image_id]};"
                " image ids must be unique",
            )
        first_row_of_id[image_id] = row
        ids.append(image_id)
        for column, values in mask_options.items():
            try:
                values.append(parse_mask_option(record[column], column))
            except ValueError as err:
                raise _row_error(path, row, column, str(err)) from None

    result = frame.copy()
    result["image_id"] = ids
    result["image"] = columns["image"]
    result["mask"] = columns["mask"]
    for column, values in mask_options.items():
        result[column] = pd.array(values, dtype="Int64")
    extras = [c for c in frame.columns if c not in ("image_id", "subject", "image", "mask")]
    return result[["image_id", "subject", "image", "mask", *extras]].reset_index(drop=True)


def _open(path: str | os.PathLike, what: str) -> Image.Image:
    try:
        picture = Image.open(path)
        picture.load()  # decode now, so a truncated file fails here and not deep in training
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise LesionflowError(f"cannot read {what} {path}: {err}") from None
    return picture


def _load_array(path: str | os.PathLike) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise LesionflowError(f"cannot read image {path}: {err}") from None
    if array.ndim < 3 or not np.isfinite(array).all():
        raise LesionflowError(f"image {path}: expected a finite (C, *spatial) array, got {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG/JPEG/TIFF/GIF as float32 ``(C, H, W)`` in [0, 1]: RGB gives C=3, greyscale C=1.

    16-bit greyscale is scaled by 65535; an alpha channel is dropped; palette images become RGB.
    A ``.npy`` file (as the preprocess stage writes) holds the ``(C, H, W)`` array itself, which
    may be normalised beyond [0, 1].
    """
    if Path(path).suffix == ".npy":
        return _load_array(path)
    picture = _open(path, "image")
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
    return np.clip(array, 0.0, 1.0, out=array)


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


def distinct_values(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a mask channel."""
    if values.dtype in (np.uint8, np.uint16):
        # Marking the values seen is faster than np.unique for 8- and 16-bit pictures.
        seen = np.zeros(np.iinfo(values.dtype).max + 1, dtype=bool)
        seen[values.ravel()] = True
        return np.flatnonzero(seen).astype(values.dtype)
    return np.unique(values)


def is_label_mask(distinct: np.ndarray) -> bool:
    """Whether a mask holds only 0 and 1 (or only 1): a label mask where 1 is lesion."""
    return bool(distinct.size and distinct.max() == 1 and np.isin(distinct, (0, 1)).all())


def is_binary(distinct: np.ndarray) -> bool:
    """Whether a mask's distinct values are 0 and one other value, or a single value."""
    return distinct.size <= 1 or (distinct.size == 2 and distinct[0] == 0)


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


def load_mask(
    path: str | os.PathLike, channel: int | None = None, threshold: int = DEFAULT_MASK_THRESHOLD
) -> np.ndarray:
    """Read a mask as bool ``(H, W)``: a pixel is lesion where its value is above ``threshold``.

    The default cut at 127 (lesion >= 128 on the 8-bit scale) is half-way between 0 and 255, so
    JPEG artefacts around a 0/255 mask do not count as lesion. A mask holding only 0 and 1 is a
    label mask (as numpy or ITK exports write them) and 1 is lesion; a 127 cut would silently
    empty it. 16-bit masks are compared with ``threshold`` scaled to 16 bits. A colour mask whose
    channels differ (for example red on black) needs ``channel`` (0 red, 1 green, 2 blue): the
    lesion colour is never guessed, and a greyscale conversion would dim red lesions to ~76.
    """
    picture = _open(path, "mask")
    if picture.mode == "F":
        raise LesionflowError(f"cannot read mask {path}: 32-bit float masks are not supported")
    channels, scale = mask_channels(picture)
    values = lesion_values(channels, channel, path)
    if is_label_mask(distinct_values(values)):
        return values == 1
    return values > threshold * scale


def _mask_reading(row: Mapping[str, Any]) -> dict[str, int]:
    """The ``load_mask`` keyword arguments a manifest row asks for."""
    options: dict[str, int] = {}
    for column, key in ((MASK_CHANNEL_COLUMN, "channel"), (MASK_THRESHOLD_COLUMN, "threshold")):
        value = row.get(column)
        if value is not None and not pd.isna(value):
            options[key] = int(value)
    return options


def load_manifest_mask(row: Mapping[str, Any]) -> np.ndarray:
    """Load the mask of one manifest row, honouring its ``mask_channel`` / ``mask_threshold``."""
    return load_mask(row["mask"], **_mask_reading(row))


def load_subset(
    manifest_df: pd.DataFrame, split_df: pd.DataFrame, subset: str
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Ids, images ``(C, H, W)`` and masks ``(H, W)`` of one split subset, in split.csv order."""
    if subset not in SUBSETS:
        raise LesionflowError(f"subset: expected one of {', '.join(SUBSETS)}, got {subset!r}")
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
        image = load_image(row["image"])
        mask = load_manifest_mask(row)
        if image.shape[1:] != mask.shape:
            raise LesionflowError(
                f"mask {row['mask']} is {mask.shape[0]}x{mask.shape[1]} but its image "
                f"{row['image']} is {image.shape[1]}x{image.shape[2]}; they must match"
            )
        images.append(image)
        masks.append(mask)
    return ids, images, masks


def lesion_presence(manifest_df: pd.DataFrame) -> pd.Series:
    """Whether each image's mask has any lesion pixel, as bools indexed by image_id."""
    present = [bool(load_manifest_mask(row).any()) for row in manifest_df.to_dict("records")]
    return pd.Series(
        present, index=pd.Index(manifest_df["image_id"], name="image_id"), name="lesion_positive"
    )


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


IMAGE_TABLE_COLUMNS = [
    "image_id", "subject", "height", "width", "lesion_pixels", "lesion_fraction", "n_lesions",
]
LESION_TABLE_COLUMNS = ["image_id", "subject", "lesion_pixels"]


def image_lesion_tables(manifest_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per image (size, lesion pixels and fraction, lesion count) and one per lesion.

    Lesions are connected components (4-connectivity, scipy.ndimage.label's default). Masks are
    read one at a time, so a dataset of large images never sits in memory at once.
    """
    images, lesions = [], []
    for row in manifest_df.to_dict("records"):
        mask = load_manifest_mask(row)
        labels, count = ndimage.label(mask)
        sizes = np.bincount(labels.ravel())[1:]
        image_id, subject = str(row["image_id"]), str(row["subject"])
        images.append(
            {
                "image_id": image_id,
                "subject": subject,
                "height": int(mask.shape[0]),
                "width": int(mask.shape[1]) if mask.ndim > 1 else 1,
                "lesion_pixels": int(mask.sum()),
                "lesion_fraction": float(mask.mean()),
                "n_lesions": int(count),
            }
        )
        lesions += [{"image_id": image_id, "subject": subject, "lesion_pixels": int(n)} for n in sizes]
    return (
        pd.DataFrame(images, columns=IMAGE_TABLE_COLUMNS),
        pd.DataFrame(lesions, columns=LESION_TABLE_COLUMNS),
    )


def summarise_dataset(images: pd.DataFrame, lesions: pd.DataFrame) -> dict[str, Any]:
    """Counts of images, subjects and lesion-free images, and lesion size statistics.

    Lesion pixels and the fraction of the image they cover are given per lesion-positive image;
    ``images`` and ``lesions`` are the tables of :func:`image_lesion_tables`.
    """
    positive = images[images["lesion_pixels"] > 0]
    n_images = len(images)
    per_subject = images.groupby("subject").size()
    areas_array = lesions["lesion_pixels"].to_numpy(dtype=float)
    return {
        "n_images": n_images,
        "n_subjects": int(images["subject"].nunique()),
        "images_per_subject": {"min": int(per_subject.min()), "max": int(per_subject.max())},
        "n_lesion_positive": len(positive),
        "n_lesion_free": n_images - len(positive),
        "lesion_free_fraction": (n_images - len(positive)) / n_images,
        "lesion_pixels_per_positive_image": _stats(positive["lesion_pixels"].to_numpy(dtype=float)),
        "lesion_fraction_per_positive_image": _stats(positive["lesion_fraction"].to_numpy(dtype=float)),
        "lesions_per_positive_image": _stats(positive["n_lesions"].to_numpy(dtype=float)),
        "lesion_area_pixels": _stats(areas_array),
        "n_lesions": int(areas_array.size),
        "n_lesions_up_to_10_pixels": int((areas_array <= 10).sum()),
    }


def mask_setting(settings: Mapping[str, Any], key: str) -> int | None:
    """The ``data.mask_channel`` / ``data.mask_threshold`` setting, checked; None when unset."""
    high = 2 if key == MASK_CHANNEL_COLUMN else 254
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise LesionflowError(f"data.{key}: expected an integer from 0 to {high} or null, got {value!r}")
    return value


def _apply_mask_settings(manifest_df: pd.DataFrame, settings: Mapping[str, Any]) -> pd.DataFrame:
    """Fill empty ``mask_channel`` / ``mask_threshold`` cells from the data settings.

    Values in the user's manifest win, so one odd file can differ from the rest.
    """
    result = manifest_df.copy()
    for key in (MASK_CHANNEL_COLUMN, MASK_THRESHOLD_COLUMN):
        value = mask_setting(settings, key)
        if value is None:
            continue
        if key not in result.columns:
            result[key] = pd.array([pd.NA] * len(result), dtype="Int64")
        result[key] = result[key].fillna(value)
    return result


def run_data(settings: Mapping[str, Any], out_dir: str | os.PathLike) -> None:
    """The data stage: write ``manifest.csv``, ``images.csv``, ``lesions.csv`` and ``data_summary.json``.

    ``source: synthetic`` generates the built-in dataset there (PNGs, relative paths);
    ``source: manifest`` checks every row of the user's manifest first (files, sizes, mask values;
    see ``manifest_check``) and stops with all its problems before writing anything, so no later
    job starts on a bad dataset; it then writes the manifest with absolute paths, without copying
    any image. Optional ``mask_channel`` / ``mask_threshold`` settings fill the
    manifest columns of the same name where they are empty.
    """
    out = Path(out_dir)
    source = settings.get("source")
    if source == "synthetic":
        parameters = dict(settings.get("synthetic") or {})
        allowed = ("n_images", "image_size", "lesion_free_fraction", "seed")
        unknown = [key for key in parameters if key not in allowed]
        if unknown:
            raise LesionflowError(
                f"data.synthetic.{unknown[0]}: unknown setting; expected {', '.join(allowed)}"
            )
        manifest_df = read_manifest(synthetic.generate_dataset(out, **parameters))
    elif source == "manifest":
        manifest = settings.get("manifest")
        if not manifest:
            raise LesionflowError(
                "data.manifest: expected the path of a manifest CSV when data.source is 'manifest'"
            )
        # manifest_check builds on this module's readers, so it is imported where it is used.
        from lesionflow.data.manifest_check import validate_manifest

        validate_manifest(manifest, settings)
        manifest_df = _apply_mask_settings(read_manifest(manifest), settings)
        artifacts.write_csv(manifest_df, out / "manifest.csv")
    else:
        raise LesionflowError(f"data.source: expected 'synthetic' or 'manifest', got {source!r}")
    images, lesions = image_lesion_tables(manifest_df)
    artifacts.write_csv(images, out / "images.csv")
    artifacts.write_csv(lesions, out / "lesions.csv")
    summary = {"source": source, **summarise_dataset(images, lesions)}
    artifacts.write_json(out / "data_summary.json", summary)
