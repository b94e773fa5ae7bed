"""Leaderboard across runs: test metrics with intervals, ranks, paired comparisons to the baseline,
and the tables and figures of the compare notebook.

Must never pick or filter runs by their test numbers: every run given is listed, as evaluated. A run
is left out of the ranks only for a reason stated beside it (an excluded tag, or no usable
prediction), never dropped from the table or the figures.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402

from lesionflow.evaluation.bootstrap import Resampler, describe  # noqa: E402
from lesionflow.evaluation.summary import paired_estimates  # noqa: E402
from lesionflow.pipeline.artifacts import read_json, save_figure, write_csv  # noqa: E402
from lesionflow.pipeline.errors import LesionflowError  # noqa: E402
from lesionflow.reports.analysis import format_value  # noqa: E402

# summary key -> rank column name
METRICS = {
    "dice_pos": "rank_dice_pos",
    "iou_pos": "rank_iou_pos",
    "presence_roc_auc": "rank_roc_auc",
    "presence_ap": "rank_ap",
}
# Compared with the baseline (paired intervals) but not ranked: the false-positive rate is lower-better.
PAIRED_METRICS = (*METRICS, "lesion_f1", "false_positive_rate_empty")
# Counts from the summary's test section, copied so a reader sees what a failed run did.
COUNTS = ("n_images", "n_gt_positive", "n_pred_lesions", "n_ref_lesions")
BOOTSTRAP_DEFAULTS = {"n_resamples": 2000, "seed": 0, "confidence": 0.95}
# Same default as compare.exclude_tags in workflow/schemas/config.schema.yaml.
EXCLUDE_TAGS_DEFAULT = ("dev", "smoke")

# Leaderboard columns that hold text, read back as text (an empty reason is '', not NaN).
TEXT_COLUMNS = ("run", "status", "status_reason", "tags", "source")
RANKED, EXCLUDED, FAILED = "ranked", "excluded", "failed"
# Ranked runs first (by mean rank); the others after them, by status then name.
STATUS_ORDER = {RANKED: 0, EXCLUDED: 1, FAILED: 2}

# Labels of the metrics in the notebook's tables and figures.
LABELS = {
    "dice_pos": "Dice, lesion-positive images (dice_pos)",
    "presence_roc_auc": "lesion-presence ROC-AUC",
    "presence_ap": "lesion-presence average precision (AP)",
    "lesion_f1": "lesion-wise F1",
    "mean_rank": "mean rank",
}
FOREST_METRICS = ("dice_pos", "presence_roc_auc")
DELTA_METRICS = ("dice_pos", "presence_roc_auc", "presence_ap", "lesion_f1")
RANKINGS = {
    "dice_pos": "rank_dice_pos",
    "presence_roc_auc": "rank_roc_auc",
    "presence_ap": "rank_ap",
    "mean_rank": "mean_rank",
}
RANK_NAMES = {"rank_dice_pos": "Dice", "rank_iou_pos": "IoU", "rank_roc_auc": "ROC-AUC", "rank_ap": "AP"}

RANKED_COLOUR, BASELINE_COLOUR, NOT_RANKED_COLOUR = "tab:blue", "tab:orange", "0.6"
BETTER_COLOUR, WORSE_COLOUR, UNCLEAR_COLOUR = "tab:green", "tab:red", "tab:blue"


def _number(value) -> float:
    # summary.json stores undefined metrics as null.
    if value is None:
        return float("nan")
    number = float(value)
    return number if math.isfinite(number) else float("nan")


# ---------------------------------------------------------------- run status


def _tag_list(value, what: str) -> list[str]:
    """A list of tags from settings; a bare string would otherwise be read letter by letter."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise LesionflowError(f"{what} must be a list of tags, got {value!r}")
    return [str(tag) for tag in value]


