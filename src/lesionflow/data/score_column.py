"""A manifest's score column read as numbers, checked against data.score_range, and score bins.

It must never guess a score: an empty, "N/A", non-numeric, infinite or out-of-range cell is a
problem naming its row and column (or, with data.invalid_scores: exclude, a listed exclusion),
never read as 0 and never dropped silently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

# The data settings about scores, as the schema's data section lists them.
SCORE_KEYS = ("score_column", "score_range", "invalid_scores")
INVALID_SCORES = ("error", "exclude")
# The columns the data stage adds: the configured column parsed to a float, and the visit as text.
# ``score`` is reserved so that a stray user column can never pass for the parsed one downstream.
SCORE_COLUMN = "score"
VISIT_COLUMN = "visit"
# Text that spreadsheets and statistics packages write for a missing value (compared lower-case).
_MISSING_TEXT = frozenset({"na", "n/a", "#n/a", "nan", "+nan", "-nan", "none", "null", "missing"})
_INFINITE_TEXT = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
# A plain decimal number: Python's float() would also take "1_000", "inf" and "nan".
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class ScoreSettings:
    """The checked score settings of the data section; ``column`` None means no score."""

    column: str | None
    score_range: tuple[float, float] | None
    invalid_scores: str

    @property
    def excludes(self) -> bool:
        """Whether a row with an invalid score is left out (and listed) rather than an error."""
        return self.invalid_scores == "exclude"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def score_settings(data: Mapping[str, Any]) -> ScoreSettings:
    """``data.score_column``, ``data.score_range`` and ``data.invalid_scores``, all required and checked.

    Raises LesionflowError naming the key of the first missing or bad value.
    """
    values = complete_section({"data": data}, "data", SCORE_KEYS)
    column = values["score_column"]
    if column is not None and (not isinstance(column, str) or not column.strip()):
        raise LesionflowError(f"data.score_column: expected a column name or null, got {column!r}")
    score_range = values["score_range"]
    if score_range is not None:
        if (
            not isinstance(score_range, list | tuple)
            or len(score_range) != 2
            or not all(_is_number(v) for v in score_range)
            or not score_range[0] < score_range[1]
        ):
            raise LesionflowError(
                "data.score_range: expected null or [lowest, highest] with lowest < highest, "
                f"got {score_range!r}"
            )
        score_range = (float(score_range[0]), float(score_range[1]))
    if values["invalid_scores"] not in INVALID_SCORES:
        expected = ", ".join(INVALID_SCORES)
        raise LesionflowError(
            f"data.invalid_scores: expected one of {expected}, got {values['invalid_scores']!r}"
        )
    return ScoreSettings(column, score_range, values["invalid_scores"])


def check_score_columns(manifest: Path, columns: Iterable[str], column: str | None) -> None:
    """Raise LesionflowError if ``column`` is not among ``columns`` or a stray ``score`` column is.

    A problem of the whole file, so one line naming the manifest, the column and the columns found.
    """
    columns = list(columns)
    if column is not None and column not in columns:
        raise LesionflowError(
            f"manifest {manifest}: no column '{column}' (data.score_column); "
            f"found columns {', '.join(columns)}"
        )
    if SCORE_COLUMN in columns and column != SCORE_COLUMN:
        raise LesionflowError(
            f"manifest {manifest}: column '{SCORE_COLUMN}' is reserved for the score the data stage "
            f"reads from data.score_column (here {column!r}); rename the column, or set "
            f"data.score_column: {SCORE_COLUMN}"
        )


def _range_text(score_range: tuple[float, float]) -> str:
    return f"[{score_range[0]:g}, {score_range[1]:g}]"


def parse_score(cell: str, score_range: tuple[float, float] | None) -> float:
    """The score in one manifest cell; raises ValueError saying what is wrong with it.

    Accepts plain decimal numbers (``3``, ``12.5``, ``1e1``) inside ``score_range`` (bounds
    included); callers add the manifest, the row and the column.
    """
    text = cell.strip()
    if text == "":
        raise ValueError("expected a score, found an empty cell")
    if text.lower() in _MISSING_TEXT:
        raise ValueError(f"expected a score, found {cell!r}, which marks a missing value")
    if text.lower() in _INFINITE_TEXT:
        raise ValueError(f"expected a finite number, got {cell!r}")
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"expected a number, got {cell!r}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {cell!r} (too large for a float)")
    if score_range is not None and not score_range[0] <= value <= score_range[1]:
        raise ValueError(f"score {value:g} is outside data.score_range {_range_text(score_range)}")
    return value


def score_values(
    cells: Sequence[str], score_range: tuple[float, float] | None
) -> tuple[np.ndarray, dict[int, str]]:
    """Each cell's score (NaN where invalid), and what is wrong by the position of each invalid cell."""
    values = np.full(len(cells), np.nan)
    problems: dict[int, str] = {}
    for position, cell in enumerate(cells):
        try:
            values[position] = parse_score(cell, score_range)
        except ValueError as err:
            problems[position] = str(err)
    return values, problems


def score_statistics(values: np.ndarray) -> dict[str, float | int | None]:
    """Count, min, median, mean and max of the scores; None for each statistic of no scores."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return {"n": 0, "min": None, "median": None, "mean": None, "max": None}
    return {
        "n": int(values.size),
        "min": float(values.min()),
        "median": float(np.median(values)),
        "mean": float(values.mean()),
        "max": float(values.max()),
    }


def check_score_bins(cuts: Any, key: str) -> list[float]:
    """Cut points between score bins, checked to be finite and strictly increasing; errors name ``key``."""
    if (
        not isinstance(cuts, list | tuple)
        or not cuts
        or not all(_is_number(c) for c in cuts)
        or any(b <= a for a, b in zip(cuts, cuts[1:], strict=False))
    ):
        raise LesionflowError(f"{key}: expected a non-empty list of increasing numbers, got {cuts!r}")
    return [float(c) for c in cuts]


def score_bin_labels(cuts: Sequence[float]) -> list[str]:
    """The labels of the bins that ``cuts`` make, lowest first: ``<2``, ``[2, 5)``, ``[5, 10)``, ``>=10``.

    A bin holds its lower cut and not its upper one (half-open, as the brackets say).
    """
    inner = [f"[{low:g}, {high:g})" for low, high in zip(cuts, cuts[1:], strict=False)]
    return [f"<{cuts[0]:g}", *inner, f">={cuts[-1]:g}"]


def score_bin_index(values: Sequence[float] | np.ndarray, cuts: Sequence[float]) -> np.ndarray:
    """The index of each score's bin in :func:`score_bin_labels`: how many cuts are <= the score,
    so a score on a cut point is in the bin above it."""
    return np.digitize(np.asarray(values, dtype=float), np.asarray(cuts, dtype=float), right=False)


def score_bins(values: np.ndarray, cuts: Sequence[float]) -> list[str]:
    """The label of each score's bin (see :func:`score_bin_labels`); scores must be finite."""
    labels = score_bin_labels(cuts)
    return [labels[i] for i in score_bin_index(values, cuts)]
