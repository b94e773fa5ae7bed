"""A structural check of an nnU-Net v2 raw dataset folder, written from nnU-Net's documented format.

It must never share code with lesionflow's exporter: it reads files with PIL and nibabel only, so
an exporter bug cannot hide behind the same bug here.

What it checks (nnU-Net's documentation/dataset_format.md, manual_data_splits.md and
verify_dataset_integrity): the folder is ``Dataset{XXX}_{name}``; dataset.json has channel_names,
labels (background 0, consecutive), numTraining and file_ending; image files are
``{case}_{XXXX}{file_ending}`` with channels 0000.. and as many channels in all as channel_names
(an RGB PNG is one file with three); every training case has its label ``{case}{file_ending}``
in labelsTr and every label a case; labels hold only dataset.json's label values and share their
image's size (and affine, for NIfTI); imagesTs cases and their optional labelsTs likewise;
splits_final.json, when present, is a list of {"train", "val"} folds over imagesTr cases, with
no case in both parts of a fold.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
DATASET_FOLDER = re.compile(r"Dataset\d{3}_[A-Za-z0-9_.-]+")


class Volume:
    """One image or label file: its values (channels last for colour PNG / 4D NIfTI) and layout."""

    def __init__(self, path: Path) -> None:
        if path.name.endswith((".nii", ".nii.gz")):
            volume = nib.load(path)
            self.values = np.asanyarray(volume.dataobj)
            self.affine = volume.affine
            spatial = min(self.values.ndim, 3)
        else:
            self.values = np.asarray(Image.open(path))
            self.affine = None
            spatial = 2
        self.shape = self.values.shape[:spatial]
        self.channels = int(np.prod(self.values.shape[spatial:], dtype=int))


def _cases(folder: Path, ending: str, problems: list[str]) -> dict[str, list[tuple[int, Path]]]:
    """Channel files by case: ``{case}_{XXXX}{ending}``; a file of another name is a problem."""
    pattern = re.compile(r"(.+)_(\d{4})" + re.escape(ending))
    cases: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = pattern.fullmatch(path.name)
        if match is None:
            problems.append(f"{folder.name}/{path.name}: not named {{case}}_{{XXXX}}{ending}")
            continue
        cases[match.group(1)].append((int(match.group(2)), path))
    return cases


def _labels(folder: Path, ending: str, problems: list[str]) -> dict[str, Path]:
    labels = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not path.name.endswith(ending):
            problems.append(f"{folder.name}/{path.name}: not named {{case}}{ending}")
            continue
        labels[path.name[: -len(ending)]] = path
    return labels


def _case_problems(case: str, files: list[tuple[int, Path]], n_channels: int) -> tuple[list[str], Volume]:
    """The problems of one case's channel files, and its first file read."""
    problems = []
    indices = sorted(index for index, _ in files)
    if indices != list(range(len(indices))):
        problems.append(f"case {case}: channel files {indices}, expected 0000 to {len(indices) - 1:04d}")
    volumes = [Volume(path) for _, path in sorted(files)]
    channels = sum(volume.channels for volume in volumes)
    if channels != n_channels:
        problems.append(f"case {case}: {channels} channel(s) in its files, dataset.json names {n_channels}")
    if len({(volume.shape, volume.channels) for volume in volumes}) > 1:
        problems.append(f"case {case}: its channel files differ in size or channel count")
    if any(np.issubdtype(v.values.dtype, np.floating) and np.isnan(v.values).any() for v in volumes):
        problems.append(f"case {case}: NaN in an image")
    return problems, volumes[0]


def _label_problems(case: str, path: Path, image: Volume, allowed: set[int]) -> list[str]:
    label = Volume(path)
    problems = []
    if label.shape != image.shape or label.channels != 1:
        problems.append(f"label {path.name}: shape {label.values.shape}, its image's size is {image.shape}")
    if not np.issubdtype(label.values.dtype, np.integer):
        problems.append(f"label {path.name}: dtype {label.values.dtype}, expected integers")
    found = {int(v) for v in np.unique(label.values)}
    if not found <= allowed:
        problems.append(f"label {path.name}: values {sorted(found - allowed)} not in dataset.json labels")
    if image.affine is not None and label.affine is not None and not np.allclose(image.affine, label.affine):
        problems.append(f"label {path.name}: affine differs from case {case}'s image")
    return problems


