"""Check every row of a user's manifest before anything downstream runs, and report all problems.

Each problem is one line naming the manifest, the row (header = row 1), the column and the file;
all of them are raised together as one :class:`ManifestProblems`, whose first line counts them.
What is checked: the files exist and open, image and mask sizes (a volume's shape and affine)
agree, masks are binary or have a threshold (and a channel when colour), image ids are unique,
subjects are present, images are neither NaN-filled nor constant, and (with data.score_column)
every score cell holds a number in data.score_range (see ``scores``). With a score column the
manifest may have no masks (see ``manifest.masks_omitted``); the mask checks are then skipped.

It must never stop at the first problem, never change a file, and never hold more than one
picture's pixels or one volume's voxels at a time: a 4288 x 2848 fundus photograph is 36 MB as
bytes and 146 MB as float32, so rows are checked one by one, sizes come from the lazy file header,
and pixels are decoded per file and dropped. 2D pictures (PNG, JPEG, TIFF, BMP, GIF) are read
through PIL here; NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel in ``volume_check``, whose
shapes and affines their masks must match. An image and its mask must be of the same kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lesionflow.data.class_check import Layout, label_map_check
from lesionflow.data.lesion_classes import lesion_classes
from lesionflow.data.manifest import (
    MASK_CHANNEL_COLUMN,
    MASK_COLUMN,
    MASK_THRESHOLD_COLUMN,
    REQUIRED_COLUMNS,
    SUBSETS,
    default_image_id,
    manifest_file,
    mask_setting,
    masks_omitted,
    modality_columns,
    parse_mask_option,
    read_manifest_table,
)
from lesionflow.data.picture_check import picture_image_problems, picture_mask_channels
from lesionflow.data.score_column import (
    SCORE_KEYS,
    ScoreSettings,
    check_score_columns,
    parse_score,
    score_settings,
)
from lesionflow.data.volume_check import alignment_problems, volume_image_problems, volume_mask_problems
from lesionflow.io.geometry import Geometry
from lesionflow.io.masks import DEFAULT_MASK_THRESHOLD, distinct_values, is_binary, is_label_mask
from lesionflow.io.nifti import NIFTI_SUFFIXES
from lesionflow.io.pictures import (
    GREY_CHANNEL_SPREAD,
    PICTURE_SUFFIXES,
    colour_spread,
    lesion_values,
)
from lesionflow.io.readers import file_suffix
from lesionflow.pipeline.errors import LesionflowError

# Formats io reads that the checks here do not handle yet: the data stage's own .npy arrays
# are (C, *spatial) with no geometry, unlike a user's image.
_NOT_YET_CHECKED = {".npy": "NumPy"}
_CHECKED_SUFFIXES = PICTURE_SUFFIXES + NIFTI_SUFFIXES
# What each kind of file is called in a report line; an image and its mask must be of one kind.
_KINDS = {**dict.fromkeys(PICTURE_SUFFIXES, "2D picture"), **dict.fromkeys(NIFTI_SUFFIXES, "NIfTI volume")}
# Why a mask's values may not be binary, and what threshold suits it, as each kind's line says.
_PICTURE_HINTS = ("lossy JPEG?", "127 suits 0/255 masks")
_VOLUME_HINTS = ("a multi-label or resampled mask?", "0 makes every non-zero label lesion")


@dataclass(frozen=True)
class Problem:
    """One problem of one manifest row: where it is and what is wrong."""

    row: int
    column: str
    file: Path | None
    what: str

    def line(self, manifest: Path) -> str:
        """The one-line report: manifest, row, column, file, then what is wrong."""
        where = f"manifest {manifest}, row {self.row}, column '{self.column}'"
        if self.file is not None:
            where += f", file {self.file}"
        return f"{where}: {self.what}"


class ManifestProblems(LesionflowError):
    """Every problem found in a manifest.

    ``lines`` holds the count line (``manifest M: 3 problems in 2 rows``) and one line per
    problem; ``str()`` joins them with newlines.
    """

    def __init__(self, manifest: Path, problems: list[Problem]) -> None:
        self.manifest = manifest
        self.problems = problems
        rows = len({problem.row for problem in problems})
        count = f"manifest {manifest}: {_plural(len(problems), 'problem')} in {_plural(rows, 'row')}"
        self.lines = [count, *(problem.line(manifest) for problem in problems)]
        super().__init__("\n".join(self.lines))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def validate_manifest(path: str | os.PathLike, settings: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`ManifestProblems` with every problem of the manifest, or return if it is sound.

    ``settings`` is the config's ``data`` section: ``mask_channel`` / ``mask_threshold`` apply to
    rows whose manifest cells of the same name are empty; ``score_column`` (with ``score_range``
    and ``invalid_scores``, see :func:`check_manifest`) adds the score cells and lets the
    manifest go without masks. Problems of the whole file (missing, not a CSV, missing columns)
    and bad settings raise a plain LesionflowError at once.
    """
    problems = check_manifest(path, settings)
    if problems:
        raise ManifestProblems(Path(path), problems)


