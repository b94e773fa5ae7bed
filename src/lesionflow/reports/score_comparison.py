"""The compare notebook's regression tables: leaderboard_regression.csv read back, ranking, deltas.

Must never recompute a metric, a rank or a difference: every number is read from leaderboard_regression.csv.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.evaluation.leaderboard_columns import RANKED, is_baseline
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.comparison import (
    baseline_name,
    column_values,
    delta_cells,
    other_runs,
    read_board_csv,
    row_interval,
    row_value,
    status_breakdown,
)
from lesionflow.reports.labels import count_text, p_value_text

# Display names of the regression metrics (axis labels, table headings).
SCORE_NAMES = {
    "srmse": "sRMSE (RMSE / SD of true scores)",
    "pearson_r": "Pearson r (predicted vs true)",
    "spearman_rho": "Spearman ρ",
    "mae": "MAE (score points)",
    "rmse": "RMSE (score points)",
    "r2": "R²",
}
# metric -> (its rank column, short name), in the order mean_rank averages them.
SCORE_RANKS = {
    "srmse": ("rank_srmse", "sRMSE"),
    "pearson_r": ("rank_pearson_r", "r"),
    "mae": ("rank_mae", "MAE"),
}
# Metrics whose paired difference to the baseline is shown, and whether lower is better.
SCORE_DELTAS = {"srmse": True, "pearson_r": False, "mae": True}
# Columns the notebook cannot do without; the reason and baseline columns have two spellings.
REQUIRED = ("run", "status", "srmse", "pearson_r", "mae", "mean_rank")
TEXT = ("run", "status", "status_reason", "reason", "tags", "baseline", "paired_baseline", "paired_note")
_TRUE = {"true", "1", "1.0"}
_BOOLEAN = _TRUE | {"false", "0", "0.0"}


def _baseline_mask(df: pd.DataFrame, path: Path) -> np.ndarray:
    """The baseline row(s): from is_baseline (a flag), or from baseline (the baseline's run name, or
    a flag), or from paired_baseline (the run the deltas are taken against)."""
    if "is_baseline" in df:
        return df["is_baseline"].astype(str).str.lower().isin(_TRUE).to_numpy()
    for column in ("baseline", "paired_baseline"):
        if column in df:
            values = df[column].fillna("").astype(str)
            named = (values == df["run"]).to_numpy()
            if named.any() or not values.str.lower().isin(_BOOLEAN).all():
                return named
            return values.str.lower().isin(_TRUE).to_numpy()
    raise LesionflowError(f"{path}: no is_baseline, baseline or paired_baseline column")


def read_regression_leaderboard(path: str | os.PathLike) -> pd.DataFrame:
    """leaderboard_regression.csv as the compare stage wrote it, with ``status_reason`` and a boolean
    ``is_baseline`` whichever spelling it used; no rows (or an empty file) when no run is a regression run.

    Text cells stay text (a run named 'NA' is not a missing value); empty numeric cells are NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise LesionflowError(f"regression leaderboard {path} not found")
    df = read_board_csv(path, TEXT)
    if df is None:
        # An empty file: a config without regression runs, written without even a header.
        return pd.DataFrame(columns=[*REQUIRED, "status_reason", "is_baseline"])
    if "status_reason" not in df and "reason" in df:
        df = df.rename(columns={"reason": "status_reason"})
    missing = [c for c in (*REQUIRED, "status_reason") if c not in df]
    if missing:
        raise LesionflowError(
            f"{path}: not a regression leaderboard of this version, missing column(s) {', '.join(missing)}"
        )
    df["is_baseline"] = _baseline_mask(df, path) if len(df) else np.zeros(0, bool)
    return df


def check_baseline(board: pd.DataFrame, regression_board: pd.DataFrame, baseline: str) -> None:
    """Raise unless ``baseline`` (the compare notebook's parameter, the config's compare.baseline) is a
    run of one of the two leaderboards and is that leaderboard's baseline.

    The other leaderboard compares its runs with its own baseline (the first run of its task).
    """
    tables = {"leaderboard.csv": board, "leaderboard_regression.csv": regression_board}
    for name, table in tables.items():
        if baseline in set(table["run"]):
            written = table.loc[is_baseline(table), "run"].tolist()
            if written != [baseline]:
                raise LesionflowError(
                    f"compare notebook: parameter baseline={baseline!r} but {name} was built with "
                    f"baseline {written}"
                )
            return
    if len(board) or len(regression_board):
        raise LesionflowError(
            f"compare notebook: parameter baseline={baseline!r} is not a run of leaderboard.csv "
            "nor of leaderboard_regression.csv"
        )