def _subset_problems(
    folder: Path, images: str, labels: str, ending: str, n_channels: int, allowed: set[int], required: bool
) -> tuple[list[str], set[str]]:
    """Problems of one images / labels pair of folders, and the cases found in the images folder."""
    problems: list[str] = []
    cases = _cases(folder / images, ending, problems)
    label_files = _labels(folder / labels, ending, problems)
    for case, files in cases.items():
        case_problems, first = _case_problems(case, files, n_channels)
        problems += case_problems
        if case in label_files:
            problems += _label_problems(case, label_files[case], first, allowed)
        elif required:
            problems.append(f"case {case}: no label {case}{ending} in {labels}")
    problems += [
        f"{labels}/{path.name}: no case {case} in {images}"
        for case, path in label_files.items()
        if case not in cases
    ]
    return problems, set(cases)


def _dataset_json_problems(spec: dict) -> list[str]:
    problems = [f"dataset.json: missing {key}" for key in REQUIRED_KEYS if key not in spec]
    if problems:
        return problems
    values = sorted(v for v in spec["labels"].values() if isinstance(v, int))
    if spec["labels"].get("background") != 0 or values != list(range(len(spec["labels"]))):
        problems.append(f"dataset.json: labels {spec['labels']} need background 0 and consecutive integers")
    if list(spec["channel_names"]) != [str(i) for i in range(len(spec["channel_names"]))]:
        problems.append(
            f"dataset.json: channel_names keys {list(spec['channel_names'])}, expected '0', '1', ..."
        )
    return problems


def _splits_problems(path: Path, training: set[str]) -> list[str]:
    folds = json.loads(path.read_text())
    if not isinstance(folds, list) or not folds:
        return ["splits_final.json: expected a non-empty list of folds"]
    problems = []
    for index, fold in enumerate(folds):
        if not isinstance(fold, dict) or sorted(fold) != ["train", "val"]:
            problems.append(f"splits_final.json fold {index}: expected keys train and val")
            continue
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - training)
        both = sorted(set(fold["train"]) & set(fold["val"]))
        if unknown:
            problems.append(f"splits_final.json fold {index}: cases not in imagesTr: {unknown[:5]}")
        if both:
            problems.append(f"splits_final.json fold {index}: cases in train and val: {both[:5]}")
    return problems


def check_nnunet_raw_dataset(folder: Path) -> list[str]:
    """Every way ``folder`` departs from nnU-Net v2's raw dataset format, one line each; empty = fine."""
    folder = Path(folder)
    problems = (
        [] if DATASET_FOLDER.fullmatch(folder.name) else [f"{folder.name}: not Dataset{{XXX}}_{{name}}"]
    )
    if not (folder / "dataset.json").is_file():
        return [*problems, "dataset.json: missing"]
    spec = json.loads((folder / "dataset.json").read_text())
    problems += _dataset_json_problems(spec)
    if problems:
        return problems
    ending, n_channels = spec["file_ending"], len(spec["channel_names"])
    allowed = {int(v) for v in spec["labels"].values()}
    train_problems, training = _subset_problems(
        folder, "imagesTr", "labelsTr", ending, n_channels, allowed, True
    )
    test_problems, testing = _subset_problems(
        folder, "imagesTs", "labelsTs", ending, n_channels, allowed, False
    )
    problems += train_problems + test_problems
    if spec["numTraining"] != len(training):
        problems.append(
            f"dataset.json: numTraining {spec['numTraining']}, imagesTr has {len(training)} cases"
        )
    if training & testing:
        problems.append(f"cases in imagesTr and imagesTs: {sorted(training & testing)[:5]}")
    if (folder / "splits_final.json").is_file():
        problems += _splits_problems(folder / "splits_final.json", training)
    return problems
