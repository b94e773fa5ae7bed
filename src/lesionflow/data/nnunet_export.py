"""Export a lesionflow dataset and its split as an nnU-Net v2 raw dataset: the same cases, folds and labels.

It must never rename a case, change a split or guess a label: an id unsafe as a file name, a split
that does not match the manifest, or data without masks is a LesionflowError in one line.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from lesionflow.data.manifest import (
    PATH_ATTR,
    SUBSETS,
    load_manifest_image,
    load_manifest_mask,
    manifest_has_masks,
    modality_columns,
    read_manifest,
)
from lesionflow.data.subsets import read_split
from lesionflow.io.geometry import Geometry
from lesionflow.io.nifti import write_nifti
from lesionflow.io.pictures import PICTURE_SUFFIXES
from lesionflow.io.readers import file_suffix
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

# The config section whose settings the stage gets, named in errors.
SECTION = "nnunet_export"
SETTING_KEYS = ("dataset_id", "dataset_name")
FOLD_COLUMN = "fold"
# Letters, digits, '.', '_', '-', not leading with '.' or '-': safe on every file system and shell.
SAFE_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SAFE_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
LABELS = {"background": 0, "lesion": 1}
PNG, NIFTI = ".png", ".nii.gz"
RGB_NAMES = ("R", "G", "B")
# nnU-Net's reader for 2D pictures: an RGB PNG is one file holding three channels.
NATURAL_IMAGE_READER = "NaturalImage2DIO"


class CaseLayout(NamedTuple):
    """How one case's channels are stored: the file type, 2D or 3D, and each file's channel names."""

    file_ending: str
    spatial_dims: int
    files: tuple[tuple[str, ...], ...]

    @property
    def channel_names(self) -> dict[str, str]:
        """dataset.json's ``channel_names``: channel index (as text) to name, over all files."""
        names = [name for file in self.files for name in file]
        return {str(index): name for index, name in enumerate(names)}


def nnunet_case_file(case: str, channel: int, file_ending: str) -> str:
    """The name of one channel file of a case: ``{case}_{XXXX}{file_ending}`` (4-digit channel)."""
    return f"{case}_{channel:04d}{file_ending}"


def nnunet_label_file(case: str, file_ending: str) -> str:
    """The name of a case's label file: ``{case}{file_ending}``."""
    return f"{case}{file_ending}"


def nnunet_file_ending(image_path: str | os.PathLike) -> str:
    """``.png`` for a picture (PNG, JPEG, TIFF, ...; nnU-Net takes no lossy format), else ``.nii.gz``."""
    return PNG if file_suffix(image_path) in PICTURE_SUFFIXES else NIFTI


def dataset_folder_name(settings: Mapping[str, Any]) -> str:
    """``Dataset{id:03d}_{name}`` from the export settings; LesionflowError for an unsafe name."""
    settings = complete_section({SECTION: settings}, SECTION, SETTING_KEYS)
    name = settings["dataset_name"]
    if not isinstance(name, str) or not SAFE_DATASET_NAME.fullmatch(name):
        raise LesionflowError(
            f"{SECTION}.dataset_name: {name!r} is not a valid folder name; use letters, digits, "
            "'_' and '-', starting with a letter or digit"
        )
    return f"Dataset{settings['dataset_id']:03d}_{name}"


def check_case_ids(ids: Iterable[str], where: str) -> None:
    """Raise LesionflowError naming the first id unsafe as an nnU-Net file name or colliding with another.

    Ids that differ only in letter case collide on case-insensitive file systems; they are
    refused, as are duplicates, rather than renamed.
    """
    seen: dict[str, str] = {}
    for case in ids:
        if not SAFE_CASE_ID.fullmatch(case):
            raise LesionflowError(
                f"{where}: image id {case!r} is not safe as an nnU-Net case file name; use letters, "
                "digits, '.', '_' and '-', starting with a letter or digit (ids are never renamed)"
            )
        other = seen.get(case.lower())
        if other is not None:
            what = "appears twice" if other == case else f"collides with {other!r} on case-insensitive disks"
            raise LesionflowError(f"{where}: image id {case!r} {what}; every case needs its own file name")
        seen[case.lower()] = case


