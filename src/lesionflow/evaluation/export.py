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

from lesionflow.data.manifest import read_manifest
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


def run_export(
    manifest: str | os.PathLike,
    probs: Mapping[str, str | os.PathLike],
    locked_path: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Write ``<subset>/masks/`` and ``<subset>/probabilities/`` under ``out_dir`` and ``export.json``.

    ``probs`` maps each subset (val, test) to the infer stage's ``.npz`` of maps at the original
    resolution; ``locked_path`` is the tune stage's ``locked.json``.
    """
    locked = read_locked(locked_path)
    table = read_manifest(manifest)
    sources = dict(zip(table["image_id"], table["image"], strict=True))
    # export.json names files by absolute path: a run view copies it elsewhere.
    out = Path(out_dir).absolute()
    files = {subset: export_subset(probs[subset], sources, locked, out, subset) for subset in SUBSETS}
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