def regression_baseline(df: pd.DataFrame) -> str:
    """The regression run the deltas are taken against."""
    return baseline_name(df, "regression leaderboard")


def regression_status_counts(df: pd.DataFrame) -> str:
    """One line: how many regression runs, of each status, and their baseline; or that there are none."""
    if df.empty:
        return "No regression runs in this config: `leaderboard_regression.csv` has no rows."
    return f"{len(df)} regression runs: {status_breakdown(df)}; baseline: {regression_baseline(df)!r}."


def regression_ranking(df: pd.DataFrame) -> pd.DataFrame:
    """Ranked regression runs by mean rank (1 = best, ties share the better rank): sRMSE, Pearson r and
    MAE with their intervals, the three ranks the mean averages, the mean rank and n."""
    ranked = df[df["status"] == RANKED]
    position = column_values(ranked, "mean_rank")
    position = pd.Series(position).rank(method="min").to_numpy()
    ranks_heading = f"ranks ({', '.join(name for _, name in SCORE_RANKS.values())})"
    rows = []
    for index in range(len(ranked)):
        row = ranked.iloc[[index]]
        ranks = [count_text(row_value(row, column)) for column, _ in SCORE_RANKS.values()]
        rows.append(
            {
                "rank": int(position[index]),
                "run": row["run"].iloc[0],
                **{SCORE_NAMES[metric]: row_interval(row, metric) for metric in SCORE_RANKS},
                ranks_heading: ", ".join(ranks),
                "mean rank": f"{row_value(row, 'mean_rank'):.2f}",
                "n": count_text(row_value(row, "n")),
            }
        )
    columns = ["rank", "run", *(SCORE_NAMES[m] for m in SCORE_RANKS), ranks_heading, "mean rank", "n"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["rank", "run"], kind="stable").reset_index(drop=True)


def regression_other_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Every regression run in leaderboard order: the p-values of Pearson r, Spearman ρ with its p,
    RMSE and R², each with its interval, and n."""
    rows = []
    for index in range(len(df)):
        row = df.iloc[[index]]
        rows.append(
            {
                "run": row["run"].iloc[0],
                "status": row["status"].iloc[0],
                "Pearson p": p_value_text(row_value(row, "pearson_p")),
                SCORE_NAMES["spearman_rho"]: row_interval(row, "spearman_rho"),
                "Spearman p": p_value_text(row_value(row, "spearman_p")),
                SCORE_NAMES["rmse"]: row_interval(row, "rmse"),
                SCORE_NAMES["r2"]: row_interval(row, "r2"),
                "n": count_text(row_value(row, "n")),
            }
        )
    columns = ["run", "status", "Pearson p", SCORE_NAMES["spearman_rho"], "Spearman p"]
    columns += [SCORE_NAMES["rmse"], SCORE_NAMES["r2"], "n"]
    return pd.DataFrame(rows, columns=columns)


def regression_differences(df: pd.DataFrame) -> pd.DataFrame:
    """Every regression run but the baseline: paired difference (run - baseline) with interval for
    sRMSE, Pearson r and MAE, the number of paired test cases, and the leaderboard's note."""
    rows = []
    for row in other_runs(df):
        out = delta_cells(row, "delta_", list(SCORE_DELTAS))
        out["paired cases"] = count_text(row_value(row, "n_paired"))
        out["note"] = row["paired_note"].iloc[0] if "paired_note" in row else ""
        rows.append(out)
    columns = ["run", "status", *(f"Δ {m}" for m in SCORE_DELTAS), "paired cases", "note"]
    return pd.DataFrame(rows, columns=columns)


def regression_not_ranked(df: pd.DataFrame) -> pd.DataFrame:
    """Excluded and failed regression runs with the reason each is not ranked."""
    table = df[df["status"] != RANKED].rename(columns={"status_reason": "reason"})
    return table[["run", "status", "reason"]].reset_index(drop=True)
