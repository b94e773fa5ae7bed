"""The compare notebook's text and tables: leaderboard.csv read back, rankings, baseline differences.

Must never recompute a metric, a rank or a difference: every number is read from leaderboard.csv.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.evaluation.leaderboard_columns import (
    PAIRED_METRICS,
    RANK_COLUMNS,
    RANKED,
    STATUS_ORDER,
    TEXT_COLUMNS,
    is_baseline,
)
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.labels import (
    COMPARISON_NAMES,
    SHORT_NAMES,
    count_text,
    interval_text,
    p_value_text,
    signed_text,
)

# Ranking tables the notebook shows: the metric (or mean_rank) -> the leaderboard column of its rank.
RANKINGS = {
    "dice_pos": "rank_dice_pos",
    "presence_roc_auc": "rank_roc_auc",
    "presence_ap": "rank_ap",
    "mean_rank": "mean_rank",
}
# Metrics whose paired difference to the baseline the notebook shows, in table and figure order.
DELTA_METRICS = ("dice_pos", "presence_roc_auc", "presence_ap", "lesion_f1")
# Columns the notebook cannot do without.
REQUIRED_COLUMNS = ("run", "status", "status_reason", "is_baseline", "mean_rank")


def read_board_csv(path: Path, text_columns: Sequence[str]) -> pd.DataFrame | None:
    """A leaderboard CSV whose ``text_columns`` stay text ('' when empty: a run named 'NA' is not a
    missing value) and whose empty numeric cells are NaN; None for a file without even a header."""
    try:
        text = dict.fromkeys(text_columns, "string")
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=text)
    except pd.errors.EmptyDataError:
        return None
    for column in text_columns:
        if column in df:
            df[column] = df[column].fillna("").astype(str)
    return df


def read_leaderboard(path: str | os.PathLike, baseline: str | None = None) -> pd.DataFrame:
    """The leaderboard.csv the compare stage wrote, checked against the expected baseline.

    Text cells stay text (a run named 'NA' is not a missing value); empty numeric cells are NaN.
    A config without segmentation runs gives a leaderboard without rows, which has no baseline
    to check.
    """
    path = Path(path)
    if not path.is_file():
        raise LesionflowError(f"leaderboard {path} not found")
    df = read_board_csv(path, TEXT_COLUMNS)
    if df is None:
        # Not even a header: no segmentation run to rank.
        return pd.DataFrame(columns=REQUIRED_COLUMNS).astype({"is_baseline": bool})
    missing = [c for c in REQUIRED_COLUMNS if c not in df]
    if missing:
        raise LesionflowError(
            f"{path}: not a leaderboard of this version, missing column(s) {', '.join(missing)}"
        )
    df["is_baseline"] = df["is_baseline"].astype(str).str.lower().isin(["true", "1", "1.0"])
    written = df.loc[df["is_baseline"], "run"].tolist()
    if baseline is not None and len(df) and written != [baseline]:
        raise LesionflowError(
            f"compare notebook: parameter baseline={baseline!r} but {path} was built with baseline {written}"
        )
    return df


def level_text(df: pd.DataFrame) -> str:
    """One sentence saying which evaluation the leaderboard ranks (compare.level) and at what resolution."""
    if "level" not in df.columns or df.empty:
        return "Ranked on whole images."
    level = ", ".join(sorted(set(df["level"].astype(str))))
    resolution = ", ".join(sorted(set(df["resolution"].fillna("").astype(str)) - {""}))
    what = "whole images" if level == "image" else "tiles" if level == "tile" else level
    text = f"Ranked on {what} (`compare.level: {level}`); resolution: {resolution or 'not stated'}."
    if "ranked_by" in df.columns:  # runs of several lesion classes
        ranked_by = ", ".join(sorted(set(df["ranked_by"].dropna().astype(str))))
        text += f" Every metric is the {ranked_by}; each class is ranked on its own after it."
    return text


def baseline_name(df: pd.DataFrame, board: str = "leaderboard") -> str:
    """The run the leaderboard's deltas are taken against; ``board`` names the leaderboard in the
    error when it does not mark exactly one."""
    names = df.loc[is_baseline(df), "run"].tolist()
    if len(names) != 1:
        raise LesionflowError(f"{board} must mark exactly one baseline run, found {names}")
    return str(names[0])


def column_values(df: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` as floats; all NaN when the leaderboard has no such column."""
    # A leaderboard built without per-image tables has no paired columns: show them as undefined.
    return df[name].to_numpy(dtype=float) if name in df else np.full(len(df), np.nan)


def row_value(row: pd.DataFrame, column: str) -> float:
    """``column`` of a one-row frame as a float; NaN when the leaderboard has no such column."""
    return float(column_values(row, column)[0])


def row_interval(row: pd.DataFrame, metric: str, signed: bool = False) -> str:
    """'value [low, high]' of ``metric`` (with its _ci_low and _ci_high columns) in a one-row frame."""
    values = [row_value(row, metric + suffix) for suffix in ("", "_ci_low", "_ci_high")]
    return interval_text(*values, signed=signed)