def failure_reason(test: Mapping) -> str:
    """Why a run's test section is unusable for ranking, or '' when it is usable.

    Unusable: no lesion predicted on the whole test split, or an undefined test dice_pos.
    """
    n_pred = _number(test.get("n_pred_lesions"))
    dice = _number(test.get("dice_pos"))
    n_images = _number(test.get("n_images"))
    n_ref = _number(test.get("n_ref_lesions"))
    reasons = []
    if n_pred == 0:
        where = f"any of {int(n_images)} test images" if not math.isnan(n_images) else "any test image"
        reference = f" (the reference has {int(n_ref)} lesions)" if not math.isnan(n_ref) else ""
        reasons.append(f"no lesion predicted on {where}{reference}")
    if math.isnan(dice):
        n = _number(test.get("dice_pos_n"))
        count = f" (dice_pos_n={int(n)})" if not math.isnan(n) else ""
        reasons.append(f"test dice_pos is undefined{count}")
        if math.isnan(n_pred):
            reasons.append("the predicted lesion count (n_pred_lesions) is missing")
    return "; ".join(reasons)


def run_status(test: Mapping, tags: Sequence[str], exclude_tags: Sequence[str]) -> tuple[str, str]:
    """(status, reason) of one run: excluded by a tag, failed on the test split, or ranked (reason '')."""
    excluded = list(dict.fromkeys(tag for tag in tags if tag in exclude_tags))
    failure = failure_reason(test)
    if excluded:
        names = ", ".join(repr(tag) for tag in excluded)
        reason = f"tag {names} is" if len(excluded) == 1 else f"tags {names} are"
        reason += " in compare.exclude_tags"
        # A smoke run that also failed says so: that is what its tag was meant to catch.
        return EXCLUDED, reason + (f"; it also failed: {failure}" if failure else "")
    if failure:
        return FAILED, failure
    return RANKED, ""


# ---------------------------------------------------------------- leaderboard