def check_manifest(path: str | os.PathLike, settings: Mapping[str, Any] | None = None) -> list[Problem]:
    """Every problem of every row of the manifest at ``path``, in row order; empty when sound.

    The score keys are read when ``settings`` has any of them (the data stage passes all three):
    the score column must exist, and with ``invalid_scores: error`` each bad score cell is a
    problem; with ``exclude`` such rows are the data stage's to leave out and list. A column
    named ``score`` that is not the score column is refused either way (it is reserved). With a
    score column the manifest may have no ``mask`` column (or only empty mask cells): every
    mask check is then skipped. ``data.labels`` checks label maps or each class's mask column.
    """
    settings = settings or {}
    defaults = {key: mask_setting(settings, key) for key in (MASK_CHANNEL_COLUMN, MASK_THRESHOLD_COLUMN)}
    score = score_settings(settings) if any(key in settings for key in SCORE_KEYS) else None
    path = Path(path)
    column = score.column if score else None
    classes = lesion_classes(settings.get("labels"))
    # One binary mask per class stands for the mask; a label map holds a value per class.
    class_columns = classes.columns if classes is not None else ()
    frame = read_manifest_table(path, column, class_columns)
    check_score_columns(path, frame.columns, column)
    folder = path.parent.absolute()
    has_ids = "image_id" in frame.columns
    first_row_of_id: dict[str, int] = {}
    masks = list(class_columns) or ([] if masks_omitted(frame, column) else [MASK_COLUMN])
    check = _mask_problems if class_columns or classes is None else label_map_check(classes, _unreadable)
    problems: list[Problem] = []
    for index, record in enumerate(frame.to_dict("records")):
        row = index + 2  # the header is row 1, as a spreadsheet shows it
        problems.extend(_row_problems(record, row, folder, has_ids, defaults, first_row_of_id, masks, check))
        problems.extend(_score_problems(record, row, folder, score))
    return problems


def _score_problems(
    record: Mapping[str, str], row: int, folder: Path, score: ScoreSettings | None
) -> list[Problem]:
    """The row's score problem, located by its image as an empty subject is; none when excluding."""
    if score is None or score.column is None or score.excludes:
        return []
    try:
        parse_score(record[score.column], score.score_range)
    except ValueError as err:
        image = manifest_file(folder, record["image"]) if record["image"].strip() else None
        return [Problem(row, score.column, image, str(err))]
    return []


def _row_problems(
    record: Mapping[str, str],
    row: int,
    folder: Path,
    has_ids: bool,
    defaults: Mapping[str, int | None],
    first_row_of_id: dict[str, int],
    masks: Sequence[str],
    check_mask: Callable[..., list[str]],
) -> list[Problem]:
    """The problems of one row; records its image id in ``first_row_of_id``.

    ``masks`` are the row's mask columns (``mask``, or one per class); none (a manifest without
    masks) leaves out every check of a mask.
    """
    image = manifest_file(folder, record["image"]) if record["image"].strip() else None
    files = {c: manifest_file(folder, record[c]) for c in masks if record[c].strip()}
    required = [c for c in REQUIRED_COLUMNS if c != MASK_COLUMN] + list(masks)
    problems: list[Problem] = []
    for column in required + (["image_id"] if has_ids else []):
        if record[column].strip() == "":
            # An empty subject or id is located by the row's image; an empty path has no file.
            file = None if column == "image" or column in masks else image
            problems.append(Problem(row, column, file, "expected a value, found an empty cell"))

    duplicate = _duplicate_id(record, row, has_ids, first_row_of_id)
    if duplicate:
        problems.append(Problem(row, "image_id" if has_ids else "image", image, duplicate))
    # An optional split column fixes the row's subset (see data.split.fixed_split).
    if "split" in record and record["split"].strip() not in SUBSETS:
        what = f"expected one of {', '.join(SUBSETS)}, got {record['split']!r}"
        problems.append(Problem(row, "split", image, what))
    options, option_problems = _mask_options(record, defaults)
    channel, threshold = options[MASK_CHANNEL_COLUMN], options[MASK_THRESHOLD_COLUMN]
    first_mask = next(iter(files.values()), None)
    problems.extend(Problem(row, column, first_mask, what) for column, what in option_problems)
    layout = None
    if image is not None:
        layout, what = _image_problems(image)
        problems.extend(Problem(row, "image", image, text) for text in what)
    for column in modality_columns(record):
        problems.extend(_modality_problems(record, row, column, folder, image, layout))
    for column, mask in files.items():
        mixed = _mixed_kinds(image, mask)  # a picture's size and a volume's shape cannot be compared
        problems.extend([Problem(row, column, mask, mixed)] if mixed else [])
        what = check_mask(mask, None if mixed else layout, channel, threshold)
        problems.extend(Problem(row, column, mask, text) for text in what)
    return problems


