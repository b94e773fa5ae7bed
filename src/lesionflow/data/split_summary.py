"""The split stage's summary: images, lesion-positive images and score statistics per subset.

Must never change a split: it only counts what the split (or a fold's subsets) holds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lesionflow.data.manifest import SUBSETS
from lesionflow.data.score_column import SCORE_COLUMN, score_bin_labels, score_bins

SCORE_SUMMARY_COLUMNS = ("score_mean", "score_median", "score_min", "score_max")


def split_summary(split_df: pd.DataFrame, cuts: list[float] | None = None) -> pd.DataFrame:
    """Images, lesion-positive images and their rate per subset, rows train, val, test.

    With a ``score`` column and the score bins' ``cuts``, also each subset's ``score_mean``,
    ``score_median``, ``score_min``, ``score_max`` (NaN for an empty subset) and one
    ``n_<bin label>`` column per bin (``n_<2``, ``n_[2, 5)``, ...), every bin even when empty.
    """
    scored = cuts is not None and SCORE_COLUMN in split_df.columns
    labels = score_bin_labels(cuts) if scored else []
    # Without masks every image's presence is unknown (NA): its count and rate are too.
    known = bool(split_df["lesion_positive"].notna().all())
    rows = []
    for name in SUBSETS:
        subset = split_df[split_df["split"] == name]
        n_positive = int(subset["lesion_positive"].astype(bool).sum()) if known else pd.NA
        row = {
            "split": name,
            "n": len(subset),
            "lesion_positive": n_positive,
            "lesion_rate": n_positive / len(subset) if known and len(subset) else float("nan"),
        }
        if scored:
            row.update(_score_columns(subset[SCORE_COLUMN].to_numpy(dtype=float), cuts, labels))
        rows.append(row)
    columns = ["split", "n", "lesion_positive", "lesion_rate"]
    if scored:
        columns += [*SCORE_SUMMARY_COLUMNS, *(f"n_{label}" for label in labels)]
    return pd.DataFrame(rows, columns=columns)


def _score_columns(scores: np.ndarray, cuts: list[float], labels: list[str]) -> dict[str, float | int]:
    """A subset's score statistics and its image count per score bin."""
    empty = scores.size == 0
    counts = pd.Series(score_bins(scores, cuts), dtype=object).value_counts()
    return {
        "score_mean": float("nan") if empty else float(scores.mean()),
        "score_median": float("nan") if empty else float(np.median(scores)),
        "score_min": float("nan") if empty else float(scores.min()),
        "score_max": float("nan") if empty else float(scores.max()),
        **{f"n_{label}": int(counts.get(label, 0)) for label in labels},
    }
