"""What a run bundle's predict.py runs: masks of source images or volumes, as the run's export stage writes.

It must never have its own preprocessing, TTA, stitching or thresholding: each step calls the
pipeline's function (preprocess, infer, tune's locked post-processing, export's writers), so a
bundle gives the run's locked masks exactly, and never settings other than the bundle's.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lesionflow
from lesionflow.data.geometry import restore_map
from lesionflow.data.manifest import default_image_id, load_manifest_image
from lesionflow.data.preprocess import prepare_image, stored_image
from lesionflow.evaluation.postprocess import apply_locked, read_locked
from lesionflow.io.background import read_ahead
from lesionflow.io.readers import SUPPORTED_SUFFIXES, export_suffix, file_suffix, write_mask_like
from lesionflow.model.infer import STORED_DTYPE, load_model, stitched_maps, windows_of
from lesionflow.model.networks import resolve_device
from lesionflow.model.tta import get_transforms
from lesionflow.pipeline.artifacts import read_json
from lesionflow.pipeline.errors import LesionflowError, exit_on_user_error

BUNDLE_FILE = "bundle.json"
MODEL_FILE = "model.pt"
LOCKED_FILE = "locked.json"
# Bumped when bundle.json changes meaning; a bundle of another format is refused, not guessed at.
BUNDLE_FORMAT = 1


@dataclass(frozen=True)
class Bundle:
    """A bundle read back: its folder, bundle.json, the locked post-processing and the model."""

    folder: Path
    record: dict[str, Any]
    locked: dict[str, Any]
    model: torch.nn.Module
    checkpoint: dict[str, Any]
    device: torch.device


def read_bundle(folder: str | os.PathLike, device: str) -> Bundle:
    """The bundle in ``folder`` with its model on ``device`` (cpu, cuda or auto).

    Raises LesionflowError naming the file for a folder that is not a bundle of this format.
    """
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise LesionflowError(f"{path} does not exist: {folder} is not a lesionflow run bundle")
    record = read_json(path)
    if record.get("format") != BUNDLE_FORMAT:
        raise LesionflowError(
            f"{path}: bundle format {record.get('format')!r}; this lesionflow reads format {BUNDLE_FORMAT}"
        )
    chosen = resolve_device(device, "--device")
    model, checkpoint = load_model(folder / MODEL_FILE, chosen)
    return Bundle(folder, record, read_locked(folder / LOCKED_FILE), model, checkpoint, chosen)


def input_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The images named by ``paths``: each file as given, each folder's readable images sorted by name.

    Raises LesionflowError for a path that does not exist, a file no reader knows, or an empty folder.
    """
    files: list[Path] = []
    for given in map(Path, paths):
        if given.is_dir():
            found = sorted(p for p in given.iterdir() if p.is_file() and file_suffix(p) in SUPPORTED_SUFFIXES)
            if not found:
                raise LesionflowError(
                    f"{given}: no image in the folder (readable suffixes: {', '.join(SUPPORTED_SUFFIXES)})"
                )
            files += found
        elif given.is_file():
            export_suffix(given)  # refuses an unknown suffix, naming the file
            files.append(given)
        else:
            raise LesionflowError(f"{given}: no such file or folder")
    return files


def mask_name(source: str | os.PathLike) -> str:
    """The file name of a source's mask, as the export stage names it: its image id and export suffix.

    The image id is the file name less its suffix, as in a manifest without an image_id column.
    """
    return default_image_id(str(source)) + export_suffix(source)


def model_input(source: str | os.PathLike, preprocess: Mapping[str, Any]) -> tuple[np.ndarray, dict]:
    """The ``(C, *spatial)`` image the infer stage predicts for ``source``, and its images.csv geometry.

    ``preprocess`` is the preprocess stage's record (preprocess.json): with ``identity`` the source
    is read as it is, else prepared by ``prepare_image`` and rounded as the stage stores it. The
    geometry holds the cells that ``restore_map`` reads (crop box and original shape).
    """
    image, geometry = load_manifest_image({"image": str(source)})
    box = tuple(slice(0, size) for size in geometry.shape)
    if not preprocess["identity"]:
        prepared = prepare_image(image, None, geometry.spacing, preprocess["settings"], str(source))
        image = stored_image(prepared.image).astype(np.float32)
        box = prepared.box
    cells = {
        "crop_start": [part.start for part in box],
        "crop_stop": [part.stop for part in box],
        "original_shape": list(geometry.shape),
    }
    return image, cells


