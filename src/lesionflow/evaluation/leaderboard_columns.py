"""The vocabulary of leaderboard.csv (columns, run statuses), shared by its writer and its readers.

Must never import plotting or statistics: the compare stage and the compare notebook both import it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# summary key -> rank column name
RANK_COLUMNS = {
    "dice_pos": "rank_dice_pos",
    "iou_pos": "rank_iou_pos",
    "presence_roc_auc": "rank_roc_auc",
    "presence_ap": "rank_ap",
}
# Compared with the baseline (paired intervals) but not ranked: the false-positive rate is lower-better.
PAIRED_METRICS = (*RANK_COLUMNS, "lesion_f1", "false_positive_rate_empty")
# Counts from the summary's test section, copied so a reader sees what a failed run did.
COUNTS = ("n_images", "n_gt_positive", "n_pred_lesions", "n_ref_lesions")
# Leaderboard columns that hold text, read back as text (an empty reason is '', not NaN).
TEXT_COLUMNS = ("run", "status", "status_reason", "tags", "source")

RANKED, EXCLUDED, FAILED = "ranked", "excluded", "failed"
# Ranked runs first (by mean rank); the others after them, by status then name.
STATUS_ORDER = {RANKED: 0, EXCLUDED: 1, FAILED: 2}


def is_baseline(df: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the baseline row(s); all False for a table without an is_baseline column."""
    return df["is_baseline"].to_numpy(dtype=bool) if "is_baseline" in df else np.zeros(len(df), bool)


# The columns of a leaderboard without paired comparisons; a config without segmentation runs
# writes leaderboard.csv with this header and no rows.
LEADERBOARD_COLUMNS = [
    "run",
    "status",
    "status_reason",
    "is_baseline",
    "tags",
    "level",
    "resolution",
    *(metric + suffix for metric in PAIRED_METRICS for suffix in ("", "_ci_low", "_ci_high", "_n")),
    *COUNTS,
    *RANK_COLUMNS.values(),
    "mean_rank",
    *(f"delta_{metric}{kind}_vs_baseline" for metric in RANK_COLUMNS for kind in ("", "_pct")),
    "source",
]
