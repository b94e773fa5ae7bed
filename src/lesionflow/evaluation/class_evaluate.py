"""The evaluate stage of a run of several lesion classes: every metric per class, macro means, confusion.

Each class is scored as a binary run is, with its own locked settings, on both levels (whole
images at their original size, and the items training saw). The per-image and per-lesion tables
hold every class, one block of rows each (a ``class`` column); ``summary.json`` has per subset
each class's section, the macro means with their intervals and the classes behind them, and the
confusion between classes at pixel and lesion level, also written as
``confusion_<pixels|lesions>_<level>_<subset>.csv``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from lesionflow.data.class_masks import manifest_classes
from lesionflow.data.geometry import ORIGINAL_RESOLUTION
from lesionflow.data.lesion_classes import LesionClasses
from lesionflow.data.subsets import read_split
from lesionflow.evaluation.artifact_names import FILE_NAMES
from lesionflow.evaluation.bootstrap import Resampler
from lesionflow.evaluation.class_tune import read_class_locked
from lesionflow.evaluation.classes import class_summaries, score_classes
from lesionflow.evaluation.evaluate import (
    Level,
    check_connectivity,
    evaluation_settings,
    lesion_matching,
    run_evaluate,
    tile_scales,
)
from lesionflow.evaluation.metrics import CONVENTIONS
from lesionflow.evaluation.summary import resampler_record, volume_detection
from lesionflow.evaluation.tune import ReferenceMasks, check_probs_in_split, paired_images
from lesionflow.pipeline.artifacts import open_arrays, write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError

CLASS_COLUMN = "class"


def run_evaluate_stage(
    manifest: str | os.PathLike,
    split: str | os.PathLike,
    probs_val_path: str | os.PathLike,
    probs_test_path: str | os.PathLike,
    locked_path: str | os.PathLike,
    settings: Mapping,
    out_dir: str | os.PathLike,
    tiles: Mapping[str, str | os.PathLike] | None = None,
    presence: Mapping[str, str | os.PathLike] | None = None,
) -> dict:
    """The evaluate stage: :func:`run_class_evaluate` for several classes, else ``run_evaluate``."""
    classes = manifest_classes(manifest)
    if classes is None:
        return run_evaluate(
            manifest, split, probs_val_path, probs_test_path, locked_path, settings, out_dir, tiles, presence
        )
    probs = {"val": probs_val_path, "test": probs_test_path}
    return run_class_evaluate(manifest, split, probs, locked_path, settings, out_dir, classes, tiles)


def run_class_evaluate(
    manifest: str | os.PathLike,
    split: str | os.PathLike,
    probs: Mapping[str, str | os.PathLike],
    locked_path: str | os.PathLike,
    settings: Mapping,
    out_dir: str | os.PathLike,
    classes: LesionClasses,
    tiles: Mapping[str, str | os.PathLike] | None = None,
) -> dict:
    """Score val and test per class with each class's locked settings; return the image summary.

    ``tiles`` as ``evaluate.run_evaluate``'s. A model of several classes has no presence head, so
    there is no presence fusion to apply.
    """
    settings = evaluation_settings(settings)
    locked = read_class_locked(locked_path, classes)
    out = Path(out_dir)
    if tiles is not None:
        scales = tile_scales(tiles["images"], read_split(tiles["split"]))
        level = Level(
            "tile", tiles["manifest"], tiles["split"], {"val": tiles["val"], "test": tiles["test"]},
            "preprocessed: each item at the resolution the model saw it; locked pixel areas are scaled alike",
            scales,
        )  # fmt: skip
        evaluate_class_level(level, locked, settings, out, classes)
    image_level = Level("image", manifest, split, probs, ORIGINAL_RESOLUTION)
    return evaluate_class_level(image_level, locked, settings, out, classes)


def _scored(level: Level, split_df: pd.DataFrame, subset: str, locked: Mapping, settings: Mapping, classes):
    probs_path = level.probs[subset]
    if not Path(probs_path).is_file():
        raise LesionflowError(f"probability file {probs_path} does not exist")
    subjects = dict(zip(split_df["image_id"], split_df["subject"], strict=True))
    matching = lesion_matching(settings, next(iter(locked.values())))
    with open_arrays(probs_path) as maps:
        check_probs_in_split(maps, split_df, subset, probs_path)
        references = ReferenceMasks(level.manifest, sorted(maps))
        if references.classes != classes:
            raise LesionflowError(
                f"manifest {level.manifest} holds the classes "
                f"{None if references.classes is None else list(references.classes.names)}, "
                f"not {list(classes.names)}"
            )
        items = (
            (image_id, prob, reference.array, reference.geometry)
            for image_id, prob, reference in paired_images(maps, references)
        )
        first = next(iter(sorted(maps)), None)
        if first is not None:
            check_connectivity(matching, references[first].array.ndim - 1)
        return score_classes(items, subjects, locked, classes, matching, settings["size_bins"], level.scales)


def _long(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Each class's table, one block of rows after another, with its ``class`` first."""
    blocks = [table.assign(**{CLASS_COLUMN: name}) for name, table in tables.items()]
    joined = pd.concat(blocks, ignore_index=True)
    return joined[[CLASS_COLUMN, *[c for c in joined.columns if c != CLASS_COLUMN]]]


def evaluate_class_level(
    level: Level, locked: Mapping[str, Mapping], settings: Mapping, out: Path, classes: LesionClasses
) -> dict:
    """Score val and test of one level per class; write its tables, confusion and summary."""
    names = FILE_NAMES[level.name]
    boot = settings["bootstrap"]
    split_df = read_split(level.split)
    summary: dict = {"level": level.name, "resolution": level.resolution, "classes": list(classes.names)}
    for subset in ("val", "test"):
        tables, confusion = _scored(level, split_df, subset, locked, settings, classes)
        per_image = _long({name: images for name, (images, _) in tables.items()})
        write_csv(per_image, out / names["per_item"].format(subset))
        write_csv(
            _long({name: lesions for name, (_, lesions) in tables.items()}),
            out / names["lesions"].format(subset),
        )
        for kind, table in confusion.items():
            write_csv(table.reset_index(), out / f"confusion_{kind}_{level.name}_{subset}.csv")
        first = next(iter(tables.values()))[0]
        resampler = Resampler.from_subjects(
            first["subject"].tolist(),
            boot["n_resamples"],
            boot["seed"],
            boot["confidence"],
            "evaluate.bootstrap",
        )
        summary[subset] = class_summaries(tables, resampler, settings["size_bins"])
        if settings["size_bins_mm3"] is not None:
            for name, (images, lesions) in tables.items():
                summary[subset]["classes"][name].update(
                    volume_detection(images, lesions, settings["size_bins_mm3"], resampler)
                )
        summary[subset]["confusion"] = {
            kind: table.to_dict(orient="index") for kind, table in confusion.items()
        }
        summary[subset]["bootstrap"] = resampler_record(resampler, boot["seed"])
    summary["locked"] = dict(locked)
    matching = lesion_matching(settings, next(iter(locked.values())))
    summary["settings"] = {**settings, "lesion_matching": asdict(matching)}
    summary["conventions"] = dict(CONVENTIONS)
    write_json(out / names["summary"], summary)
    return summary
