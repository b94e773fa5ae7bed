"""The compare stage's HTML pages: each leaderboard as one sortable page beside its CSV.

Must never rank, filter or recompute: the pages show the tables the compare stage wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from lesionflow.evaluation.leaderboard_columns import PAIRED_METRICS
from lesionflow.evaluation.score_leaderboard import DELTA_METRICS
from lesionflow.reports.leaderboard_html import RunSettings, write_leaderboard_html


def write_leaderboard_pages(
    segmentation: pd.DataFrame, regression: pd.DataFrame, settings: RunSettings, out_dir: str | os.PathLike
) -> None:
    """Write ``leaderboard.html`` and ``leaderboard_regression.html`` into ``out_dir``: every run
    of each table with its intervals, group, noise floor and the ``settings`` that differ."""
    out = Path(out_dir)
    write_leaderboard_html(
        segmentation, settings, PAIRED_METRICS, "Segmentation leaderboard (test split)",
        out / "leaderboard.html",
    )  # fmt: skip
    write_leaderboard_html(
        regression, settings, DELTA_METRICS, "Regression leaderboard (test split)",
        out / "leaderboard_regression.html",
    )  # fmt: skip
