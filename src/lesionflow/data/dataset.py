"""The data stage: check the manifest, write it with the image and lesion tables and a summary.

It must never guess what a user's file means (anything ambiguous is a LesionflowError naming the
file, the row and the column), and never copies a user's image.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from lesionflow.data import synthetic, synthetic_brain, synthetic_loes
from lesionflow.data.axis_columns import axis_cell
from lesionflow.data.class_masks import split_classes, with_class_tables, write_classes
from lesionflow.data.lesion_classes import lesion_classes
from lesionflow.data.manifest import (
    MASK_CHANNEL_COLUMN,
    MASK_THRESHOLD_COLUMN,
    default_image_id,
    load_manifest_mask,
    manifest_has_masks,
    mask_setting,
    read_manifest,
    read_manifest_table,
)
from lesionflow.data.manifest_check import ManifestProblems, Problem, validate_manifest
from lesionflow.data.score_column import (
    SCORE_COLUMN,
    VISIT_COLUMN,
    ScoreSettings,
    check_score_columns,
    score_settings,
    score_statistics,
    score_values,
)
from lesionflow.io.readers import image_reading, read_geometry
from lesionflow.pipeline import artifacts
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

# The data.synthetic keys the data stage passes to the generator; their defaults live only in the
# config schema.
SYNTHETIC_KEYS = ("kind", "n_images", "image_size", "lesion_free_fraction", "seed")
# Given only when true: the plan leaves it out when false, so a binary dataset keeps its key.
OPTIONAL_SYNTHETIC_KEYS = ("haemorrhages",)
# The built-in datasets by data.synthetic.kind: 2D photographs and 3D volumes.
GENERATORS = {
    "fundus": synthetic.generate_dataset,
    "brain": synthetic_brain.generate_brain_dataset,
    "loes": synthetic_loes.generate_loes_dataset,
}


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


# ``shape`` and ``spacing`` hold one value per spatial axis as a JSON list (see axis_columns);
# spacing is millimetres for NIfTI volumes and 1.0 for pictures, whose files have no physical size.
# Both come from the image's header, as does a volume's affine; ``read_as`` says how the image's
# values were read (see io.readers.image_reading): a 16-bit, RGBA or palette picture is read unlike
# an 8-bit RGB one, and the data report says so.
IMAGE_TABLE_COLUMNS = [
    "image_id", "subject", "shape", "spacing", "affine", "read_as", "lesion_pixels", "lesion_fraction",
    "n_lesions",
]


def affine_cell(affine: np.ndarray | None) -> str:
    """A volume's 4 x 4 voxel-to-world matrix (RAS, as read) as a JSON list of rows; empty for pictures."""
    return "" if affine is None else json.dumps(np.round(affine, 6).tolist())
LESION_TABLE_COLUMNS = ["image_id", "subject", "lesion_pixels"]
# The summary's lesion statistics, null for a dataset without masks (with NO_MASKS_REASON).
LESION_SUMMARY_KEYS = (
    "n_lesion_positive", "n_lesion_free", "lesion_free_fraction", "lesion_pixels_per_positive_image",
    "lesion_fraction_per_positive_image", "lesions_per_positive_image", "lesion_area_pixels",
    "n_lesions", "n_lesions_up_to_10_pixels",
)
NO_MASKS_REASON = (
    "the manifest has no masks (no mask column): lesions are unknown, not absent, so every "
    "lesion statistic is null"
)


def _image_without_mask(row: Mapping[str, Any]) -> dict[str, Any]:
    """The image table row of an image without a mask: its header's geometry, lesions unknown (NaN)."""
    geometry = read_geometry(row["image"])
    return {
        "image_id": str(row["image_id"]),
        "subject": str(row["subject"]),
        "shape": axis_cell(geometry.shape),
        "spacing": axis_cell(geometry.spacing),
        "affine": affine_cell(geometry.affine),
        "read_as": image_reading(row["image"]),
        **dict.fromkeys(("lesion_pixels", "lesion_fraction", "n_lesions"), np.nan),
    }