def _checked_input(bundle: Bundle, source: Path) -> tuple[np.ndarray, dict]:
    image, cells = model_input(source, bundle.record["preprocess"])
    channels, spatial_dims = bundle.checkpoint["in_channels"], bundle.checkpoint["spatial_dims"]
    if image.shape[0] != channels or image.ndim != spatial_dims + 1:
        raise LesionflowError(
            f"{source}: image of shape {image.shape}; the bundle's model takes {channels} channel(s) "
            f"and {spatial_dims} spatial dims, as the run's source images were"
        )
    return image, cells


def probability_maps(bundle: Bundle, sources: Sequence[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    """Each source's whole-image probability map at its own size, in order, as the infer stage
    stores it (float16 values, returned as float32, as the export stage reads them): the same
    windows, batched across consecutive images, and the same stitching as the infer stage."""
    infer = bundle.record["infer"]
    preprocess = bundle.record["preprocess"]["settings"]
    roi_size = bundle.checkpoint.get("roi_size") or bundle.checkpoint.get("patch_size")
    spatial_dims = bundle.checkpoint["spatial_dims"]
    windows = windows_of(preprocess, roi_size, spatial_dims, float(infer["sw_overlap"]))
    prepared = read_ahead(sources, partial(_checked_input, bundle))
    for done in stitched_maps(
        bundle.model, (((source, cells), image) for source, (image, cells) in prepared), windows,
        infer["tta"], roi_size, int(infer["batch_size"]), bundle.device, float(infer["sw_overlap"]),
    ):  # fmt: skip
        source, cells = done.owner
        yield source, restore_map(done.map, cells).astype(STORED_DTYPE).astype(np.float32)


def _output_paths(sources: Sequence[Path], out: Path) -> list[Path]:
    paths = [out / mask_name(source) for source in sources]
    seen: dict[Path, Path] = {}
    for source, path in zip(sources, paths, strict=True):
        if path in seen:
            raise LesionflowError(
                f"{source} and {seen[path]} would both be written to {path}: give images with distinct names"
            )
        seen[path] = source
    return paths


def predict_files(
    bundle_folder: str | os.PathLike, paths: Sequence[str | os.PathLike], out: str | os.PathLike, device: str
) -> list[Path]:
    """Write the locked mask of every image named by ``paths`` into ``out``; return the mask files.

    Each mask is named and written as the export stage writes it (``<image id><suffix>``: a PNG
    for pictures, ``.nii.gz`` with the source's affine and header for NIfTI), in order.
    """
    bundle = read_bundle(bundle_folder, device)
    recorded = bundle.record.get("lesionflow_version")
    if recorded != lesionflow.__version__:
        print(
            f"predict: warning: the bundle was made with lesionflow {recorded}, this is "
            f"{lesionflow.__version__}; masks may differ from the run's",
            file=sys.stderr,
        )
    get_transforms(bundle.record["infer"]["tta"], bundle.checkpoint["spatial_dims"])
    sources = input_files(paths)
    targets = _output_paths(sources, Path(out))
    for (source, probability), target in zip(probability_maps(bundle, sources), targets, strict=True):
        write_mask_like(target, apply_locked(probability, bundle.locked)[0], source)
    print(f"predict: {len(targets)} mask(s) of run {bundle.record['run']} written to {out}", file=sys.stderr)
    return targets


@exit_on_user_error
def main(bundle_folder: str | os.PathLike, argv: Sequence[str] | None = None) -> None:
    """The command line of a bundle's predict.py: ``IMAGE_OR_FOLDER... --out DIR [--device cpu|cuda]``."""
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Write the locked lesion mask of each image or volume, in its own format and geometry.",
    )
    parser.add_argument("images", nargs="+", help="image or volume files, or folders of them")
    parser.add_argument("--out", required=True, help="folder for the masks (created if needed)")
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda", "auto"),
        help="where the network runs (default cpu, as the masks were checked; cuda may differ by rounding)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    predict_files(bundle_folder, args.images, args.out, args.device)