def _modality_problems(
    record: Mapping[str, str], row: int, column: str, folder: Path, image: Path | None, layout: Layout | None
) -> list[Problem]:
    """The problems of a further image of the case (``image_t1``): its own, and its grid against ``image``."""
    if record[column].strip() == "":
        return [Problem(row, column, None, "expected a value, found an empty cell")]
    file = manifest_file(folder, record[column])
    other, what = _image_problems(file)
    problems = [Problem(row, column, file, text) for text in what]
    mixed = _mixed_kinds(image, file, column.replace("_", " "))
    if mixed:
        return [*problems, Problem(row, column, file, mixed)]
    if isinstance(other, Geometry) and isinstance(layout, Geometry):
        problems += [Problem(row, column, file, text) for text in alignment_problems(other, layout, column)]
    elif isinstance(other, tuple) and isinstance(layout, tuple) and other != layout:
        size = f"size {other[0]}x{other[1]} differs from the image's {layout[0]}x{layout[1]}"
        problems.append(Problem(row, column, file, size))
    return problems


def _mixed_kinds(image: Path | None, mask: Path, what: str = "mask") -> str | None:
    """Why a picture's mask is a volume or a volume's mask a picture, or None."""
    image_kind = _KINDS.get(file_suffix(image)) if image is not None else None
    mask_kind = _KINDS.get(file_suffix(mask))
    if image_kind is None or mask_kind is None or image_kind == mask_kind:
        return None
    return (
        f"is a {mask_kind} but the image is a {image_kind} ({file_suffix(image)}); an image and its "
        f"{what} must both be 2D pictures or both NIfTI volumes"
    )


def _duplicate_id(
    record: Mapping[str, str], row: int, has_ids: bool, first_row_of_id: dict[str, int]
) -> str | None:
    """Why the row's image id is not unique, or None; a new id is recorded with its row."""
    image_id = record["image_id"] if has_ids else default_image_id(record["image"])
    if not image_id.strip():
        return None  # already reported as an empty cell
    if image_id not in first_row_of_id:
        first_row_of_id[image_id] = row
        return None
    why = "" if has_ids else " (the image file stem, as there is no image_id column)"
    return (
        f"image id {image_id!r}{why} is already used in row {first_row_of_id[image_id]};"
        " image ids must be unique"
    )


def _mask_options(
    record: Mapping[str, str], defaults: Mapping[str, int | None]
) -> tuple[dict[str, int | None], list[tuple[str, str]]]:
    """The row's mask channel and threshold, and (column, what) for each cell that is not valid."""
    options: dict[str, int | None] = dict(defaults)
    problems: list[tuple[str, str]] = []
    for column in (MASK_CHANNEL_COLUMN, MASK_THRESHOLD_COLUMN):
        try:
            value = parse_mask_option(record.get(column, ""), column)
        except ValueError as err:
            problems.append((column, str(err)))
            continue
        if value is not None:  # a cell of the user's manifest wins over the data settings
            options[column] = value
    return options, problems


def _unreadable(file: Path) -> str | None:
    """Why ``file`` cannot be opened at all before looking inside it, or None."""
    if not file.exists():
        return "does not exist (paths are relative to the manifest's folder)"
    if file.is_dir():
        return "is a directory; expected an image file"
    if not file.is_file():
        return "is not a regular file; expected an image file"
    suffix = file_suffix(file)
    if suffix in _NOT_YET_CHECKED:
        return (
            f"{_NOT_YET_CHECKED[suffix]} files are not supported yet; use 2D PNG, JPEG, TIFF or GIF "
            "pictures or 3D NIfTI volumes (.nii, .nii.gz)"
        )
    if suffix not in _CHECKED_SUFFIXES:
        return f"unsupported file suffix {suffix or '(none)'!r}; supported: {', '.join(_CHECKED_SUFFIXES)}"
    return None


