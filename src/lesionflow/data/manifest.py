"""Read and validate a manifest table: one row per image with its mask (if any) and subject.

It must never guess what a cell means: an empty, unknown or duplicate cell is a LesionflowError
naming the manifest, the row and the column, and a manifest without masks is never read as one
whose images are lesion-free. Pixels are checked by ``manifest_check``, not here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lesionflow.data.score_column import SCORE_COLUMN
from lesionflow.io.geometry import Loaded
from lesionflow.io.readers import file_suffix, read_image, read_mask
from lesionflow.pipeline.errors import LesionflowError

REQUIRED_COLUMNS = ("image", "mask", "subject")
# The stage manifests' column naming each image's class-mask stack (data.labels; see class_masks).
CLASS_MASKS_COLUMN = "class_masks"
MASK_COLUMN = "mask"
# Where read_manifest keeps the manifest's path in the table's ``attrs``, so that a stage handed
# only the table (subsets.load_subset) can name the file in an error.
PATH_ATTR = "manifest"
# The subsets of split.csv, in the order reports show them.
SUBSETS = ("train", "val", "test")
# Optional manifest columns that say how to read a colour or unusual mask, row by row.
MASK_CHANNEL_COLUMN = "mask_channel"
# Optional further images of a case (other MRI sequences: image_t1, image_t2), stacked as channels
# after ``image``, in column order; ``image`` stays the reference whose geometry the mask shares.
MODALITY_PREFIX = "image_"
MASK_THRESHOLD_COLUMN = "mask_threshold"


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


def shared_images(frame: pd.DataFrame, folder: Path) -> list[tuple[int, Path, str]]:
    """``(row, file, what)`` for each row whose image file an earlier row gives to another subject.

    One file under two subjects could land in train and test at once, leaking the image into
    evaluation; masks may be shared (one empty mask for every lesion-free image). Rows count the
    header as row 1; ``frame`` holds text cells, paths relative to ``folder``.
    """
    first_use: dict[Path, tuple[int, str]] = {}
    shared = []
    for index, record in enumerate(frame.to_dict("records")):
        row, subject = index + 2, record["subject"].strip()
        if not record["image"].strip() or not subject:
            continue  # an empty cell is reported as such
        file = manifest_file(folder, record["image"])
        earlier, other = first_use.setdefault(file, (row, subject))
        if other != subject:
            what = (
                f"is the image of row {earlier} too, under subject {other!r} (here {subject!r}); "
                "expected each image file under one subject, or it could be in train and test at once"
            )
            shared.append((row, file, what))
    return shared


def default_image_id(cell: str) -> str:
    """The image id of a manifest row without an ``image_id``: the file name less its suffix.

    ``.nii.gz`` counts as one suffix, so ``sub-01_flair.nii.gz`` is ``sub-01_flair``.
    """
    name = Path(cell).name
    return name[: len(name) - len(file_suffix(name))]


def manifest_file(folder: Path, cell: str) -> Path:
    """The absolute path that a manifest cell names; cells are relative to the manifest's folder."""
    return Path(os.path.normpath(folder / cell))


def masks_omitted(frame: pd.DataFrame, score_column: str | None) -> bool:
    """Whether a manifest table (text cells) goes without masks, which it may only with a score.

    True when ``score_column`` is one of its columns and it has no ``mask`` column, or one whose
    every cell is empty (as the data stage writes a manifest without masks).
    """
    if score_column is None or score_column not in frame.columns:
        return False
    return MASK_COLUMN not in frame.columns or bool(frame[MASK_COLUMN].str.strip().eq("").all())


def manifest_has_masks(manifest_df: pd.DataFrame) -> bool:
    """Whether the manifest's rows name masks: False when its ``mask`` column is absent or all empty.

    :func:`read_manifest` returns masks for every row or for none (an empty ``mask`` column).
    """
    if MASK_COLUMN not in manifest_df.columns:
        return False
    return bool(manifest_df[MASK_COLUMN].fillna("").astype(str).str.strip().ne("").any())


