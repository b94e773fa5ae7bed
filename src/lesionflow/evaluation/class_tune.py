"""The tune stage of a run of several lesion classes: each class locked on validation, as one is.

Reads validation maps and class stacks only, one image at a time, and writes ``locked.json`` (the
classes, then each class's locked settings), ``tuning_grid.csv`` (with a ``class`` column) and
``fusion.json`` (each class's presence fusion of its segmentation sources: a model of several
classes has no presence head).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lesionflow.data.class_masks import manifest_classes
from lesionflow.data.lesion_classes import LesionClasses
from lesionflow.data.subsets import read_split
from lesionflow.evaluation.class_tuning import counts_by_class, lock_classes
from lesionflow.evaluation.tune import (
    ReferenceMasks,
    check_probs_in_split,
    check_tune_settings,
    locked_fusion,
    paired_images,
    run_tune,
)
from lesionflow.pipeline.artifacts import open_arrays, read_json, write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError

CHOSEN_ON = "validation"


def run_tune_stage(
    manifest: str | os.PathLike,
    split: str | os.PathLike,
    probs_path: str | os.PathLike,
    settings: Mapping,
    out_dir: str | os.PathLike,
    presence_path: str | os.PathLike | None = None,
) -> dict:
    """The tune stage: :func:`run_class_tune` for a dataset of several classes, else ``run_tune``."""
    classes = manifest_classes(manifest)
    if classes is None:
        return run_tune(manifest, split, probs_path, settings, out_dir, presence_path)
    return run_class_tune(manifest, split, probs_path, settings, out_dir, classes)


def run_class_tune(
    manifest: str | os.PathLike,
    split: str | os.PathLike,
    probs_path: str | os.PathLike,
    settings: Mapping,
    out_dir: str | os.PathLike,
    classes: LesionClasses,
) -> dict:
    """Lock each class's threshold, minimum area and presence threshold on the validation maps."""
    cfg = check_tune_settings(settings)
    if not Path(probs_path).is_file():
        raise LesionflowError(f"probability file {probs_path} does not exist")
    with open_arrays(probs_path) as probs:
        check_probs_in_split(probs, read_split(split), "val", probs_path)
        masks = ReferenceMasks(manifest, sorted(probs))
        items = ((image_id, prob, mask.array) for image_id, prob, mask in paired_images(probs, masks))
        counts = counts_by_class(items, cfg, classes)
    per_class, grid = lock_classes(counts, cfg)
    out = Path(out_dir)
    write_csv(grid, out / "tuning_grid.csv")
    fusion = {
        name: locked_fusion(counts[name], per_class[name], cfg, None, settings) for name in classes.names
    }
    write_json(out / "fusion.json", {"chosen_on": CHOSEN_ON, "per_class": fusion})
    locked = {
        "chosen_on": CHOSEN_ON,
        "kind": classes.kind,
        "classes": list(classes.names),
        "per_class": per_class,
    }
    write_json(out / "locked.json", locked)
    return locked


def read_class_locked(path: str | os.PathLike, classes: LesionClasses) -> dict[str, dict]:
    """Each class's locked settings from a ``locked.json`` of :func:`run_class_tune`, checked to
    be chosen on validation for exactly ``classes``."""
    if not Path(path).is_file():
        raise LesionflowError(f"locked settings file {path} does not exist")
    record = read_json(path)
    if record.get("chosen_on") != CHOSEN_ON or "per_class" not in record:
        raise LesionflowError(
            f"locked settings file {path} was not written by the tune stage of several classes on validation"
        )
    if record.get("classes") != list(classes.names):
        raise LesionflowError(
            f"locked settings file {path} is for the classes {record.get('classes')}, "
            f"not {list(classes.names)}"
        )
    return record["per_class"]
