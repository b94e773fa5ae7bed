"""The evaluate stage: apply the settings locked on validation to val and test, score every image.

Must never choose or change a setting: test predictions are read once, with locked.json as is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.data.geometry import ORIGINAL_RESOLUTION
from lesionflow.data.subsets import read_split
from lesionflow.evaluation.artifact_names import FILE_NAMES
from lesionflow.evaluation.bootstrap import Resampler
from lesionflow.evaluation.lesions import size_bin_labels, volume_bin_labels
from lesionflow.evaluation.metrics import CONVENTIONS, LesionMatching, ScoreTables
from lesionflow.evaluation.postprocess import apply_locked, locked_at_scale, read_locked
from lesionflow.evaluation.presence_fusion import (
    classifier_logits,
    presence_by_source,
    read_fusion,
    with_fused_presence,
)
from lesionflow.evaluation.summary import resampler_record, summarise, volume_detection
from lesionflow.evaluation.tune import ReferenceMasks, check_probs_in_split, paired_images
from lesionflow.io.geometry import Loaded, pixel_geometry
from lesionflow.pipeline.artifacts import open_arrays, write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError

# The keys evaluate reads; their defaults live only in the config schema.
SETTING_KEYS: dict[str, tuple[str, ...] | None] = {
    "lesion_matching": ("connectivity", "criterion", "min_overlap"),
    "size_bins": None,
    "size_bins_mm3": None,
    "bootstrap": ("n_resamples", "seed", "confidence"),
}


def evaluation_settings(settings: Mapping) -> dict:
    """The evaluate section, checked complete; a missing or unknown key is an error naming it.

    Jobs receive complete settings from the plan; code that builds them by hand fills the schema's
    defaults with :func:`lesionflow.pipeline.config.complete_run_section`.
    """
    if "evaluate" in settings and isinstance(settings["evaluate"], Mapping):
        settings = settings["evaluate"]
    unknown = [f"evaluate.{key}" for key in settings if key not in SETTING_KEYS]
    missing = [f"evaluate.{key}" for key in SETTING_KEYS if key not in settings]
    for name, keys in SETTING_KEYS.items():
        value = settings.get(name)
        if keys is None or value is None:
            continue
        if not isinstance(value, Mapping):
            raise LesionflowError(f"evaluate.{name} must be a mapping, got {value!r}")
        unknown += [f"evaluate.{name}.{key}" for key in value if key not in keys]
        missing += [f"evaluate.{name}.{key}" for key in keys if key not in value]
    if unknown:
        raise LesionflowError(f"evaluate settings: unknown keys {unknown}")
    if missing:
        raise LesionflowError(f"evaluate settings: missing keys {missing}")
    resolved = dict(settings)
    resolved["size_bins"] = list(resolved["size_bins"])
    size_bin_labels(resolved["size_bins"])  # validates the edges, naming evaluate.size_bins
    edges_mm3 = resolved["size_bins_mm3"]
    if edges_mm3 is not None:
        if not isinstance(edges_mm3, list | tuple):
            raise LesionflowError(
                f"evaluate.size_bins_mm3 must be null or a list of edges in mm³, got {edges_mm3!r}"
            )
        resolved["size_bins_mm3"] = list(edges_mm3)
        volume_bin_labels(edges_mm3)  # validates the edges, naming evaluate.size_bins_mm3
    return resolved


def lesion_matching(settings: Mapping, locked: Mapping) -> LesionMatching:
    """Matching rules; connectivity defaults to the one tuning locked for removing small lesions."""
    rules = settings["lesion_matching"]
    connectivity = rules["connectivity"] if rules["connectivity"] is not None else locked["connectivity"]
    return LesionMatching(int(connectivity), rules["criterion"], float(rules["min_overlap"]))


def check_connectivity(matching: LesionMatching, ndim: int) -> None:
    """Refuse, naming the config key, a lesion connectivity that masks of ``ndim`` axes cannot have."""
    if not 1 <= matching.connectivity <= ndim:
        raise LesionflowError(
            f"evaluate.lesion_matching.connectivity is {matching.connectivity}, but the masks have "
            f"{ndim} spatial axes: use 1 to {ndim} (or null for the connectivity tuning locked)"
        )


def score_pairs(
    pairs: Iterable[tuple[str, np.ndarray, Loaded]],
    subjects: Mapping[str, str],
    locked: Mapping,
    matching: LesionMatching,
    size_bins: Sequence[int],
    scales: Mapping[str, float] | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply ``locked`` to each ``(image_id, probability map, reference mask)``; return the tables.

    Pairs are scored as they come and dropped, so a lazy ``pairs`` (:func:`tune.paired_images`)
    holds one image at a time. Distances and mm³ volumes use each mask's geometry. ``scales``
    gives, per id, the resize of maps that are not at the original resolution (tiles), so that
    locked pixel areas are applied at that scale; None for maps at the original resolution.
    """
    tables = ScoreTables(matching, size_bins)
    for image_id, prob, mask in pairs:
        check_connectivity(matching, mask.array.ndim)
        rules = locked if scales is None else locked_at_scale(locked, scales[image_id], np.ndim(prob))
        pred, score, present = apply_locked(prob, rules)
        tables.add(
            image_id,
            subjects[image_id],
            pred,
            mask.array,
            np.asarray(prob, dtype=np.float32),
            mask.geometry,
            presence_score=score,
            presence_pred=present,
        )
    return tables.tables()