def _with_empty_masks(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with every mask cell empty: the column where it was, else right after ``image``."""
    if MASK_COLUMN in frame.columns:
        return frame.assign(**{MASK_COLUMN: ""})
    columns = list(frame.columns)
    result = frame.copy()
    result.insert(columns.index("image") + 1 if "image" in columns else len(columns), MASK_COLUMN, "")
    return result


def read_manifest_table(
    path: str | os.PathLike, score_column: str | None = SCORE_COLUMN, class_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """The manifest CSV as text cells, once the file as a whole is sound (readable, columns, rows).

    A manifest that has the column ``score_column`` may go without masks (see
    :func:`masks_omitted`); it then gets an empty ``mask`` column after ``image``. ``score_column``
    is the data settings' ``score_column`` for a user's manifest (None: masks are required), and
    ``score``, which the data stage writes from it, for the manifests the stages write.
    Raises LesionflowError for a problem of the whole file; problems of single rows are left to
    the caller (:func:`read_manifest` stops at the first, ``manifest_check`` collects them all).
    ``class_columns`` (data.labels.mask_columns) hold one mask per class instead of a ``mask``
    column, which the table then gets empty.
    """
    path = Path(path)
    if path.is_dir():
        raise LesionflowError(f"manifest {path}: is a directory; expected a CSV file")
    if not path.is_file():
        raise LesionflowError(f"manifest {path}: file not found")
    frame = _header_and_rows(path, _csv_cells(path))
    if class_columns and MASK_COLUMN in frame.columns:
        raise LesionflowError(
            f"manifest {path}: has a mask column, but data.labels.mask_columns reads each class's mask "
            f"from its own column ({', '.join(class_columns)}); rename or remove the mask column"
        )
    if masks_omitted(frame, score_column) or class_columns:
        frame = _with_empty_masks(frame)
    missing = [column for column in (*REQUIRED_COLUMNS, *class_columns) if column not in frame.columns]
    if missing:
        hint = (
            f"; a manifest may go without masks only when it has the score column '{score_column}'"
            if MASK_COLUMN in missing and score_column is not None
            else ""
        )
        raise LesionflowError(
            f"manifest {path}: missing column {', '.join(repr(c) for c in missing)}; expected "
            f"columns image, mask, subject (optional image_id), found {', '.join(frame.columns)}{hint}"
        )
    if frame.empty:
        raise LesionflowError(f"manifest {path}: has a header but no rows; expected one row per image")
    return frame


def _csv_cells(path: Path) -> pd.DataFrame:
    """Every line of the CSV at ``path`` as text cells, the header as the first row.

    The header is read as a row, not by pandas, because pandas renames a repeated column
    (``subject.1``) and reads a row with one cell too many as an index, shifting its cells.
    """
    try:
        return pd.read_csv(path, header=None, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise LesionflowError(
            f"manifest {path}: not a readable CSV file: it is empty; expected a header row naming the "
            "columns image, mask, subject, then one row per image"
        ) from None
    except UnicodeDecodeError as err:
        raise LesionflowError(
            f"manifest {path}: not a readable CSV file: expected UTF-8 text, found byte "
            f"0x{err.object[err.start]:02x}, which UTF-8 cannot decode (save it as CSV UTF-8)"
        ) from None
    except pd.errors.ParserError as err:
        raise LesionflowError(_cell_count_problem(path, err)) from None


def _cell_count_problem(path: Path, err: pd.errors.ParserError) -> str:
    """What pandas found wrong, in one line: a row with more cells than the header, or its own words."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if found is None:
        return f"manifest {path}: not a readable CSV file ({' '.join(str(err).split())})"
    columns, line, cells = found.groups()
    return (
        f"manifest {path}, row {line}: has {cells} cells, but the header names {columns} columns; "
        "expected one cell per column (a comma inside a cell must be quoted)"
    )


def _header_and_rows(path: Path, cells: pd.DataFrame) -> pd.DataFrame:
    """The rows under the header of ``cells`` (see :func:`_csv_cells`); every column named once."""
    # An empty header cell (a trailing comma) is named as pandas names it.
    header = [name or f"Unnamed: {index}" for index, name in enumerate(cells.iloc[0])]
    repeated = [name for index, name in enumerate(header) if name in header[:index]]
    if repeated:
        raise LesionflowError(
            f"manifest {path}: column '{repeated[0]}' appears {header.count(repeated[0])} times in the "
            "header; expected each column once"
        )
    return cells.iloc[1:].set_axis(header, axis=1).reset_index(drop=True)


def modality_columns(columns: Iterable[str]) -> list[str]:
    """The manifest's further image columns (``image_<name>``, not ``image_id``), in column order."""
    return [c for c in columns if c.startswith(MODALITY_PREFIX) and c != "image_id"]


def read_manifest(
    path: str | os.PathLike, score_column: str | None = SCORE_COLUMN, class_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """Validate a manifest CSV and return ``image_id, subject, image, mask`` (absolute) plus extras.

    Required columns are ``image``, ``mask`` and ``subject``; ``image_id`` defaults to the image
    file stem. A manifest with the column ``score_column`` may have no masks (no ``mask`` column,
    or every cell empty; see :func:`read_manifest_table` for the argument): its ``mask`` cells are
    then all empty, which :func:`manifest_has_masks` tells. The table's ``attrs`` keep the path
    under :data:`PATH_ATTR`. Paths are relative to the manifest's folder. Every cell is read as
    text, so subjects such as ``0042`` keep their leading zeros. Optional ``mask_channel`` (0, 1,
    2) and ``mask_threshold`` (0-254) columns say how to read colour masks (see
    ``io.readers.read_mask``).
    Further ``image_<name>`` columns (``image_t1``) name more images of the same case, stacked as
    channels after ``image`` (see :func:`load_manifest_image`); their paths are made absolute too.
    Errors name the manifest, the row (header = row 1) and the column; an image file under two
    subjects is one (see :func:`shared_images`). Only the table and the files' existence are
    checked, so later stages can re-read the data stage's manifest cheaply; the pixel-level checks
    of a user's manifest are ``manifest_check.validate_manifest``.
    """
    path = Path(path)
    frame = read_manifest_table(path, score_column, class_columns)

    folder = path.parent.absolute()
    has_ids = "image_id" in frame.columns
    ids: list[str] = []
    first_row_of_id: dict[str, int] = {}
    masks = not masks_omitted(frame, score_column) and not class_columns
    stacks = [CLASS_MASKS_COLUMN] if CLASS_MASKS_COLUMN in frame.columns else [*class_columns]
    files = ["image", *([MASK_COLUMN] if masks else []), *modality_columns(frame.columns), *stacks]
    required = [c for c in REQUIRED_COLUMNS if masks or c != MASK_COLUMN]
    columns: dict[str, list[Any]] = {column: [] for column in files}
    mask_options: dict[str, list[int | None]] = {
        c: [] for c in (MASK_CHANNEL_COLUMN, MASK_THRESHOLD_COLUMN) if c in frame.columns
    }
    for index, record in enumerate(frame.to_dict("records")):
        row = index + 2
        for column in required + (["image_id"] if has_ids else []):
            if record[column].strip() == "":
                raise _row_error(path, row, column, "expected a value, found an empty cell")
        for column in files:
            if record[column].strip() == "":
                raise _row_error(path, row, column, "expected a value, found an empty cell")
            file = manifest_file(folder, record[column])
            if file.is_dir():
                raise _row_error(path, row, column, f"{file} is a directory; expected a file")
            if not file.is_file():
                raise _row_error(
                    path,
                    row,
                    column,
                    f"file {file} does not exist (paths are relative to the manifest's folder)",
                )
            columns[column].append(str(file))
        image_id = record["image_id"] if has_ids else default_image_id(record["image"])
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

    shared = shared_images(frame, folder)
    if shared:
        row, file, what = shared[0]
        raise _row_error(path, row, "image", f"file {file} {what}")
    result = frame.copy()
    result["image_id"] = ids
    for column in files:
        result[column] = columns[column]
    for column, values in mask_options.items():
        result[column] = pd.array(values, dtype="Int64")
    extras = [c for c in frame.columns if c not in ("image_id", "subject", "image", "mask")]
    result = result[["image_id", "subject", "image", "mask", *extras]].reset_index(drop=True)
    result.attrs[PATH_ATTR] = str(path)
    return result


def mask_setting(settings: Mapping[str, Any], key: str) -> int | None:
    """The ``data.mask_channel`` / ``data.mask_threshold`` setting, checked; None when unset."""
    high = 2 if key == MASK_CHANNEL_COLUMN else 254
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise LesionflowError(f"data.{key}: expected an integer from 0 to {high} or null, got {value!r}")
    return value


def mask_reading(row: Mapping[str, Any]) -> dict[str, int]:
    """The ``read_mask`` keyword arguments a manifest row asks for (``mask_channel``, ``mask_threshold``)."""
    options: dict[str, int] = {}
    for column, key in ((MASK_CHANNEL_COLUMN, "channel"), (MASK_THRESHOLD_COLUMN, "threshold")):
        value = row.get(column)
        if value is not None and not pd.isna(value):
            options[key] = int(value)
    return options


def read_manifest_mask(row: Mapping[str, Any]) -> Loaded:
    """The mask of one manifest row with its geometry, honouring ``mask_channel`` / ``mask_threshold``.

    The geometry is the reader's: millimetre spacing and an affine for NIfTI, unit spacing and no
    affine for pictures and arrays (see ``io.geometry.Geometry``).
    """
    return read_mask(row["mask"], **mask_reading(row))


def load_manifest_image(row: Mapping[str, Any]) -> Loaded:
    """The image of one manifest row as ``(C, *spatial)``: ``image``, then each ``image_<name>``.

    The geometry is ``image``'s. Raises LesionflowError naming the file whose spatial shape
    differs from ``image``'s (the manifest check also compares their affines).
    """
    image, geometry = read_image(row["image"])
    extra = modality_columns(row)
    if not extra:
        return Loaded(image, geometry)
    arrays = [image]
    for column in extra:
        other = read_image(row[column]).array
        if other.shape[1:] != image.shape[1:]:
            raise LesionflowError(
                f"image {row[column]} (column {column}) has shape {other.shape[1:]}, but the row's "
                f"image {row['image']} has {image.shape[1:]}: a case's images must share one grid"
            )
        arrays.append(other)
    return Loaded(np.concatenate(arrays, axis=0), geometry)


def load_manifest_mask(row: Mapping[str, Any]) -> np.ndarray:
    """Load the mask of one manifest row, honouring its ``mask_channel`` / ``mask_threshold``."""
    return read_manifest_mask(row).array


def lesion_presence(manifest_df: pd.DataFrame) -> pd.Series:
    """Whether each image's mask has any lesion pixel, as bools indexed by image_id.

    Without masks (see :func:`manifest_has_masks`) presence is unknown: every value is NA, of
    pandas' nullable ``boolean`` dtype, never False.
    """
    index = pd.Index(manifest_df["image_id"], name="image_id")
    if not manifest_has_masks(manifest_df):
        return pd.Series(pd.NA, index=index, dtype="boolean", name="lesion_positive")
    present = [bool(load_manifest_mask(row).any()) for row in manifest_df.to_dict("records")]
    return pd.Series(present, index=index, name="lesion_positive")