def _image_problems(file: Path) -> tuple[Layout | None, list[str]]:
    """The image's layout (a picture's size, a volume's geometry), or None, and what is wrong."""
    why = _unreadable(file)
    if why:
        return None, [why]
    if file_suffix(file) in NIFTI_SUFFIXES:
        return volume_image_problems(file)
    return picture_image_problems(file)


def _mask_problems(file: Path, image: Layout | None, channel: int | None, threshold: int | None) -> list[str]:
    """What is wrong with a mask: unreadable, not laid out as the image, or values that would be guessed.

    ``image`` is None when the image could not be opened or is of another kind; ``threshold`` is
    None when neither the row nor the data settings give one, and then the mask must be binary.
    A volume's mask has no channels: ``channel`` applies to colour pictures.
    """
    why = _unreadable(file)
    if why:
        return [why]
    if file_suffix(file) in NIFTI_SUFFIXES:
        distinct, problems = volume_mask_problems(file, image if isinstance(image, Geometry) else None)
        if distinct is None:
            return problems
        value_problem = _lesion_value_problem(distinct, 1, threshold, _VOLUME_HINTS)
        return problems + ([value_problem] if value_problem else [])
    channels, scale, problems = picture_mask_channels(file, image if isinstance(image, tuple) else None)
    if channels is None:
        return problems
    value_problem = _mask_value_problem(channels, scale, channel, threshold, file)
    return problems + ([value_problem] if value_problem else [])


def _mask_value_problem(
    channels: np.ndarray, scale: int, channel: int | None, threshold: int | None, file: Path
) -> str | None:
    """Why the mask's values cannot be read without guessing, or None.

    Reuses the rules of io.pictures.read_picture_mask: a colour mask whose channels differ needs a
    channel; the lesion channel's values then follow :func:`_lesion_value_problem`.
    """
    colour = channels.shape[2] == 3
    if colour and channel is None:
        spread = colour_spread(channels)
        if spread > GREY_CHANNEL_SPREAD:
            binary = all(is_binary(distinct_values(channels[..., c])) for c in range(3))
            if binary or threshold is not None:
                return (
                    f"colour mask whose channels differ by up to {spread}: say which channel holds "
                    "the lesion with data.mask_channel (0 red, 1 green, 2 blue) or a mask_channel column"
                )
            return (
                f"colour mask whose channels differ by up to {spread}, with values that are not "
                "binary (lossy JPEG?): set data.mask_channel (0 red, 1 green, 2 blue) and "
                "data.mask_threshold (values above it are lesion; 127 suits 0/255 masks), or "
                "mask_channel / mask_threshold columns"
            )
    values = lesion_values(channels, channel, file)  # the ambiguous case was answered above
    return _lesion_value_problem(distinct_values(values), scale, threshold, _PICTURE_HINTS)


def _lesion_value_problem(
    distinct: np.ndarray, scale: int, threshold: int | None, hints: tuple[str, str]
) -> str | None:
    """Why a mask's sorted distinct values cannot be read as lesion / not lesion unguessed, or None.

    A label mask (0/1) needs nothing; any other mask must be binary unless a threshold is set;
    and a binary mask whose lesion value is not above the threshold would silently read as
    lesion-free. ``scale`` lifts the 8-bit threshold to the values' range (257 for 16 bits).
    """
    if is_label_mask(distinct):
        return None
    if not is_binary(distinct):
        if threshold is not None:
            return None
        cause, suits = hints
        return (
            f"values are not binary: {distinct.size} distinct values from {distinct[0]} to "
            f"{distinct[-1]} ({cause}): set data.mask_threshold (values above it are lesion; "
            f"{suits}) or a mask_threshold column"
        )
    # .item() keeps a float mask's 0.5 a fraction: int() would make it 0 and hide the problem.
    lesion = distinct[-1].item()
    cut = DEFAULT_MASK_THRESHOLD if threshold is None else threshold
    if 0 < lesion <= cut * scale:
        return (
            f"binary mask whose lesion value {lesion} is not above the mask threshold {cut}"
            f"{' (x257 for 16 bits)' if scale != 1 else ''}, so it would read as lesion-free: "
            "set data.mask_threshold (or a mask_threshold column) below the lesion value"
        )
    return None