def leaderboard(
    summaries: Mapping[str, Mapping],
    baseline: str,
    sources: Mapping[str, str | os.PathLike] | None = None,
    tags: Mapping[str, Sequence[str]] | None = None,
    exclude_tags: Sequence[str] = (),
) -> pd.DataFrame:
    """Rank runs on their test metrics (1 = best, NaN ranks last) and compare with ``baseline``.

    Every run gets a ``status`` and ``status_reason``: ``excluded`` (a tag of ``tags[run]`` is in
    ``exclude_tags``), ``failed`` (no lesion predicted on the test split, or undefined test
    dice_pos) or ``ranked``. Ranks and mean_rank are among ranked runs only (NaN for the others).

    Columns: run, status, status_reason, is_baseline, tags, level, resolution, the metrics with
    _ci_low, _ci_high, _n,
    the test counts, the ranks, mean_rank, for each ranked metric the absolute and percent
    difference to the baseline, and source. Ranked runs first by mean_rank, then the others by
    status and name.
    """
    if baseline not in summaries:
        raise LesionflowError(
            f"compare.baseline {baseline!r} is not a run; valid run names: {sorted(summaries)}"
        )
    tags = tags or {}
    exclude_tags = _tag_list(exclude_tags, "compare.exclude_tags")
    rows = []
    for run, summary in summaries.items():
        if "test" not in summary:
            where = f" ({sources[run]})" if sources and run in sources else ""
            raise LesionflowError(f"summary of run {run!r}{where} has no 'test' section")
        test = summary["test"]
        run_tags = _tag_list(tags.get(run), f"tags of run {run!r}")
        status, reason = run_status(test, run_tags, exclude_tags)
        row: dict = {
            "run": run,
            "status": status,
            "status_reason": reason,
            "is_baseline": run == baseline,
            "tags": ", ".join(run_tags),
            # Which evaluation the ranks are of (compare.level), and at what resolution.
            "level": summary.get("level", "image"),
            "resolution": summary.get("resolution", ""),
        }
        for metric in PAIRED_METRICS:
            for suffix in ("", "_ci_low", "_ci_high", "_n"):
                row[metric + suffix] = _number(test.get(metric + suffix))
        row.update({count: _number(test.get(count)) for count in COUNTS})
        rows.append(row)
    df = pd.DataFrame(rows)
    base = df.set_index("run").loc[baseline]
    if base["status"] == EXCLUDED:
        raise LesionflowError(
            f"compare.baseline {baseline!r} is excluded from the ranking ({base['status_reason']}); "
            "choose another baseline or remove the tag from the run or from compare.exclude_tags"
        )
    ranked = df["status"] == RANKED
    for metric, rank_col in METRICS.items():
        # method="min": tied runs share the better rank; NaN (undefined) ranks last. Only ranked runs
        # compete, so an excluded or failed run never pushes a ranked one down.
        df[rank_col] = df.loc[ranked, metric].rank(ascending=False, method="min", na_option="bottom")
    df["mean_rank"] = df[list(METRICS.values())].mean(axis=1)
    for metric in METRICS:
        delta = df[metric] - base[metric]
        df[f"delta_{metric}_vs_baseline"] = delta
        ref = base[metric]
        # Percent of a zero or undefined baseline is undefined, not infinite.
        df[f"delta_{metric}_pct_vs_baseline"] = (
            100.0 * delta / ref if np.isfinite(ref) and ref != 0 else np.nan
        )
    df["source"] = [str(sources[r]) if sources and r in sources else "" for r in df["run"]]
    order = df["status"].map(STATUS_ORDER)
    return (
        df.assign(_order=order)
        .sort_values(["_order", "mean_rank", "run"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _shared(per_image: pd.DataFrame, baseline: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables restricted to the images they share, in the same order."""
    shared = sorted(set(per_image["image_id"]) & set(baseline["image_id"]))
    ours = per_image.set_index("image_id").loc[shared].reset_index()
    theirs = baseline.set_index("image_id").loc[shared].reset_index()
    return ours, theirs


def wilcoxon_dice(per_image: pd.DataFrame, baseline: pd.DataFrame) -> dict:
    """Wilcoxon signed-rank test of per-image Dice on shared reference-positive images.

    The p-value is NaN (with n given) when there are no pairs or every difference is zero.
    """
    ours, theirs = _shared(per_image, baseline)
    positive = (ours["gt_pixels"].to_numpy() > 0) & (theirs["gt_pixels"].to_numpy() > 0)
    a = ours["dice"].to_numpy(dtype=float)[positive]
    b = theirs["dice"].to_numpy(dtype=float)[positive]
    defined = ~(np.isnan(a) | np.isnan(b))
    diff = a[defined] - b[defined]
    out = {
        "wilcoxon_dice_n": int(diff.size),
        "median_dice_difference": float(np.median(diff)) if diff.size else float("nan"),
        "wilcoxon_dice_p": float("nan"),
    }
    if np.count_nonzero(diff):
        with warnings.catch_warnings():
            # scipy warns about small samples and switches to the exact distribution; both fine.
            warnings.simplefilter("ignore")
            out["wilcoxon_dice_p"] = float(wilcoxon(a[defined], b[defined]).pvalue)
    return out


def paired_comparison(
    per_image: pd.DataFrame, baseline: pd.DataFrame, bootstrap: Mapping | None = None
) -> dict:
    """Run minus baseline on the test images both scored: paired bootstrap interval per metric
    (same subject resamples for both) and the Wilcoxon test on per-image Dice."""
    settings = {**BOOTSTRAP_DEFAULTS, **(bootstrap or {})}
    ours, theirs = _shared(per_image, baseline)
    out: dict = {"n_shared_images": int(len(ours))}
    if len(ours):
        resampler = Resampler.from_subjects(
            ours["subject"].astype(str).tolist(),
            settings["n_resamples"],
            settings["seed"],
            settings["confidence"],
        )
        for metric, estimate in paired_estimates(ours, theirs, resampler, PAIRED_METRICS).items():
            described = describe(estimate, "d")
            out[f"paired_delta_{metric}"] = described["d"]
            out[f"paired_delta_{metric}_ci_low"] = described["d_ci_low"]
            out[f"paired_delta_{metric}_ci_high"] = described["d_ci_high"]
    out.update(wilcoxon_dice(ours, theirs))
    return out


def _row_labels(df: pd.DataFrame) -> list[str]:
    """Run names, with '(baseline)' and the status of runs that are not ranked."""
    labels = []
    for run, status, is_base in zip(df["run"], df["status"], _is_baseline(df), strict=True):
        notes = (["baseline"] if is_base else []) + ([status] if status != RANKED else [])
        labels.append(f"{run} ({', '.join(notes)})" if notes else str(run))
    return labels


def _is_baseline(df: pd.DataFrame) -> np.ndarray:
    return df["is_baseline"].to_numpy(dtype=bool) if "is_baseline" in df else np.zeros(len(df), bool)


def _row_colours(df: pd.DataFrame) -> list[str]:
    """Baseline orange, other ranked runs blue, excluded and failed runs grey."""
    return [
        NOT_RANKED_COLOUR if status != RANKED else BASELINE_COLOUR if is_base else RANKED_COLOUR
        for status, is_base in zip(df["status"], _is_baseline(df), strict=True)
    ]


def _colour_tick_labels(ax: Axes, colours: Sequence[str], df: pd.DataFrame) -> None:
    # Major ticks, not get_yticklabels(): panels sharing the y axis hide their labels, and hidden
    # labels are left out of get_yticklabels().
    for tick, colour, is_base in zip(ax.yaxis.get_major_ticks(), colours, _is_baseline(df), strict=True):
        tick.label1.set_color("black" if colour == RANKED_COLOUR else colour)
        if is_base:
            tick.label1.set_fontweight("bold")


def plot_leaderboard(df: pd.DataFrame) -> Figure:
    """Horizontal bars per metric, runs in leaderboard order (best at the top); runs that are not
    ranked are grey and labelled with their status."""
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4 * len(METRICS), 0.45 * len(df) + 1.5), sharey=True)
    labels = _row_labels(df)[::-1]
    colours = _row_colours(df)[::-1]
    for ax, metric in zip(np.atleast_1d(axes), METRICS, strict=True):
        values = df[metric].to_numpy(dtype=float)[::-1]
        ax.barh(labels, np.nan_to_num(values, nan=0.0), color=colours)
        if f"{metric}_ci_low" in df:
            # The interval says whether a gap between two bars means anything.
            low = df[f"{metric}_ci_low"].to_numpy(dtype=float)[::-1]
            high = df[f"{metric}_ci_high"].to_numpy(dtype=float)[::-1]
            shown = ~(np.isnan(low) | np.isnan(high) | np.isnan(values))
            ax.errorbar(
                values[shown],
                np.flatnonzero(shown),
                xerr=[values[shown] - low[shown], high[shown] - values[shown]],
                fmt="none",
                ecolor="black",
                capsize=3,
                label="95 % interval",
            )
        for y, value in enumerate(values):
            # White inside a bar wide enough to hold it; black after a short (or zero) bar.
            inside = not np.isnan(value) and value >= 0.15
            ax.text(
                0.01 if inside or np.isnan(value) else value + 0.01,
                y,
                "n/a" if np.isnan(value) else f"{value:.3f}",
                va="center",
                color="white" if inside else "black",
                fontsize=8,
            )
        ax.set_xlim(0, 1)
        ax.set_title(metric)
    _colour_tick_labels(np.atleast_1d(axes)[0], colours, df.iloc[::-1])
    fig.suptitle(
        "Test metrics per run with subject-bootstrap intervals "
        "(ranked runs by mean rank; excluded and failed runs, grey, after them)"
    )
    fig.tight_layout()
    return fig


def _read_per_image(name: str, path: str | os.PathLike) -> pd.DataFrame:
    if not Path(path).is_file():
        raise LesionflowError(f"per-image test table of run {name!r} not found: {path}")
    return pd.read_csv(path, dtype={"image_id": str, "subject": str})


def run_compare(
    summary_paths: Mapping[str, str | os.PathLike],
    baseline: str,
    out_dir: str | os.PathLike,
    per_image_paths: Mapping[str, str | os.PathLike] | None = None,
    settings: Mapping | None = None,
) -> pd.DataFrame:
    """Write ``leaderboard.csv`` and ``leaderboard.png`` from the runs' summaries.

    With ``per_image_paths`` (each run's per_image_test.csv) every run is also compared with the
    baseline on their shared test images: paired bootstrap intervals and a Wilcoxon p-value.
    ``settings`` is the compare section plus every run's tags: its ``bootstrap``, ``exclude_tags``
    (default: dev, smoke, as in the config schema) and ``tags`` (run -> list) entries are used.
    """
    if not summary_paths:
        raise LesionflowError("compare needs at least one run summary")
    settings = settings or {}
    summaries = {}
    for name, path in summary_paths.items():
        if not Path(path).is_file():
            raise LesionflowError(f"summary of run {name!r} not found: {path}")
        summaries[name] = read_json(path)
    df = leaderboard(
        summaries,
        baseline,
        summary_paths,
        tags=settings.get("tags"),
        exclude_tags=settings.get("exclude_tags", EXCLUDE_TAGS_DEFAULT),
    )
    if per_image_paths is not None:
        missing = sorted(set(summary_paths) - set(per_image_paths))
        if missing:
            raise LesionflowError(f"compare: no per-image test table given for runs {missing}")
        tables = {name: _read_per_image(name, path) for name, path in per_image_paths.items()}
        boot = settings.get("bootstrap", {})
        paired = pd.DataFrame(
            [{"run": run, **paired_comparison(tables[run], tables[baseline], boot)} for run in df["run"]]
        )
        df = df.merge(paired, on="run", how="left")
        df = df[[c for c in df.columns if c != "source"] + ["source"]]
    out = Path(out_dir)
    write_csv(df, out / "leaderboard.csv")
    save_figure(plot_leaderboard(df), out / "leaderboard.png")
    return df


# ---------------------------------------------------------------- notebook: reading


def read_leaderboard(path: str | os.PathLike, baseline: str | None = None) -> pd.DataFrame:
    """The leaderboard.csv written by :func:`run_compare`, checked against the expected baseline.

    Text cells stay text (a run named 'NA' is not a missing value); empty numeric cells are NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise LesionflowError(f"leaderboard {path} not found")
    text = {column: "string" for column in TEXT_COLUMNS}
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=text)
    missing = [c for c in ("run", "status", "status_reason", "is_baseline", "mean_rank") if c not in df]
    if missing:
        raise LesionflowError(
            f"{path}: not a leaderboard of this version, missing column(s) {', '.join(missing)}"
        )
    for column in TEXT_COLUMNS:
        if column in df:
            df[column] = df[column].fillna("").astype(str)
    df["is_baseline"] = df["is_baseline"].astype(str).str.lower().isin(["true", "1", "1.0"])
    written = df.loc[df["is_baseline"], "run"].tolist()
    if baseline is not None and written != [baseline]:
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
    return f"Ranked on {what} (`compare.level: {level}`); resolution: {resolution or 'not stated'}."


def baseline_name(df: pd.DataFrame) -> str:
    """The run the leaderboard's deltas are taken against."""
    names = df.loc[_is_baseline(df), "run"].tolist()
    if len(names) != 1:
        raise LesionflowError(f"leaderboard must mark exactly one baseline run, found {names}")
    return str(names[0])


def _column(df: pd.DataFrame, name: str) -> np.ndarray:
    # A leaderboard built without per-image tables has no paired columns: show them as undefined.
    return df[name].to_numpy(dtype=float) if name in df else np.full(len(df), np.nan)


# ---------------------------------------------------------------- notebook: tables


def interval_text(value: float, low: float, high: float, digits: int = 3, signed: bool = False) -> str:
    """'0.712 [0.650, 0.770]'; 'undefined' for NaN; '(no interval)' when the interval is undefined."""
    if math.isnan(value):
        return format_value(value)

    def text(number: float) -> str:
        return f"{number:+.{digits}f}" if signed else format_value(float(number), digits)

    if math.isnan(low) or math.isnan(high):
        return f"{text(value)} (no interval)"
    return f"{text(value)} [{text(low)}, {text(high)}]"


def _count_text(value: float) -> str:
    return "n/a" if math.isnan(value) else str(int(value))


def p_value_text(p: float) -> str:
    """A p-value as text: '<0.001' below 0.001, 'undefined' for NaN (no pairs or no difference)."""
    if math.isnan(p):
        return "undefined"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def ranking_table(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Ranked runs ordered by ``by`` (a key of RANKINGS): rank, run, value with interval, n.

    For ``mean_rank`` the value lists the four ranks averaged and n is how many there are.
    """
    if by not in RANKINGS:
        raise LesionflowError(f"ranking by {by!r} is not available; choose one of {list(RANKINGS)}")
    ranked = df[df["status"] == RANKED]
    rank_col = RANKINGS[by]
    rank = ranked[rank_col] if by != "mean_rank" else ranked["mean_rank"].rank(method="min")
    rows = []
    for (_, row), position in zip(ranked.iterrows(), rank, strict=True):
        if by == "mean_rank":
            parts = ", ".join(f"{RANK_NAMES[c]} {_count_text(row[c])}" for c in METRICS.values())
            value, n = f"{row['mean_rank']:.2f} ({parts})", str(len(METRICS))
        else:
            value = interval_text(row[by], row[f"{by}_ci_low"], row[f"{by}_ci_high"])
            n = _count_text(row[f"{by}_n"])
        rows.append({"rank": int(position), "run": row["run"], "value": value, "n": n})
    table = pd.DataFrame(rows, columns=["rank", "run", "value", "n"])
    return table.sort_values(["rank", "run"], kind="stable").reset_index(drop=True)


def rankings(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The four ranking tables (Dice, ROC-AUC, AP, mean rank), keyed by their heading."""
    return {LABELS[by]: ranking_table(df, by) for by in RANKINGS}


def baseline_differences(df: pd.DataFrame) -> pd.DataFrame:
    """Every run but the baseline: paired difference (run - baseline) with interval per metric,
    median per-image Dice difference, Wilcoxon p and n, and the number of shared test images."""
    others = df[~_is_baseline(df)]
    rows = []
    for index in range(len(others)):
        row = others.iloc[[index]]
        out = {"run": row["run"].iloc[0], "status": row["status"].iloc[0]}
        for metric in DELTA_METRICS:
            key = f"paired_delta_{metric}"
            values = [_column(row, key + suffix)[0] for suffix in ("", "_ci_low", "_ci_high")]
            out[f"Δ {metric}"] = interval_text(*values, signed=True)
        median = _column(row, "median_dice_difference")[0]
        out["median Δ Dice per image"] = format_value(median, 3) if math.isnan(median) else f"{median:+.3f}"
        out["Wilcoxon p"] = p_value_text(_column(row, "wilcoxon_dice_p")[0])
        out["Wilcoxon n"] = _count_text(_column(row, "wilcoxon_dice_n")[0])
        out["shared images"] = _count_text(_column(row, "n_shared_images")[0])
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
    """One line: how many runs, how many of each status, and the baseline."""
    counts = df["status"].value_counts()
    parts = [f"{int(counts.get(status, 0))} {status}" for status in STATUS_ORDER]
    return f"{len(df)} runs: {', '.join(parts)}; baseline: {baseline_name(df)!r}."


# ---------------------------------------------------------------- notebook: figures


def _figure_height(n_rows: int) -> float:
    # Room for the title, the x label and a two-row legend below the rows.
    return max(3.2, 0.42 * n_rows + 2.4)


def _na_texts(ax: Axes, rows: np.ndarray, colours: Sequence[str]) -> None:
    """'n/a' in the middle of the panel for undefined values, so they are never read as 0."""
    mid = blended_transform_factory(ax.transAxes, ax.transData)
    for y in rows:
        ax.text(
            0.5,
            y,
            "n/a",
            transform=mid,
            ha="center",
            va="center",
            fontsize=9,
            color=colours[y],
            bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "0.8"},
        )


def _intervals(
    ax: Axes, values: np.ndarray, low: np.ndarray, high: np.ndarray, colours: Sequence[str]
) -> None:
    """Point and horizontal interval line per row (row 0 at the top); 'n/a' where undefined."""
    for y, (value, lo, hi, colour) in enumerate(zip(values, low, high, colours, strict=True)):
        if math.isnan(value):
            continue
        if not (math.isnan(lo) or math.isnan(hi)):
            ax.hlines(y, lo, hi, color=colour, linewidth=2.2)
        ax.plot(value, y, "o", color=colour, markersize=7, markeredgecolor="white", zorder=3)
    _na_texts(ax, np.flatnonzero(np.isnan(values)), colours)


def _point_handle(colour: str, label: str) -> Line2D:
    """Legend entry that looks like one row: a point on its interval line."""
    return Line2D([], [], color=colour, marker="o", linewidth=2.2, label=label)


def _row_axes(ax: Axes, df: pd.DataFrame, colours: Sequence[str]) -> None:
    ax.set_yticks(np.arange(len(df)), _row_labels(df))
    ax.set_ylim(len(df) - 0.5, -0.5)  # first leaderboard row at the top
    _colour_tick_labels(ax, colours, df)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)


def plot_forest(df: pd.DataFrame) -> Figure:
    """Forest plot of test dice_pos and presence ROC-AUC: one row per run in leaderboard order,
    point and bootstrap interval; baseline orange, excluded and failed runs grey with their status."""
    fig = Figure(figsize=(11, _figure_height(len(df))), layout="constrained")
    axes = fig.subplots(1, len(FOREST_METRICS), sharey=True)
    colours = _row_colours(df)
    base = df[_is_baseline(df)]
    for ax, metric in zip(axes, FOREST_METRICS, strict=True):
        values = _column(df, metric)
        _intervals(ax, values, _column(df, f"{metric}_ci_low"), _column(df, f"{metric}_ci_high"), colours)
        if len(base) and not math.isnan(_column(base, metric)[0]):
            # The baseline's value as a reference line: rows right of it beat it on the point value.
            ax.axvline(_column(base, metric)[0], color=BASELINE_COLOUR, linestyle="--", linewidth=1)
        if metric == "presence_roc_auc":
            ax.axvline(0.5, color="0.3", linestyle=":", linewidth=1)
        ax.set_xlim(-0.03, 1.03)  # a point at exactly 0 or 1 stays whole
        ax.set_xlabel(LABELS[metric])
        _row_axes(ax, df, colours)
    axes[0].set_ylabel("run (leaderboard order)")
    handles = [
        _point_handle(RANKED_COLOUR, "ranked run: value and interval"),
        _point_handle(BASELINE_COLOUR, "baseline"),
        _point_handle(NOT_RANKED_COLOUR, "excluded or failed (not ranked)"),
        Line2D([], [], color=BASELINE_COLOUR, linestyle="--", linewidth=1, label="baseline value"),
        Line2D([], [], color="0.3", linestyle=":", linewidth=1, label="ROC-AUC 0.5 (chance)"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    fig.suptitle("Test metrics per run with subject-bootstrap intervals")
    return fig


def _delta_colours(df: pd.DataFrame, low: np.ndarray, high: np.ndarray) -> list[str]:
    """Green: interval above 0 (run better), red: below 0 (worse), blue: includes 0; grey: not ranked."""
    colours = []
    for status, lo, hi in zip(df["status"], low, high, strict=True):
        if status != RANKED:
            colours.append(NOT_RANKED_COLOUR)
        else:
            colours.append(BETTER_COLOUR if lo > 0 else WORSE_COLOUR if hi < 0 else UNCLEAR_COLOUR)
    return colours


def _symmetric_limit(df: pd.DataFrame, *arrays: np.ndarray) -> float:
    """Half-width of a delta panel, from the ranked runs' values and intervals where there are any.

    A failed run can differ by -0.8 and would squeeze every ranked run's interval to a dot; it is
    drawn at the edge with its value instead (see :func:`_off_scale`). Symmetric around 0 so better
    and worse take the same room; at least 0.05 so tiny differences are not blown up.
    """
    stacked = np.abs(np.vstack(arrays))
    ranked = stacked[:, (df["status"] == RANKED).to_numpy()]
    for candidate in (ranked, stacked):
        finite = candidate[np.isfinite(candidate)]
        if finite.size:
            return max(0.05, 1.15 * float(finite.max()))
    return 1.0


def _inner_ticks(limit: float) -> list[float]:
    """Round ticks of a +-limit panel, none at its edges: neighbouring panels' edge labels collide."""
    ticks = MaxNLocator(nbins=4, symmetric=True).tick_values(-limit, limit)
    return [float(t) for t in ticks if abs(t) < 0.9 * limit]


def _off_scale(ax: Axes, values: np.ndarray, limit: float, colours: Sequence[str]) -> None:
    """A triangle at the panel's edge and the value as text for each point outside +-limit."""
    for y in np.flatnonzero(np.abs(np.nan_to_num(values)) > limit):
        side = float(np.sign(values[y]))
        edge = side * limit * 0.97
        ax.plot(edge, y, ">" if side > 0 else "<", color=colours[y], markersize=8, zorder=3)
        ax.text(
            edge,
            y - 0.22,  # just above the row (the y axis is inverted), clear of the row above
            f"{values[y]:+.3f} (off scale)",
            ha="right" if side > 0 else "left",
            va="bottom",
            fontsize=8,
            color=colours[y],
        )


def plot_paired_deltas(df: pd.DataFrame) -> Figure:
    """Per run but the baseline: paired difference (run - baseline) with its interval for dice_pos,
    presence ROC-AUC, AP and lesion F1, one panel each, with a line at 0 (no difference)."""
    others = df[~_is_baseline(df)].reset_index(drop=True)
    fig = Figure(figsize=(14, _figure_height(max(len(others), 1))), layout="constrained")
    axes = fig.subplots(1, len(DELTA_METRICS), sharey=True)
    for ax, metric in zip(axes, DELTA_METRICS, strict=True):
        key = f"paired_delta_{metric}"
        values, low, high = (_column(others, key + s) for s in ("", "_ci_low", "_ci_high"))
        ax.set_xlabel(f"Δ {LABELS[metric]}\n(run − baseline)")
        if others.empty:
            ax.text(
                0.5,
                0.5,
                "no run besides\nthe baseline",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="0.4",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        ax.axvline(0, color="black", linewidth=1)
        limit = _symmetric_limit(others, values, low, high)
        ax.set_xlim(-limit, limit)
        ax.set_xticks(_inner_ticks(limit))
        colours = _delta_colours(others, low, high)
        _intervals(ax, values, low, high, colours)
        _off_scale(ax, values, limit, colours)
        _row_axes(ax, others, [NOT_RANKED_COLOUR if s != RANKED else "black" for s in others["status"]])
    handles = [
        _point_handle(BETTER_COLOUR, "interval above 0: run better"),
        _point_handle(WORSE_COLOUR, "interval below 0: run worse"),
        _point_handle(UNCLEAR_COLOUR, "interval includes 0"),
        _point_handle(NOT_RANKED_COLOUR, "excluded or failed run"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False, fontsize=9)
    base = baseline_name(df) if _is_baseline(df).sum() == 1 else "?"
    fig.suptitle(f"Paired differences to the baseline {base!r} on shared test images (subject bootstrap)")
    return fig
