"""The compare notebook's regression tables: leaderboard_regression.csv read back, ranking, deltas.

Must never recompute a metric, a rank or a difference: every number is read from leaderboard_regression.csv.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from lesionflow.evaluation.leaderboard_columns import RANKED, STATUS_ORDER, is_baseline
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.comparison import column_values
from lesionflow.reports.labels import count_text, interval_text, p_value_text

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
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=dict.fromkeys(TEXT, "string"))
    except pd.errors.EmptyDataError:
        # An empty file: a config without regression runs, written without even a header.
        return pd.DataFrame(columns=[*REQUIRED, "status_reason", "is_baseline"])
    if "status_reason" not in df and "reason" in df:
        df = df.rename(columns={"reason": "status_reason"})
    missing = [c for c in (*REQUIRED, "status_reason") if c not in df]
    if missing:
        raise LesionflowError(
            f"{path}: not a regression leaderboard of this version, missing column(s) {', '.join(missing)}"
        )
    for column in TEXT:
        if column in df:
            df[column] = df[column].fillna("").astype(str)
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
    names = df.loc[is_baseline(df), "run"].tolist()
    if len(names) != 1:
        raise LesionflowError(f"regression leaderboard must mark exactly one baseline run, found {names}")
    return str(names[0])


def regression_status_counts(df: pd.DataFrame) -> str:
    """One line: how many regression runs, of each status, and their baseline; or that there are none."""
    if df.empty:
        return "No regression runs in this config: `leaderboard_regression.csv` has no rows."
    counts = df["status"].value_counts()
    parts = [f"{int(counts.get(status, 0))} {status}" for status in STATUS_ORDER]
    return f"{len(df)} regression runs: {', '.join(parts)}; baseline: {regression_baseline(df)!r}."


def _interval(row: pd.DataFrame, metric: str, signed: bool = False) -> str:
    """'value [low, high]' of ``metric`` in a one-row frame."""
    values = [column_values(row, metric + suffix)[0] for suffix in ("", "_ci_low", "_ci_high")]
    return interval_text(*values, signed=signed)


def _cell(row: pd.DataFrame, column: str) -> float:
    return float(column_values(row, column)[0])


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
        ranks = [count_text(_cell(row, column)) for column, _ in SCORE_RANKS.values()]
        rows.append(
            {
                "rank": int(position[index]),
                "run": row["run"].iloc[0],
                **{SCORE_NAMES[metric]: _interval(row, metric) for metric in SCORE_RANKS},
                ranks_heading: ", ".join(ranks),
                "mean rank": f"{_cell(row, 'mean_rank'):.2f}",
                "n": count_text(_cell(row, "n")),
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
                "Pearson p": p_value_text(_cell(row, "pearson_p")),
                SCORE_NAMES["spearman_rho"]: _interval(row, "spearman_rho"),
                "Spearman p": p_value_text(_cell(row, "spearman_p")),
                SCORE_NAMES["rmse"]: _interval(row, "rmse"),
                SCORE_NAMES["r2"]: _interval(row, "r2"),
                "n": count_text(_cell(row, "n")),
            }
        )
    columns = ["run", "status", "Pearson p", SCORE_NAMES["spearman_rho"], "Spearman p"]
    columns += [SCORE_NAMES["rmse"], SCORE_NAMES["r2"], "n"]
    return pd.DataFrame(rows, columns=columns)


def regression_differences(df: pd.DataFrame) -> pd.DataFrame:
    """Every regression run but the baseline: paired difference (run - baseline) with interval for
    sRMSE, Pearson r and MAE, the number of paired test cases, and the leaderboard's note."""
    others = df[~is_baseline(df)]
    rows = []
    for index in range(len(others)):
        row = others.iloc[[index]]
        out = {"run": row["run"].iloc[0], "status": row["status"].iloc[0]}
        for metric in SCORE_DELTAS:
            out[f"Δ {metric}"] = _interval(row, f"delta_{metric}", signed=True)
        out["paired cases"] = count_text(_cell(row, "n_paired"))
        out["note"] = row["paired_note"].iloc[0] if "paired_note" in row else ""
        rows.append(out)
    columns = ["run", "status", *(f"Δ {m}" for m in SCORE_DELTAS), "paired cases", "note"]
    return pd.DataFrame(rows, columns=columns)


def regression_not_ranked(df: pd.DataFrame) -> pd.DataFrame:
    """Excluded and failed regression runs with the reason each is not ranked."""
    table = df[df["status"] != RANKED].rename(columns={"status_reason": "reason"})
    return table[["run", "status", "reason"]].reset_index(drop=True)
