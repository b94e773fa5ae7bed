"""The export stage: each val and test image's locked prediction and probability map as files.

Written in the source image's own format and geometry (a NIfTI volume's affine, orientation and
header; a picture's size), so they open aligned with the source in ITK-SNAP, 3D Slicer or an
image viewer. It must never choose or change a setting: masks are the locked post-processing of
the infer stage's maps, exactly as evaluate scores them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lesionflow.data.class_masks import manifest_classes
from lesionflow.data.lesion_classes import LesionClasses
from lesionflow.data.manifest import read_manifest
from lesionflow.evaluation.class_tune import read_class_locked
from lesionflow.evaluation.classes import predict_classes
from lesionflow.evaluation.postprocess import apply_locked, read_locked
from lesionflow.io.readers import export_suffix, write_map_like, write_mask_like
from lesionflow.pipeline.artifacts import open_arrays, write_json
from lesionflow.pipeline.errors import LesionflowError

SUBSETS = ("val", "test")


def export_subset(
    probs_path: str | os.PathLike,
    sources: Mapping[str, str],
    locked: Mapping[str, Any],
    out: Path,
    subset: str,
) -> list[dict[str, str]]:
    """Write every map of one subset's ``.npz`` and its locked mask; one record per image.

    Maps are read one at a time from the archive, so a subset of volumes is never held at once.
    """
    records = []
    with open_arrays(probs_path) as archive:
        for image_id in tqdm(list(archive), desc=f"export {subset}", unit="image", file=sys.stderr):
            if image_id not in sources:
                raise LesionflowError(f"{probs_path}: image id {image_id!r} is not in the manifest")
            prob = archive[image_id].astype(np.float32)
            source = sources[image_id]
            suffix = export_suffix(source)
            mask_path = out / subset / "masks" / f"{image_id}{suffix}"
            map_path = out / subset / "probabilities" / f"{image_id}{suffix}"
            write_mask_like(mask_path, apply_locked(prob, locked)[0], source)
            write_map_like(map_path, prob, source)
            records.append(
                {"image_id": image_id, "source": source, "mask": str(mask_path), "probability": str(map_path)}
            )
    return records


def export_class_subset(
    probs_path: str | os.PathLike,
    sources: Mapping[str, str],
    locked: Mapping[str, Mapping[str, Any]],
    classes: LesionClasses,
    out: Path,
    subset: str,
) -> list[dict[str, str]]:
    """:func:`export_subset` for several lesion classes: per image, each class's locked mask (one
    class per pixel when they are exclusive, as evaluate scores them) and map, named
    ``<image_id>_<class>``; one record per image and class."""
    records = []
    with open_arrays(probs_path) as archive:
        for image_id in tqdm(list(archive), desc=f"export {subset}", unit="image", file=sys.stderr):
            if image_id not in sources:
                raise LesionflowError(f"{probs_path}: image id {image_id!r} is not in the manifest")
            probs = archive[image_id].astype(np.float32)
            masks = predict_classes(probs, locked, classes).masks
            source, suffix = sources[image_id], export_suffix(sources[image_id])
            for c, name in enumerate(classes.names):
                mask_path = out / subset / "masks" / f"{image_id}_{name}{suffix}"
                map_path = out / subset / "probabilities" / f"{image_id}_{name}{suffix}"
                write_mask_like(mask_path, masks[c], source)
                write_map_like(map_path, probs[c], source)
                records.append(
                    {"image_id": image_id, "class": name, "source": source, "mask": str(mask_path),
                     "probability": str(map_path)}
                )  # fmt: skip
    return records


def run_export(
    manifest: str | os.PathLike,
    probs: Mapping[str, str | os.PathLike],
    locked_path: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Write ``<subset>/masks/`` and ``<subset>/probabilities/`` under ``out_dir`` and ``export.json``.

    ``probs`` maps each subset (val, test) to the infer stage's ``.npz`` of maps at the original
    resolution; ``locked_path`` is the tune stage's ``locked.json``. A manifest of several lesion
    classes gets each class's files (:func:`export_class_subset`).
    """
    classes = manifest_classes(manifest)
    locked = read_locked(locked_path) if classes is None else read_class_locked(locked_path, classes)
    table = read_manifest(manifest)
    sources = dict(zip(table["image_id"], table["image"], strict=True))
    # export.json names files by absolute path: a run view copies it elsewhere.
    out = Path(out_dir).absolute()
    if classes is None:
        files = {subset: export_subset(probs[subset], sources, locked, out, subset) for subset in SUBSETS}
    else:
        files = {
            subset: export_class_subset(probs[subset], sources, locked, classes, out, subset)
            for subset in SUBSETS
        }
    record = {
        "locked": locked,
        "counts": {subset: len(rows) for subset, rows in files.items()},
        "geometry": (
            "each file has its source image's format, size and (NIfTI) affine, orientation and header"
        ),
        "files": files,
    }
    write_json(out / "export.json", record)
    print(f"export: {record['counts']}", file=sys.stderr)
    return record