def score_subset(
    probs: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    subjects: Mapping[str, str],
    locked: Mapping,
    matching: LesionMatching,
    size_bins: Sequence[int],
    scales: Mapping[str, float] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply ``locked`` to every probability map; return the per-image and per-lesion tables.

    ``matching`` and ``size_bins`` are the evaluate section's (see :func:`lesion_matching`).
    ``masks`` are plain arrays, measured in pixels; the stage streams masks with their geometry
    through :func:`score_pairs` instead. ``scales`` as in :func:`score_pairs`.
    """
    pairs = (
        (i, probs[i], Loaded(np.asarray(masks[i], dtype=bool), pixel_geometry(np.shape(masks[i]))))
        for i in sorted(probs)
    )
    return score_pairs(pairs, subjects, locked, matching, size_bins, scales)


def _score_file(
    level: Level,
    split_df: pd.DataFrame,
    subset: str,
    locked: Mapping,
    matching: LesionMatching,
    size_bins: Sequence[int],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    probs_path = level.probs[subset]
    if not Path(probs_path).is_file():
        raise LesionflowError(f"probability file {probs_path} does not exist")
    subjects = dict(zip(split_df["image_id"], split_df["subject"], strict=True))
    with open_arrays(probs_path) as probs:
        check_probs_in_split(probs, split_df, subset, probs_path)
        masks = ReferenceMasks(level.manifest, sorted(probs))
        return score_pairs(
            paired_images(probs, masks), subjects, locked, matching, size_bins, level.scales
        )


@dataclass(frozen=True)
class Level:
    """What one level of evaluation reads: its manifest, split, probability files and scales."""

    name: str
    manifest: str | os.PathLike
    split: str | os.PathLike
    probs: Mapping[str, str | os.PathLike]
    resolution: str
    scales: Mapping[str, float] | None = None
    # A dual-head run's presence: fusion.json ("fusion") and each subset's <subset>_presence.csv.
    presence: Mapping[str, str | os.PathLike] | None = None

    @property
    def fusion(self) -> dict:
        """The locked fusion record (fusion.json) of a level with presence tables."""
        return read_fusion(self.presence["fusion"])

    def classifier_logits(self, subset: str, image_ids: list[str]) -> np.ndarray | None:
        """The presence classifier's logits of ``image_ids``; None without presence tables or head."""
        return None if self.presence is None else classifier_logits(self.presence[subset], image_ids)


def tile_scales(images_table: str | os.PathLike, split: pd.DataFrame) -> dict[str, float]:
    """The resize of each item of the preprocess split, from its source image's row."""
    table = pd.read_csv(images_table, dtype={"image_id": str})
    scale_of = dict(zip(table["image_id"], table["scale"].astype(float), strict=True))
    sources = zip(split["image_id"], split["source_image_id"], strict=True)
    return {item: scale_of[source] for item, source in sources}


def evaluate_level(level: Level, locked: Mapping, settings: Mapping, out: Path) -> dict:
    """Score val and test of one level; write its tables and summary file; return the summary."""
    names = FILE_NAMES[level.name]
    matching = lesion_matching(settings, locked)
    boot = settings["bootstrap"]
    split_df = read_split(level.split)
    summary: dict = {"level": level.name, "resolution": level.resolution}
    for subset in ("val", "test"):
        table, lesions = _score_file(level, split_df, subset, locked, matching, settings["size_bins"])
        logits = level.classifier_logits(subset, table["image_id"].astype(str).tolist())
        if logits is not None:
            table = with_fused_presence(table, level.probs[subset], logits, locked, level.fusion)
        write_csv(table, out / names["per_item"].format(subset))
        write_csv(lesions, out / names["lesions"].format(subset))
        resampler = Resampler.from_subjects(
            table["subject"].tolist(), boot["n_resamples"], boot["seed"], boot["confidence"],
            "evaluate.bootstrap",
        )
        summary[subset] = summarise(table, lesions, resampler, settings["size_bins"])
        if settings["size_bins_mm3"] is not None:
            summary[subset].update(volume_detection(table, lesions, settings["size_bins_mm3"], resampler))
        if logits is not None:
            summary[subset]["presence_by_source"] = presence_by_source(table, resampler)
        summary[subset]["bootstrap"] = resampler_record(resampler, boot["seed"])
    summary["locked"] = locked
    if level.presence is not None:
        summary["fusion"] = level.fusion
    summary["settings"] = {**settings, "lesion_matching": asdict(matching)}
    summary["conventions"] = dict(CONVENTIONS)
    write_json(out / names["summary"], summary)
    return summary


def run_evaluate(
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
    """Write per-image and per-lesion tables of val and test and ``summary.json``; return the summary.

    ``settings`` is the ``evaluate`` section (``{"evaluate": {...}}`` is accepted too). With
    ``tiles`` (the preprocess stage's ``manifest``, ``split`` and ``images`` tables and the
    ``val`` / ``test`` tile probability files) the items training saw are scored too, at the
    preprocessed resolution, into ``per_tile_*.csv``, ``lesions_tiles_*.csv`` and
    ``summary_tiles.json``. With ``presence`` (the tune stage's ``fusion`` record and the infer
    stage's ``val`` / ``test`` presence tables) a dual-head run's whole images are ranked by the
    fused presence score, beside every source's ROC-AUC and AP (``presence_by_source``).
    """
    settings = evaluation_settings(settings)
    locked = read_locked(locked_path)
    out = Path(out_dir)
    if tiles is not None:
        scales = tile_scales(tiles["images"], read_split(tiles["split"]))
        evaluate_level(
            Level(
                "tile", tiles["manifest"], tiles["split"],
                {"val": tiles["val"], "test": tiles["test"]},
                "preprocessed: each item at the resolution the model saw it "
                f"(scale {min(scales.values()):.3g}-{max(scales.values()):.3g} of the original); "
                "locked pixel areas are scaled alike",
                scales,
            ),
            locked, settings, out,
        )
    image_level = Level(
        "image", manifest, split, {"val": probs_val_path, "test": probs_test_path},
        ORIGINAL_RESOLUTION, presence=presence,
    )
    return evaluate_level(image_level, locked, settings, out)