def ranking_table(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Ranked runs ordered by ``by`` (a key of RANKINGS): rank, run, value with interval, n.

    For ``mean_rank`` the value lists the four ranks averaged and n is how many there are.
    """
    if by not in RANKINGS:
        raise LesionflowError(f"ranking by {by!r} is not available; choose one of {list(RANKINGS)}")
    ranked = df[df["status"] == RANKED]
    if ranked.empty:
        # Also a leaderboard without segmentation runs, whose header may lack the rank columns.
        return pd.DataFrame(columns=["rank", "run", "value", "n"])
    rank = ranked[RANKINGS[by]] if by != "mean_rank" else ranked["mean_rank"].rank(method="min")
    rows = []
    for (_, row), position in zip(ranked.iterrows(), rank, strict=True):
        if by == "mean_rank":
            parts = ", ".join(
                f"{SHORT_NAMES[metric]} {count_text(row[column])}" for metric, column in RANK_COLUMNS.items()
            )
            value, n = f"{row['mean_rank']:.2f} ({parts})", str(len(RANK_COLUMNS))
        else:
            value = interval_text(row[by], row[f"{by}_ci_low"], row[f"{by}_ci_high"])
            n = count_text(row[f"{by}_n"])
        rows.append({"rank": int(position), "run": row["run"], "value": value, "n": n})
    table = pd.DataFrame(rows, columns=["rank", "run", "value", "n"])
    return table.sort_values(["rank", "run"], kind="stable").reset_index(drop=True)


def rankings(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The four ranking tables (Dice, ROC-AUC, AP, mean rank), keyed by their heading."""
    return {COMPARISON_NAMES[by]: ranking_table(df, by) for by in RANKINGS}


def other_runs(df: pd.DataFrame) -> list[pd.DataFrame]:
    """Every run of the leaderboard but the baseline, as one-row frames in leaderboard order."""
    others = df[~is_baseline(df)]
    return [others.iloc[[index]] for index in range(len(others))]


def delta_cells(row: pd.DataFrame, prefix: str, metrics: Sequence[str]) -> dict[str, str]:
    """run, status and for each of ``metrics`` 'Δ <metric>': the signed interval of the column
    ``prefix`` + metric, of a one-row frame."""
    out = {"run": row["run"].iloc[0], "status": row["status"].iloc[0]}
    for metric in metrics:
        out[f"Δ {metric}"] = row_interval(row, prefix + metric, signed=True)
    return out


def baseline_differences(df: pd.DataFrame) -> pd.DataFrame:
    """Every run but the baseline: paired difference (run - baseline) with interval per metric,
    median per-image Dice difference, Wilcoxon p and n, and the number of shared test images."""
    rows = []
    for row in other_runs(df):
        out = delta_cells(row, "paired_delta_", DELTA_METRICS)
        out["median Δ Dice per image"] = signed_text(row_value(row, "median_dice_difference"))
        out["Wilcoxon p"] = p_value_text(row_value(row, "wilcoxon_dice_p"))
        out["Wilcoxon n"] = count_text(row_value(row, "wilcoxon_dice_n"))
        out["shared images"] = count_text(row_value(row, "n_shared_images"))
        rows.append(out)
    columns = ["run", "status", *(f"Δ {m}" for m in DELTA_METRICS)]
    columns += ["median Δ Dice per image", "Wilcoxon p", "Wilcoxon n", "shared images"]
    return pd.DataFrame(rows, columns=columns)


def not_ranked(df: pd.DataFrame) -> pd.DataFrame:
    """Excluded and failed runs with the reason each is not ranked, and its tags."""
    rows = df[df["status"] != RANKED]
    columns = ["run", "status", "reason", "tags"]
    table = rows.rename(columns={"status_reason": "reason"})
    if "tags" not in table:
        table = table.assign(tags="")
    return table[columns].reset_index(drop=True)


def status_counts(df: pd.DataFrame) -> str:
    """One line: how many runs, how many of each status, and the baseline; or that there are none."""
    if df.empty:
        return "No segmentation runs in this config: `leaderboard.csv` has no rows."
    return f"{len(df)} runs: {status_breakdown(df)}; baseline: {baseline_name(df)!r}."


def status_breakdown(df: pd.DataFrame) -> str:
    """How many runs of the leaderboard have each status, e.g. '2 ranked, 1 excluded, 1 failed'."""
    counts = df["status"].value_counts()
    return ", ".join(f"{int(counts.get(status, 0))} {status}" for status in STATUS_ORDER)


def class_boards(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """For a leaderboard of runs of several lesion classes (its ``ranked_by`` column), per class:
    the board with that class's metrics, ranks and paired differences standing where the macro
    means stand, so every table and figure of a board can be drawn for the class alone. Its mean
    rank is the mean of the class's own ranks. Empty for a binary leaderboard."""
    if "ranked_by" not in df.columns:
        return {}
    prefix = f"{RANK_COLUMNS['dice_pos']}_"
    names = [column[len(prefix) :] for column in df.columns if column.startswith(prefix)]
    boards = {}
    for name in names:
        own = {
            f"{stem}_{name}{suffix}": f"{stem}{suffix}"
            for stem in (
                *PAIRED_METRICS,
                *RANK_COLUMNS.values(),
                *(f"paired_delta_{m}" for m in PAIRED_METRICS),
                "wilcoxon_dice_p", "wilcoxon_dice_n", "median_dice_difference",
            )
            for suffix in ("", "_ci_low", "_ci_high", "_n")
            if f"{stem}_{name}{suffix}" in df.columns
        }
        board = df.drop(columns=[c for c in own.values() if c in df.columns]).rename(columns=own)
        board["mean_rank"] = board[list(RANK_COLUMNS.values())].mean(axis=1)
        boards[name] = board
    return boards
