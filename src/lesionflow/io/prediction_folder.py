"""Read another tool's predictions (nnU-Net output, any folder of masks or maps) as lesionflow's maps.

One prediction per image id, named by it: nnUNetv2_predict's label map (``{id}.png``, ``{id}.nii.gz``)
with, after ``--save_probabilities``, ``{id}.npz`` of ``probabilities`` ``(C, 1, H, W)`` for pictures
or ``(C, Z, Y, X)`` for volumes (SimpleITK's order, reversed from nibabel's; the label map's affine
then gives RAS, so the pair must be there together); or any ``.png`` / ``.tif`` / ``.bmp`` /
``.nii(.gz)`` / ``.npy`` mask, label map or probability map laid out as lesionflow reads the image.
``.pkl`` and ``.json`` files are skipped; ``dataset.json`` names the labels a label map may hold.

It must never unpickle a file, never change one, and never return before every file is checked:
all problems are raised together as one :class:`PredictionFolderProblems`.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from PIL import Image

from lesionflow.io.nifti import NIFTI_SUFFIXES
from lesionflow.io.pictures import PICTURE_ERRORS
from lesionflow.io.readers import file_suffix
from lesionflow.pipeline.artifacts import array_writer
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.file_hashes import FileHashCache
from lesionflow.pipeline.keys import digest

PROBABILITIES_KEY = "probabilities"
NPZ_SUFFIX = ".npz"
PICTURE_MAP_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
MAP_SUFFIXES = (*PICTURE_MAP_SUFFIXES, *NIFTI_SUFFIXES, ".npy")
# nnU-Net writes its properties (.pkl), dataset.json, plans.json and its arguments beside the
# predictions; only dataset.json changes what the predictions mean (the labels).
IGNORED_SUFFIXES = (".pkl", ".json")
DATASET_JSON = "dataset.json"
# A single-channel map p is cut where nnU-Net's argmax of (1 - p, p) would: a tie is background.
HARD_CUT = 0.5
# What numpy, nibabel and zipfile raise for a missing, foreign, truncated or corrupt file.
_LOAD_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, ImageFileError)
_SHOWN_VALUES = 5
Shape = tuple[int, ...]
Labels = set[int] | None  # dataset.json's labels, None without one
Why = str | None  # what is wrong, or None


@dataclass
class PredictionSet:
    """One subset's predictions: a float32 map in [0, 1] per image id (hard masks as 0/1).

    ``kind`` is ``probabilities`` when every image has a probability map, else ``masks`` (a
    probability map then becomes nnU-Net's hard mask, so that all images are alike); ``formats``
    says what each image's files held; ``notes`` what a reader should know (mixed kinds, no lesion).
    """

    maps: dict[str, np.ndarray]
    kind: Literal["probabilities", "masks"]
    formats: dict[str, str]
    notes: list[str] = field(default_factory=list)


class PredictionFolderProblems(LesionflowError):
    """Every problem of a prediction folder.

    ``lines`` holds the count line (``prediction folder F: 3 problems``) and one line per problem,
    each naming its file; ``str()`` joins them with newlines.
    """

    def __init__(self, folder: Path, problems: list[str]) -> None:
        self.folder = folder
        self.problems = problems
        count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
        self.lines = [f"prediction folder {folder}: {count}", *problems]
        super().__init__("\n".join(self.lines))


@dataclass
class _Case:
    """One image's prediction: its probability map (or None) and its hard mask."""

    probability: np.ndarray | None
    mask: np.ndarray
    format: str


def prediction_files(folder: str | os.PathLike) -> list[Path]:
    """The files of ``folder`` that decide its predictions, sorted: all but hidden, .pkl and .json ones.

    ``dataset.json`` is kept: its labels decide how a label map is read.
    """
    return [
        path
        for path in sorted(Path(folder).iterdir())
        if path.is_file()
        and not path.name.startswith(".")
        and (file_suffix(path) not in IGNORED_SUFFIXES or path.name == DATASET_JSON)
    ]


def folder_fingerprint(folder: str | os.PathLike, cache: FileHashCache) -> str:
    """Hash of the names and contents of :func:`prediction_files`: a changed prediction changes it.

    Times are left out (a touched file keeps the key), and so is the folder's own path.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LesionflowError(f"prediction folder {folder} does not exist or is not a folder")
    entries = [{"file": path.name, "content": cache.content_hash(path)} for path in prediction_files(folder)]
    cache.save()
    return digest(entries, length=32)


def read_prediction_folder(
    folder: str | os.PathLike,
    expected: Mapping[str, tuple[int, ...]],
    label: int,
    *,
    skipped_ids: Collection[str] = (),
) -> PredictionSet:
    """The predictions of the image ids in ``expected`` (id to original spatial shape), checked.

    ``label`` is the lesion's label: the ``probabilities`` channel used, and the value of a label
    map that is lesion. Files of ``skipped_ids`` (another subset sharing the folder) are neither
    read nor reported. Raises :class:`PredictionFolderProblems` with every problem: missing and
    extra ids, conflicting files, wrong shapes, values that are neither a mask, a label map nor
    probabilities in [0, 1]. A volume's npz is checked with its label map's header only.
    """
    folder = Path(folder)
    if isinstance(label, bool) or not isinstance(label, int | np.integer) or label < 1:
        raise LesionflowError(f"label: expected an integer >= 1 (the lesion's label), got {label!r}")
    label = int(label)
    if not folder.is_dir():
        raise LesionflowError(f"prediction folder {folder} does not exist or is not a folder")
    groups, problems = _files_by_id(folder)
    labels, label_problems = _dataset_labels(folder, label)
    problems += label_problems
    cases: dict[str, _Case] = {}
    for image_id, shape in expected.items():
        if image_id not in groups:
            problems.append(f"{folder / image_id}.*: no prediction file for image id {image_id!r}")
            continue
        case, case_problems = _read_case(folder, image_id, groups[image_id], tuple(shape), label, labels)
        problems += case_problems
        if case is not None:
            cases[image_id] = case
    for image_id in sorted(set(groups) - set(expected) - set(skipped_ids)):
        problems += [f"{path}: image id {image_id!r} is not in the subset" for path in groups[image_id]]
    if problems:
        raise PredictionFolderProblems(folder, problems)
    return _prediction_set(cases, label)


def write_subset_npz(prediction_set: PredictionSet, path: str | os.PathLike) -> None:
    """Write the maps as the infer stage's ``<subset>.npz``: one float16 array per image id."""
    with array_writer(path) as add:
        for image_id, values in prediction_set.maps.items():
            add(image_id, values.astype(np.float16))


def _prediction_set(cases: Mapping[str, _Case], label: int) -> PredictionSet:
    """The set of ``cases``: probabilities if every case has them, else every hard mask."""
    formats = {image_id: case.format for image_id, case in cases.items()}
    masks_only = sorted(image_id for image_id, case in cases.items() if case.probability is None)
    notes = []
    if masks_only and len(masks_only) < len(cases):
        notes.append(
            f"{len(masks_only)} of {len(cases)} images have only a mask ({_shown(masks_only)}): every image "
            f"is read as a hard mask (probabilities as nnU-Net's argmax, a single map above {HARD_CUT})"
        )
    if cases and not any(case.mask.any() for case in cases.values()):
        notes.append(f"no image has a lesion pixel (label {label}) in its hard mask")
    if masks_only:
        maps = {image_id: case.mask.astype(np.float32) for image_id, case in cases.items()}
        return PredictionSet(maps, "masks", formats, notes)
    maps = {image_id: case.probability for image_id, case in cases.items()}
    return PredictionSet(maps, "probabilities", formats, notes)


def _shown(items: list[str]) -> str:
    """The first few ``items`` joined for a report line."""
    return ", ".join(items[:_SHOWN_VALUES]) + (", ..." if len(items) > _SHOWN_VALUES else "")


def _files_by_id(folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """The prediction files grouped by image id (name less suffix), and a line per unknown file."""
    groups: dict[str, list[Path]] = {}
    problems = []
    for path in (path for path in prediction_files(folder) if path.name != DATASET_JSON):
        suffix = file_suffix(path)
        if suffix not in (*MAP_SUFFIXES, NPZ_SUFFIX):
            known = ", ".join((*MAP_SUFFIXES, NPZ_SUFFIX))
            problems.append(f"{path}: not a prediction file (supported: {known}; .pkl and .json are skipped)")
            continue
        groups.setdefault(path.name[: len(path.name) - len(suffix)], []).append(path)
    return groups, problems


def _dataset_labels(folder: Path, label: int) -> tuple[Labels, list[str]]:
    """The labels of nnU-Net's dataset.json in ``folder`` (None without one), and what is wrong."""
    path = folder / DATASET_JSON
    if not path.is_file():
        return None, []
    try:
        values = [v for k, v in json.loads(path.read_text())["labels"].items() if k != "ignore"]
        if any(isinstance(v, list) and len(v) > 1 for v in values):
            return None, [f"{path}: region-based labels are not supported (npz channels are then regions)"]
        labels = {int(v[0] if isinstance(v, list) else v) for v in values} | {0}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        return None, [f"{path}: cannot read its 'labels' ({type(err).__name__}: {err})"]
    if label not in labels:
        return labels, [f"{path}: the lesion label {label} is not among its labels {sorted(labels)}"]
    return labels, []


def _read_case(
    folder: Path, image_id: str, files: list[Path], shape: Shape, label: int, labels: Labels
) -> tuple[_Case | None, list[str]]:
    """The prediction of one image from its files, or None and what is wrong."""
    npz = [path for path in files if file_suffix(path) == NPZ_SUFFIX]
    maps = [path for path in files if file_suffix(path) != NPZ_SUFFIX]
    partner = maps[0] if len(maps) == 1 and file_suffix(maps[0]) != ".npy" else None
    if len(npz) > 1 or len(maps) > 1 or (npz and maps and partner is None):
        names = ", ".join(path.name for path in files)
        return None, [
            f"{folder / image_id}.*: files {names} give image id {image_id!r} conflicting predictions; "
            f"keep one (an .npz beside one label map is nnU-Net's pair)"
        ]
    if npz:
        return _read_npz(npz[0], partner, shape, label)
    return _read_map(maps[0], shape, label, labels)


def _read_npz(path: Path, partner: Path | None, shape: Shape, label: int) -> tuple[_Case | None, list[str]]:
    """nnU-Net's class probabilities of one image, laid out as lesionflow reads the image."""
    volume = partner is not None and file_suffix(partner) in NIFTI_SUFFIXES
    if len(shape) == 3 and not volume:
        stem = path.name[: -len(NPZ_SUFFIX)]
        return None, [f"{path}: a volume's probabilities need {stem}.nii.gz beside them (for its affine)"]
    probabilities, problem = _npz_probabilities(path)
    if problem is None:
        problem = _probability_problem(probabilities, label, len(shape))
    if problem is not None:
        return None, [f"{path}: {problem}"]
    spatial = probabilities.shape[1:]
    if len(shape) == 2:
        spatial = spatial[1:]  # nnU-Net's pseudo-3D axis of a 2D image, always 1
    probability = probabilities[label].reshape(spatial)
    mask = (probabilities.argmax(axis=0) == label).reshape(spatial)
    if volume:
        try:
            ornt = _ras_orientation(nib.load(os.fspath(partner)).affine, len(shape))
        except _LOAD_ERRORS as err:
            return None, [f"{partner}: cannot read its header for the npz's orientation: {err}"]
        # SimpleITK's (Z, Y, X) reversed is nibabel's stored (X, Y, Z); then as lesionflow reads it.
        probability = nib.orientations.apply_orientation(probability.T, ornt)
        mask = nib.orientations.apply_orientation(mask.T, ornt)
    if probability.shape != shape:
        what = f"probabilities of spatial shape {tuple(probability.shape)} do not match the image's {shape}"
        if volume and spatial == shape:
            what += (
                "; they match only un-reversed, but nnU-Net writes a volume's probabilities as"
                " (C, Z, Y, X), reversed from nibabel's (X, Y, Z)"
            )
        return None, [f"{path}: {what}"]
    suffix = f" + {file_suffix(partner)} label map" if partner is not None else ""
    probability, mask = np.ascontiguousarray(probability, np.float32), np.ascontiguousarray(mask)
    return _Case(probability, mask, f".npz probabilities{suffix}"), []


def _npz_probabilities(path: Path) -> tuple[np.ndarray | None, Why]:
    """The ``probabilities`` array of an nnU-Net npz, or None and what is wrong."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return None, "is not an .npz archive"
        with loaded:
            if PROBABILITIES_KEY not in loaded.files:
                found = ", ".join(loaded.files) or "none"
                return None, f"has no '{PROBABILITIES_KEY}' array (found: {found}); expected nnU-Net's output"
            return loaded[PROBABILITIES_KEY], None
    except _LOAD_ERRORS as err:
        return None, f"cannot read: {err}"


def _probability_problem(probabilities: np.ndarray, label: int, spatial_dims: int) -> Why:
    """Why an npz's ``probabilities`` are not nnU-Net's ``(C, 1, H, W)`` / ``(C, Z, Y, X)`` ones, or None."""
    layout = "(C, 1, H, W)" if spatial_dims == 2 else "(C, Z, Y, X)"
    if probabilities.ndim != 4 or (spatial_dims == 2 and probabilities.shape[1] != 1):
        return f"probabilities of shape {probabilities.shape}; expected {layout}"
    if probabilities.dtype.kind != "f":
        return f"probabilities of type {probabilities.dtype}; expected floating point"
    if probabilities.shape[0] <= label:
        return (
            f"probabilities have {probabilities.shape[0]} channel(s); the lesion label {label} needs "
            f"at least {label + 1} (channel 0 is background)"
        )
    return _range_problem(probabilities)


def _range_problem(values: np.ndarray) -> Why:
    """Why floating ``values`` are not probabilities (finite, in [0, 1]), or None."""
    if not np.isfinite(values).all():
        return "probabilities hold NaN or infinite values"
    low, high = values.min().item(), values.max().item()
    if low < 0 or high > 1:
        return f"probabilities must lie in [0, 1], found values from {low:g} to {high:g}"
    return None


def _ras_orientation(affine: np.ndarray, spatial_dims: int) -> np.ndarray:
    """nibabel's orientation from stored voxel axes to RAS, as lesionflow.io.nifti reads a volume."""
    if spatial_dims < 3:
        return np.array([[axis, 1.0] for axis in range(spatial_dims)])  # a 2D slice is kept as stored
    return nib.orientations.io_orientation(affine)


def _read_map(path: Path, shape: Shape, label: int, labels: Labels) -> tuple[_Case | None, list[str]]:
    """One image's mask, label map or probability map from a single file."""
    values, problem = _map_values(path)
    if problem is None and values.shape != shape:
        problem = f"spatial shape {values.shape} does not match the image's {shape}"
        if values.shape[::-1] == shape:
            problem += " (axes reversed: a map must be laid out as lesionflow reads the image)"
    if problem is None:
        case, problem = _classified(values, label, labels, file_suffix(path))
        if problem is None:
            return case, []
    return None, [f"{path}: {problem}"]


def _map_values(path: Path) -> tuple[np.ndarray | None, Why]:
    """The values of a single-file prediction as stored (a volume in RAS orientation), or None and why."""
    suffix = file_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        try:
            volume = nib.load(os.fspath(path))
            stored = np.asanyarray(volume.dataobj)
        except _LOAD_ERRORS as err:
            return None, f"cannot read: {err}"
        if stored.ndim == 4 and stored.shape[-1] == 1:
            stored = stored[..., 0]
        if stored.ndim not in (2, 3):
            return None, f"NIfTI of shape {stored.shape}; expected one 2D or 3D map"
        return nib.orientations.apply_orientation(stored, _ras_orientation(volume.affine, stored.ndim)), None
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False), None
        except _LOAD_ERRORS as err:
            return None, f"cannot read: {err}"
    try:
        with Image.open(path) as picture:
            values = np.asarray(picture)
    except PICTURE_ERRORS as err:
        return None, f"cannot read: {err}"
    if values.ndim == 3:
        colours = values[..., :3] if values.shape[2] >= 3 else values[..., :1]  # alpha is not looked at
        if np.ptp(colours, axis=2).any():
            return None, "is a colour picture; expected one grey channel (a mask, label map or map)"
        values = values[..., 0]
    return values, None


def _classified(values: np.ndarray, label: int, labels: Labels, suffix: str) -> tuple[_Case | None, Why]:
    """What a single map means: a bool mask, probabilities (non-integral floats) or a label map."""
    if values.dtype == bool:
        return _Case(None, values, f"{suffix} mask"), None
    if values.dtype.kind not in "fiu":
        return None, f"holds {values.dtype} values; expected a mask, a label map or probabilities"
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return None, "holds NaN or infinite values"
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        problem = _range_problem(values)
        if problem is not None:
            return None, problem
        probability = values.astype(np.float32)
        return _Case(probability, probability > HARD_CUT, f"{suffix} probabilities"), None
    distinct = np.unique(values)
    known = labels if labels is not None else {0, label}
    if 255 in distinct and 255 not in known and np.isin(distinct, (0, 255)).all():
        return _Case(None, values == 255, f"{suffix} 0/255 mask"), None
    outside = [value.item() for value in distinct if value.item() not in known]
    if outside:
        shown = _shown([f"{value:g}" for value in outside])
        if labels is not None:
            return None, f"values {shown} are not among dataset.json's labels {sorted(labels)}"
        return None, (
            f"values {shown} are neither 0 nor the lesion label {label}: expected a binary mask "
            "(0/1, 0/255, bool), probabilities in [0, 1], or a label map with nnU-Net's dataset.json"
        )
    return _Case(None, values == label, f"{suffix} label map"), None
