"""What a report notebook is given, checked: its papermill parameters and the CSV tables it reads.

Must never supply a default for a parameter: the pipeline injects every one, from the config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from lesionflow.pipeline.errors import LesionflowError

# Columns each table read by the notebooks must have; read_table checks them at the boundary.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "per_image": ("image_id", "dice", "gt_pixels", "pred_pixels"),
    "metrics_by_epoch": ("epoch", "train_loss", "val_loss", "val_dice"),
    "lr_by_step": ("step", "lr"),
    "zero_dice_images": ("image_id", "case"),
    "zero_dice_summary": ("case", "count"),
    "split_summary": ("split", "n", "lesion_positive"),
    "split": ("image_id", "subject", "split"),
}
# Columns that hold identifiers: read as text so ids such as 0042 keep their leading zeros.
_TEXT_COLUMNS = {"image_id": str, "subject": str, "split": str, "case": str}
# Parameters only one source of predictions (a run's ``source``) has: a run lesionflow trained has
# its train stage's tables; a run imported from another tool has no train stage, but its import
# record (the infer stage's test_infer.json) instead.
SOURCE_ONLY: dict[str, tuple[str, ...]] = {
    "model": ("metrics_by_epoch", "train_summary"),
    "external": ("predictions_record",),
    "ensemble": ("predictions_record",),
}


def read_table(path: str | os.PathLike, kind: str) -> pd.DataFrame:
    """Read one CSV artifact of ``kind`` (a key of TABLE_COLUMNS) and check its columns."""
    frame = pd.read_csv(path, dtype=_TEXT_COLUMNS)
    missing = [c for c in TABLE_COLUMNS[kind] if c not in frame.columns]
    if missing:
        raise LesionflowError(
            f"{path}: expected a {kind} table with column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}"
        )
    return frame


def require_parameters(notebook: str, parameters: Mapping[str, Any]) -> None:
    """Raise naming every parameter of ``notebook`` left at None (its placeholder: the notebooks
    state no defaults, papermill injects every parameter from the resolved config)."""
    unset = [name for name, value in parameters.items() if value is None]
    if unset:
        raise LesionflowError(f"{notebook} notebook: parameter(s) not set: {', '.join(unset)}")


def parameters_for_source(notebook: str, source: str | None, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """``parameters`` with ``source`` first, less those only the other source has (SOURCE_ONLY), for
    :func:`require_parameters`; an unset ``source`` leaves out every source-only one (which of them
    are needed is unknown until it is set). Raises on a ``source`` that is neither."""
    if source is not None and source not in SOURCE_ONLY:
        raise LesionflowError(
            f"{notebook} notebook: parameter source is {source!r}; expected one of {', '.join(SOURCE_ONLY)}"
        )
    needed = SOURCE_ONLY.get(source, ())
    others = {name for names in SOURCE_ONLY.values() for name in names if name not in needed}
    return {"source": source, **{name: value for name, value in parameters.items() if name not in others}}