def image_lesion_tables(manifest_df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per image (size, lesion pixels and fraction, lesion count) and one per lesion.

    Lesions are connected components of face neighbours (4 in 2D, 6 in 3D: scipy.ndimage.label's
    default). Masks are read one at a time, so a dataset of large images never sits in memory at
    once; spacing, affine and how the image's values are read (``read_as``) come from the image's
    header. A manifest without masks (see
    ``manifest.manifest_has_masks``) gives NaN lesion columns, never 0, and no lesion rows.
    """
    images, lesions = [], []
    if not manifest_has_masks(manifest_df):
        images = [_image_without_mask(row) for row in manifest_df.to_dict("records")]
        return (
            pd.DataFrame(images, columns=IMAGE_TABLE_COLUMNS),
            pd.DataFrame(lesions, columns=LESION_TABLE_COLUMNS),
        )
    for row in manifest_df.to_dict("records"):
        mask = load_manifest_mask(row)
        geometry = read_geometry(row["image"])
        labels, count = ndimage.label(mask)
        sizes = np.bincount(labels.ravel())[1:]
        image_id, subject = str(row["image_id"]), str(row["subject"])
        images.append(
            {
                "image_id": image_id,
                "subject": subject,
                "shape": axis_cell(mask.shape),
                "spacing": axis_cell(geometry.spacing),
                "affine": affine_cell(geometry.affine),
                "read_as": image_reading(row["image"]),
                "lesion_pixels": int(mask.sum()),
                "lesion_fraction": float(mask.mean()),
                "n_lesions": int(count),
            }
        )
        lesions += [{"image_id": image_id, "subject": subject, "lesion_pixels": int(n)} for n in sizes]
    return (
        pd.DataFrame(images, columns=IMAGE_TABLE_COLUMNS),
        pd.DataFrame(lesions, columns=LESION_TABLE_COLUMNS),
    )


def summarise_dataset(images: pd.DataFrame, lesions: pd.DataFrame) -> dict[str, Any]:
    """Counts of images, subjects and lesion-free images, and lesion size statistics.

    Lesion pixels and the fraction of the image they cover are given per lesion-positive image;
    ``images`` and ``lesions`` are the tables of :func:`image_lesion_tables`. ``masks`` says
    whether the images have masks; without them (NaN lesion pixels) every lesion statistic is
    None and ``lesion_statistics_missing`` says why.
    """
    positive = images[images["lesion_pixels"] > 0]
    n_images = len(images)
    per_subject = images.groupby("subject").size()
    areas_array = lesions["lesion_pixels"].to_numpy(dtype=float)
    counts = {
        "n_images": n_images,
        "n_subjects": int(images["subject"].nunique()),
        "images_per_subject": {"min": int(per_subject.min()), "max": int(per_subject.max())},
    }
    if images["lesion_pixels"].isna().all():
        return {
            **counts, "masks": False, **dict.fromkeys(LESION_SUMMARY_KEYS),
            "lesion_statistics_missing": NO_MASKS_REASON,
        }
    return {
        **counts,
        "masks": True,
        "n_lesion_positive": len(positive),
        "n_lesion_free": n_images - len(positive),
        "lesion_free_fraction": (n_images - len(positive)) / n_images,
        "lesion_pixels_per_positive_image": _stats(positive["lesion_pixels"].to_numpy(dtype=float)),
        "lesion_fraction_per_positive_image": _stats(positive["lesion_fraction"].to_numpy(dtype=float)),
        "lesions_per_positive_image": _stats(positive["n_lesions"].to_numpy(dtype=float)),
        "lesion_area_pixels": _stats(areas_array),
        "n_lesions": int(areas_array.size),
        "n_lesions_up_to_10_pixels": int((areas_array <= 10).sum()),
    }


def _apply_mask_settings(manifest_df: pd.DataFrame, settings: Mapping[str, Any]) -> pd.DataFrame:
    """Fill empty ``mask_channel`` / ``mask_threshold`` cells from the data settings.

    Values in the user's manifest win, so one odd file can differ from the rest.
    """
    result = manifest_df.copy()
    for key in (MASK_CHANNEL_COLUMN, MASK_THRESHOLD_COLUMN):
        value = mask_setting(settings, key)
        if value is None:
            continue
        if key not in result.columns:
            result[key] = pd.array([pd.NA] * len(result), dtype="Int64")
        result[key] = result[key].fillna(value)
    return result


def _image_ids(frame: pd.DataFrame) -> list[str]:
    if "image_id" in frame.columns:
        return frame["image_id"].astype(str).tolist()
    return [default_image_id(cell) for cell in frame["image"]]


def scored_manifest(
    frame: pd.DataFrame, manifest: Path, score: ScoreSettings
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The manifest rows with ``score`` (float) and ``visit`` (text) columns, and the scores' summary.

    ``frame`` holds the manifest's rows as text cells, in file order (a table as read, or
    ``read_manifest``'s); ``visit`` is the manifest's own column, else empty. A row whose score
    cell is not valid (see ``scores.parse_score``) raises :class:`ManifestProblems` with every such
    row, or with ``invalid_scores: exclude`` is left out and listed in the summary's ``excluded``
    (row, header = row 1; image id; reason). Leaving out every row is an error.
    """
    check_score_columns(manifest, frame.columns, score.column)
    values, problems = score_values(frame[score.column].tolist(), score.score_range)
    ids = _image_ids(frame)
    if problems and not score.excludes:
        lines = [Problem(position + 2, score.column, None, what) for position, what in problems.items()]
        raise ManifestProblems(manifest, lines)
    excluded = [
        {"row": position + 2, "image_id": ids[position], "reason": what}
        for position, what in problems.items()
    ]
    if len(excluded) == len(frame):
        raise LesionflowError(
            f"data.invalid_scores: every row of manifest {manifest} has an invalid score in column "
            f"'{score.column}' (row 2: {excluded[0]['reason']}); no row is left"
        )
    visits = frame[VISIT_COLUMN] if VISIT_COLUMN in frame.columns else pd.Series("", index=frame.index)
    scored = frame.drop(columns=[c for c in (SCORE_COLUMN, VISIT_COLUMN) if c in frame.columns]).assign(
        **{SCORE_COLUMN: values, VISIT_COLUMN: visits.to_numpy()}
    )
    kept = np.isfinite(values)
    summary = {
        "column": score.column,
        **score_statistics(values[kept]),
        "n_excluded": len(excluded),
        "excluded": excluded,
    }
    return scored[kept].reset_index(drop=True), summary


def _report_exclusions(manifest: Path, summary: Mapping[str, Any]) -> None:
    """Say on stderr which rows were left out for their score, one line each."""
    if not summary["excluded"]:
        return
    print(
        f"data: data.invalid_scores is exclude: left out {summary['n_excluded']} row(s) of manifest "
        f"{manifest} for their score in column '{summary['column']}':",
        file=sys.stderr,
    )
    for item in summary["excluded"]:
        print(f"  row {item['row']} (image id {item['image_id']!r}): {item['reason']}", file=sys.stderr)


def _synthetic_manifest(settings: Mapping[str, Any], out: Path) -> Path:
    """Generate the built-in dataset of ``data.synthetic`` into ``out``; its manifest's path."""
    given = settings.get("synthetic")
    known = (*SYNTHETIC_KEYS, *OPTIONAL_SYNTHETIC_KEYS)
    unknown = [key for key in given if key not in known] if isinstance(given, Mapping) else []
    if unknown:
        raise LesionflowError(
            f"data.synthetic.{unknown[0]}: unknown setting; expected {', '.join(SYNTHETIC_KEYS)}"
        )
    parameters = complete_section({"data.synthetic": given}, "data.synthetic", SYNTHETIC_KEYS)
    kind = parameters.pop("kind")
    if kind not in GENERATORS:
        raise LesionflowError(
            f"data.synthetic.kind: expected one of {', '.join(GENERATORS)}, got {kind!r}"
        )
    if not parameters.get("haemorrhages", True):
        parameters.pop("haemorrhages")
    if "haemorrhages" in parameters and kind != "fundus":
        raise LesionflowError(f"data.synthetic.haemorrhages: applies to kind fundus, not {kind!r}")
    return Path(GENERATORS[kind](out, **parameters))


def run_data(settings: Mapping[str, Any], out_dir: str | os.PathLike) -> None:
    """The data stage: write ``manifest.csv``, ``images.csv``, ``lesions.csv`` and ``data_summary.json``.

    ``source: synthetic`` generates the built-in dataset there (fundus PNGs or brain NIfTI
    volumes by ``synthetic.kind``, relative paths);
    ``source: manifest`` checks every row of the user's manifest first (files, sizes, mask values,
    scores; see ``manifest_check``) and stops with all its problems before writing anything, so
    no later job starts on a bad dataset; it then writes the manifest with absolute paths, without
    copying any image. Optional ``mask_channel`` / ``mask_threshold`` settings fill the
    manifest columns of the same name where they are empty.
    ``score_column``, ``score_range`` and ``invalid_scores`` are required (null column: no
    score). With a score column, ``manifest.csv`` gains ``score`` and ``visit`` (see
    :func:`scored_manifest`; rows left out by ``invalid_scores: exclude`` are printed to stderr),
    ``images.csv`` gains ``score`` and the summary a ``scores`` block; without one the outputs
    are as they were. With a score column the user's manifest may have no masks: ``manifest.csv``
    then has empty ``mask`` cells, ``images.csv`` NaN lesion columns, ``lesions.csv`` no rows,
    and the summary ``"masks": false`` with null lesion statistics (``masks`` is true otherwise).
    """
    out = Path(out_dir)
    score = score_settings(settings)
    classes = lesion_classes(settings.get("labels"))
    if classes is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_classes(out, classes)  # first: the stage's manifest names class stacks it describes
    source = settings.get("source")
    scores = by_class = None
    if source == "synthetic":
        path = _synthetic_manifest(settings, out)
        if score.column is not None:
            # Rewritten from its text cells, so the generator's relative paths stay relative.
            table, scores = scored_manifest(read_manifest_table(path), path, score)
            artifacts.write_csv(table, path)
        if classes is not None:
            split, *by_class = split_classes(read_manifest(path), classes, out, relative=True)
            table = read_manifest_table(path).assign(mask=split["mask"], class_masks=split["class_masks"])
            artifacts.write_csv(table, path)
        manifest_df = read_manifest(path)
        manifest = path
    elif source == "manifest":
        manifest = settings.get("manifest")
        if not manifest:
            raise LesionflowError(
                "data.manifest: expected the path of a manifest CSV when data.source is 'manifest'"
            )
        validate_manifest(manifest, settings)
        columns = () if classes is None else classes.columns  # one mask column per class, if any
        manifest_df = _apply_mask_settings(read_manifest(manifest, score.column, columns), settings)
        if score.column is not None:
            manifest_df, scores = scored_manifest(manifest_df, Path(manifest), score)
        if classes is not None:
            manifest_df, *by_class = split_classes(manifest_df, classes, out, relative=False)
        artifacts.write_csv(manifest_df, out / "manifest.csv")
    else:
        raise LesionflowError(f"data.source: expected 'synthetic' or 'manifest', got {source!r}")
    if scores is not None:
        _report_exclusions(Path(manifest), scores)
    images, lesions = image_lesion_tables(manifest_df)
    summary = {"source": source, **summarise_dataset(images, lesions)}
    if not summary["masks"]:
        print(f"data: manifest {manifest}: {NO_MASKS_REASON}", file=sys.stderr)
    if scores is not None:
        images[SCORE_COLUMN] = manifest_df[SCORE_COLUMN].astype(float).to_numpy()
        summary["scores"] = scores
    if by_class is not None:
        images, lesions, summary["classes"] = with_class_tables(images, *by_class, classes)
    artifacts.write_csv(images, out / "images.csv")
    artifacts.write_csv(lesions, out / "lesions.csv")
    artifacts.write_json(out / "data_summary.json", summary)
