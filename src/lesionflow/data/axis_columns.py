"""Per-axis columns of the image tables: one JSON list per cell, one entry per spatial axis.

Only the encoding lives here, so 2D and 3D tables have the same columns; it must never decide
what a column means (the stages that write them do).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from lesionflow.pipeline.errors import LesionflowError

# Every per-axis column of the data and preprocess stages' images.csv (a table has a subset).
AXIS_COLUMNS = ("shape", "spacing", "original_shape", "original_spacing", "crop_start", "crop_stop")


def axis_cell(values: Iterable[float]) -> str:
    """One per-axis value per spatial axis as a table cell: ``[2848, 4288]``, ``[1.0, 1.0]``."""
    # Integers stay integers ("[2848, 4288]", not "[2848.0, 4288.0]"); numpy scalars become plain.
    return json.dumps([value.item() if isinstance(value, np.generic) else value for value in values])


def axis_values(cell: Any, column: str = "per-axis column") -> tuple[Any, ...]:
    """The per-axis values of one cell: a JSON list as written by :func:`axis_cell`, or a sequence.

    Raises LesionflowError naming ``column`` for anything else.
    """
    values = cell
    if isinstance(cell, str):
        try:
            values = json.loads(cell)
        except json.JSONDecodeError:
            values = None
    if not isinstance(values, list | tuple) or not all(
        isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        for value in values
    ):
        raise LesionflowError(
            f"{column}: expected a list with one number per axis, such as [2848, 4288], got {cell!r}"
        )
    return tuple(values)


def read_axis_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with each per-axis column it has parsed from JSON text into tuples."""
    parsed = table.copy()
    for column in AXIS_COLUMNS:
        if column in parsed.columns:
            parsed[column] = [axis_values(cell, column) for cell in parsed[column]]
    return parsed