def _subsets(split_df: pd.DataFrame) -> pd.Series:
    """The split column as text, checked to hold only train, val and test."""
    subsets = split_df["split"].astype(str)
    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        raise LesionflowError(f"split.csv column 'split': values {unknown} are not {', '.join(SUBSETS)}")
    return subsets


def _fold_numbers(split_df: pd.DataFrame, development: pd.Series) -> pd.Series:
    """The ``fold`` of each train / val row, checked to number the folds 0 to k-1 with k >= 2."""
    cells = split_df.loc[development, FOLD_COLUMN]
    numbers = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numbers) | (numbers % 1 != 0) | (numbers < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        cell = cells.iloc[first]
        value = "an empty cell" if pd.isna(cell) else repr(getattr(cell, "item", lambda: cell)())
        raise LesionflowError(
            f"split.csv column '{FOLD_COLUMN}': image {split_df.loc[development, 'image_id'].iloc[first]!r} "
            f"has {value}; every train or val row needs a fold number 0, 1, ..."
        )
    folds = sorted(set(numbers.astype(int).tolist()))
    if len(folds) < 2 or folds != list(range(len(folds))):
        raise LesionflowError(
            f"split.csv column '{FOLD_COLUMN}': folds {folds}; expected 0 to k-1 with k >= 2, so that "
            "fold i is nnU-Net's fold i and every fold has cases to train on"
        )
    return pd.Series(numbers.astype(int), index=cells.index)


def nnunet_folds(split_df: pd.DataFrame) -> list[dict[str, list[str]]]:
    """The content of nnU-Net's ``splits_final.json``: one ``{"train": [...], "val": [...]}`` per fold.

    Without a ``fold`` column there is one fold: lesionflow's train and val subsets. With one
    (k-fold cross-validation; a row's fold is the one in which it is validation) fold i holds
    the train / val rows of fold i as val and the other train / val rows as train. Test rows are
    in no fold. Ids keep split.csv's order.
    """
    subsets = _subsets(split_df)
    ids = split_df["image_id"].astype(str)
    development = subsets != "test"
    if FOLD_COLUMN not in split_df.columns:
        folds = [{"train": ids[subsets == "train"].tolist(), "val": ids[subsets == "val"].tolist()}]
    else:
        numbers = _fold_numbers(split_df, development)
        cases = ids[development]
        folds = [
            {"train": cases[numbers != fold].tolist(), "val": cases[numbers == fold].tolist()}
            for fold in range(numbers.max() + 1)
        ]
    for index, fold in enumerate(folds):
        empty = [part for part in ("train", "val") if not fold[part]]
        if empty:
            raise LesionflowError(f"split.csv: fold {index} has no {empty[0]} case; nnU-Net needs both")
    return folds


def _manifest_rows(manifest_df: pd.DataFrame, split_df: pd.DataFrame) -> list[dict[str, Any]]:
    """The manifest row of each split.csv row, in split.csv order; both must list the same ids."""
    manifest = manifest_df.attrs.get(PATH_ATTR, "manifest")
    if not manifest_has_masks(manifest_df):
        raise LesionflowError(
            f"manifest {manifest}: the data have no masks (no mask column); an nnU-Net dataset needs a "
            "label for every training case"
        )
    rows = {str(row["image_id"]): row for row in manifest_df.to_dict("records")}
    ids = split_df["image_id"].astype(str).tolist()
    for missing, source, other in (
        (set(ids) - set(rows), "split.csv", f"manifest {manifest}"),
        (set(rows) - set(ids), f"manifest {manifest}", "split.csv"),
    ):
        if missing:
            raise LesionflowError(
                f"{source}: {len(missing)} image id(s) are not in {other}, e.g. {sorted(missing)[0]!r}; "
                "the split was made from another dataset"
            )
    return [rows[case] for case in ids]


def case_layout(row: Mapping[str, Any], image: np.ndarray) -> CaseLayout:
    """How nnU-Net stores a manifest row's ``(C, *spatial)`` image: one file per channel, or one RGB PNG.

    Channels are named after the manifest's image columns (``image``, and ``t1`` for
    ``image_t1``); nnU-Net normalises a channel named CT by its CT scheme and every other by
    z-scoring. A column holding several channels (a 4D NIfTI) names them ``channel<k>``.
    An RGB picture is one PNG named R, G, B, as nnU-Net's natural-image reader takes it;
    that reader needs every file of a case to have the same number of channels, so an RGB
    picture beside further pictures is refused.
    """
    columns = ["image", *modality_columns(row)]
    ending, channels = nnunet_file_ending(row["image"]), image.shape[0]
    if ending == PNG and len(columns) == 1 and channels == len(RGB_NAMES):
        return CaseLayout(ending, image.ndim - 1, (RGB_NAMES,))
    if channels == len(columns):
        names = tuple((column.removeprefix("image_"),) for column in columns)
        return CaseLayout(ending, image.ndim - 1, names)
    if ending == PNG:
        raise LesionflowError(
            f"image {row['image']} (image id {row['image_id']!r}): an RGB picture with further image "
            "columns cannot be one nnU-Net case; nnU-Net's natural-image reader needs one RGB picture "
            "or grey pictures only"
        )
    return CaseLayout(ending, image.ndim - 1, tuple((f"channel{k}",) for k in range(channels)))


def _layout_text(layout: CaseLayout) -> str:
    names = ", ".join(layout.channel_names.values())
    return f"{layout.spatial_dims}D {layout.file_ending} with channels {names}"


def _picture_levels(channels: np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` picture in [0, 1] as stored PNG levels ``(H, W)`` or ``(H, W, 3)``.

    8-bit when every value is a multiple of 1/255 (any 8-bit source, so exactly its levels), else
    16-bit: only grey pictures can be 16-bit, and PIL writes no 16-bit colour PNG.
    """
    levels = channels * 255.0
    if np.abs(levels - np.rint(levels)).max() < 1e-3:
        stored = np.rint(levels).astype(np.uint8)
    else:
        stored = np.rint(channels * 65535.0).astype(np.uint16)
    return stored[0] if stored.shape[0] == 1 else stored.transpose(1, 2, 0)


def _write_png(path: Path, levels: np.ndarray) -> None:
    with artifacts.atomic_path(path) as tmp:
        # The temporary file has no .png suffix for PIL to go by, so the format is named.
        Image.fromarray(np.ascontiguousarray(levels)).save(tmp, format="PNG")


def write_case_images(
    folder: Path, case: str, image: np.ndarray, geometry: Geometry, layout: CaseLayout
) -> list[str]:
    """Write a case's channel files into ``folder``; their names, in channel order.

    Pictures become PNGs of their own levels; volumes float32 NIfTI with the image's affine, laid
    out as lesionflow reads them (RAS), so nnU-Net sees the voxels lesionflow trains on.
    """
    names, start = [], 0
    for index, channels in enumerate(layout.files):
        path = folder / nnunet_case_file(case, index, layout.file_ending)
        part = image[start : start + len(channels)]
        if layout.file_ending == PNG:
            _write_png(path, _picture_levels(part))
        else:
            write_nifti(path, part[0], geometry)
        names.append(path.name)
        start += len(channels)
    return names


def write_case_label(folder: Path, case: str, mask: np.ndarray, geometry: Geometry, file_ending: str) -> str:
    """Write a case's bool lesion mask as uint8 labels 0 / 1 (PNG, or NIfTI with the image's affine)."""
    path = folder / nnunet_label_file(case, file_ending)
    labels = mask.astype(np.uint8)
    if file_ending == PNG:
        _write_png(path, labels)
    else:
        write_nifti(path, labels, geometry)
    return path.name


def dataset_json(layout: CaseLayout, n_training: int, name: str) -> dict[str, Any]:
    """nnU-Net's ``dataset.json``: channel names, labels, number of training cases and file ending.

    Pictures pin nnU-Net's natural-image reader; NIfTI is left to nnU-Net's default (SimpleITK).
    """
    record: dict[str, Any] = {
        "channel_names": layout.channel_names,
        "labels": dict(LABELS),
        "numTraining": n_training,
        "file_ending": layout.file_ending,
        "name": name,
    }
    if layout.file_ending == PNG:
        record["overwrite_image_reader_writer"] = NATURAL_IMAGE_READER
    return record


def _fresh_folder(folder: Path) -> None:
    """Refuse a dataset folder that already holds files: a stale case would join the export."""
    if folder.exists() and any(folder.iterdir()):
        raise LesionflowError(
            f"nnU-Net dataset folder {folder} already exists and is not empty; remove it first"
        )


def _export_cases(rows: list[dict[str, Any]], subsets: list[str], folder: Path) -> CaseLayout:
    """Write every case's images and label, one case at a time; the layout all cases share."""
    first: tuple[str, CaseLayout] | None = None
    for row, subset in tqdm(
        zip(rows, subsets, strict=True), total=len(rows), desc="nnunet export", unit="case", file=sys.stderr
    ):
        case = str(row["image_id"])
        image, geometry = load_manifest_image(row)
        mask = load_manifest_mask(row)
        if mask.shape != image.shape[1:]:
            raise LesionflowError(
                f"mask {row['mask']} has shape {mask.shape} but its image {row['image']} has "
                f"{image.shape[1:]}; they must match"
            )
        layout = case_layout(row, image)
        if first is None:
            first = (case, layout)
        elif layout != first[1]:
            raise LesionflowError(
                f"image id {case!r}: its image {row['image']} is {_layout_text(layout)}, but image id "
                f"{first[0]!r} is {_layout_text(first[1])}; nnU-Net needs the same channels for every case"
            )
        part = "Ts" if subset == "test" else "Tr"
        write_case_images(folder / f"images{part}", case, image, geometry, layout)
        write_case_label(folder / f"labels{part}", case, mask, geometry, layout.file_ending)
    assert first is not None  # split.csv has rows: nnunet_folds found train and val cases
    return first[1]


def export_nnunet_dataset(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    settings: Mapping[str, Any],
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Write ``out_dir/Dataset{id:03d}_{name}/`` as an nnU-Net v2 raw dataset and ``out_dir/export.json``.

    Train and val cases go to ``imagesTr`` with their labels in ``labelsTr``; test cases go to
    ``imagesTs``, and their labels to ``labelsTs`` (never ``labelsTr``, so nnU-Net cannot train
    on them), where evaluation outside nnU-Net can find them. Images and masks are read exactly as
    the pipeline reads them (manifest mask channel and threshold included). ``dataset.json``
    follows nnU-Net's dataset format; ``splits_final.json`` (see :func:`nnunet_folds`) belongs in
    ``nnUNet_preprocessed/<dataset>/`` once nnU-Net has planned the dataset, which export.json
    says. ``settings`` are ``dataset_id`` (1-999) and ``dataset_name``. Returns the export.json
    record: the folder, file ending, channel names, counts and case ids per subset.
    """
    name = dataset_folder_name(settings)
    split_df = read_split(split_path)
    check_case_ids(split_df["image_id"].astype(str), f"split file {split_path}")
    folds = nnunet_folds(split_df)
    rows = _manifest_rows(read_manifest(manifest_path), split_df)
    out = Path(out_dir)
    folder = out / name
    _fresh_folder(folder)
    subsets = _subsets(split_df).tolist()
    layout = _export_cases(rows, subsets, folder)
    ids = [str(row["image_id"]) for row in rows]
    cases = {subset: [i for i, s in zip(ids, subsets, strict=True) if s == subset] for subset in SUBSETS}
    n_training = len(cases["train"]) + len(cases["val"])
    artifacts.write_json(folder / "dataset.json", dataset_json(layout, n_training, name))
    artifacts.write_json(folder / "splits_final.json", folds)
    record = {
        "dataset": name,
        "dataset_folder": str(folder.absolute()),
        "file_ending": layout.file_ending,
        "channel_names": layout.channel_names,
        "counts": {
            "imagesTr": n_training,
            "imagesTs": len(cases["test"]),
            "folds": len(folds),
            **{subset: len(ids) for subset, ids in cases.items()},
        },
        "cases": cases,
        "splits_final": (
            f"copy splits_final.json to nnUNet_preprocessed/{name}/ after nnUNetv2_plan_and_preprocess"
        ),
        "manifest": str(Path(manifest_path).absolute()),
        "split": str(Path(split_path).absolute()),
    }
    artifacts.write_json(out / "export.json", record)
    return record
