"""The compare stage: ranks, run status and paired comparisons to the baseline, as leaderboard.csv/.png.

Must never pick or drop runs by their test numbers: a run is left unranked only for a reason stated beside it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from lesionflow.evaluation.artifact_names import is_class_summary
from lesionflow.evaluation.bootstrap import Resampler, describe
from lesionflow.evaluation.class_leaderboard import (
    CLASS_COLUMN,
    class_cells,
    class_paired_comparison,
    flat_test,
    with_class_ranks,
)
from lesionflow.evaluation.leaderboard_columns import (
    COUNTS,
    EXCLUDED,
    FAILED,
    LEADERBOARD_COLUMNS,
    PAIRED_METRICS,
    RANK_COLUMNS,
    RANKED,
    STATUS_ORDER,
)
from lesionflow.evaluation.run_groups import failed_rows, group_summary, with_failed, with_groups
from lesionflow.evaluation.summary import paired_estimates
from lesionflow.io.figures import save_figure
from lesionflow.pipeline.artifacts import read_json, write_csv
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.leaderboard_plot import plot_leaderboard

# Keys of the compare settings run_compare reads: the config's compare section, schema defaults
# filled, plus every run's tags.
SETTINGS_KEYS = ("exclude_tags", "bootstrap", "tags")
BOOTSTRAP_KEYS = ("n_resamples", "seed", "confidence")


# Segmentation metric -> (rank column, lower is better): every ranked metric is higher-better.
SEGMENTATION_RANKS = {metric: (column, False) for metric, column in RANK_COLUMNS.items()}


def summary_number(value: object) -> float:
    """A metric of a summary.json as a float; null (how it stores an undefined metric), inf and NaN
    are NaN."""
    if value is None:
        return float("nan")
    number = float(value)
    return number if math.isfinite(number) else float("nan")


# ---------------------------------------------------------------- run status


def tag_list(value: object, what: str) -> list[str]:
    """A list of tags from settings (None: no tags); ``what`` names the setting in the error a bare
    string gets, which would otherwise be read letter by letter."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise LesionflowError(f"{what} must be a list of tags, got {value!r}")
    return [str(tag) for tag in value]


def failure_reason(test: Mapping) -> str:
    """Why a run's test section is unusable for ranking, or '' when it is usable.

    Unusable: no lesion predicted on the whole test split, or an undefined test dice_pos.
    """
    n_pred = summary_number(test.get("n_pred_lesions"))
    dice = summary_number(test.get("dice_pos"))
    n_images = summary_number(test.get("n_images"))
    n_ref = summary_number(test.get("n_ref_lesions"))
    reasons = []
    if n_pred == 0:
        where = f"any of {int(n_images)} test images" if not math.isnan(n_images) else "any test image"
        reference = f" (the reference has {int(n_ref)} lesions)" if not math.isnan(n_ref) else ""
        reasons.append(f"no lesion predicted on {where}{reference}")
    if math.isnan(dice):
        n = summary_number(test.get("dice_pos_n"))
        count = f" (dice_pos_n={int(n)})" if not math.isnan(n) else ""
        reasons.append(f"test dice_pos is undefined{count}")
        if math.isnan(n_pred):
            reasons.append("the predicted lesion count (n_pred_lesions) is missing")
    return "; ".join(reasons)


def run_status(test: Mapping, tags: Sequence[str], exclude_tags: Sequence[str]) -> tuple[str, str]:
    """(status, reason) of one run: excluded by a tag, failed on the test split, or ranked (reason '')."""
    return tagged_status(failure_reason(test), tags, exclude_tags)


def tagged_status(failure: str, tags: Sequence[str], exclude_tags: Sequence[str]) -> tuple[str, str]:
    """(status, reason) of a run with these ``tags`` whose test results are unusable for ``failure``
    ('' when usable): excluded by a tag, else failed, else ranked (reason '')."""
    excluded = list(dict.fromkeys(tag for tag in tags if tag in exclude_tags))
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


def check_baseline_is_run(baseline: str, runs: Iterable[str]) -> None:
    """Raise unless ``baseline`` (compare.baseline) is one of ``runs``."""
    runs = sorted(runs)
    if baseline not in runs:
        raise LesionflowError(f"compare.baseline {baseline!r} is not a run; valid run names: {runs}")


def check_baseline_not_excluded(baseline: str, status: str, reason: str) -> None:
    """Raise when the baseline's ``status`` is excluded: its ranks and deltas would mean nothing."""
    if status == EXCLUDED:
        raise LesionflowError(
            f"compare.baseline {baseline!r} is excluded from the ranking ({reason}); "
            "choose another baseline or remove the tag from the run or from compare.exclude_tags"
        )


def rank_runs(df: pd.DataFrame, ranks: Mapping[str, tuple[str, bool]]) -> pd.DataFrame:
    """``df`` with a rank column per metric of ``ranks`` (metric -> (rank column, lower is better))
    and ``mean_rank``, among its ranked runs only (NaN for the others); 1 = best, NaN ranks last."""
    ranked = df["status"] == RANKED
    for metric, (column, lower_is_better) in ranks.items():
        # method="min": tied runs share the better rank; NaN (undefined) ranks last. Only ranked runs
        # compete, so an excluded or failed run never pushes a ranked one down.
        df[column] = df.loc[ranked, metric].rank(ascending=lower_is_better, method="min", na_option="bottom")
    df["mean_rank"] = df[[column for column, _ in ranks.values()]].mean(axis=1)
    return df


def in_board_order(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of a leaderboard in its order: ranked runs by mean_rank, then the others by status,
    then by name."""
    return (
        df.assign(_order=df["status"].map(STATUS_ORDER))
        .sort_values(["_order", "mean_rank", "run"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def leaderboard(
    summaries: Mapping[str, Mapping],
    baseline: str,
    sources: Mapping[str, str | os.PathLike] | None = None,
    tags: Mapping[str, Sequence[str]] | None = None,
    *,
    exclude_tags: Sequence[str],
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
    check_baseline_is_run(baseline, summaries)
    tags = tags or {}
    exclude_tags = tag_list(exclude_tags, "compare.exclude_tags")
    rows, names = [], []
    for run, summary in summaries.items():
        where = f" ({sources[run]})" if sources and run in sources else ""
        missing = [key for key in ("test", "level", "resolution") if key not in summary]
        if missing:
            raise LesionflowError(
                f"summary of run {run!r}{where} lacks {', '.join(map(repr, missing))}, which the "
                "evaluate stage writes"
            )
        test = summary["test"]
        if is_class_summary(summary):  # several lesion classes: ranked by their macro means
            test, names = flat_test(summary), summary["classes"]
        run_tags = tag_list(tags.get(run), f"tags of run {run!r}")
        status, reason = run_status(test, run_tags, exclude_tags)
        row: dict = {
            "run": run,
            "status": status,
            "status_reason": reason,
            "is_baseline": run == baseline,
            "tags": ", ".join(run_tags),
            # Which evaluation the ranks are of (compare.level), and at what resolution.
            "level": summary["level"],
            "resolution": summary["resolution"],
        }
        for metric in PAIRED_METRICS:
            for suffix in ("", "_ci_low", "_ci_high", "_n"):
                row[metric + suffix] = summary_number(test.get(metric + suffix))
        row.update({count: summary_number(test.get(count)) for count in COUNTS})
        if is_class_summary(summary):
            row.update(class_cells(summary))
        rows.append(row)
    df = pd.DataFrame(rows)
    base = df.set_index("run").loc[baseline]
    check_baseline_not_excluded(baseline, base["status"], base["status_reason"])
    df = rank_runs(df, SEGMENTATION_RANKS)
    if names:
        df = with_class_ranks(df, names)
    for metric in RANK_COLUMNS:
        delta = df[metric] - base[metric]
        df[f"delta_{metric}_vs_baseline"] = delta
        ref = base[metric]
        # Percent of a zero or undefined baseline is undefined, not infinite.
        df[f"delta_{metric}_pct_vs_baseline"] = (
            100.0 * delta / ref if np.isfinite(ref) and ref != 0 else np.nan
        )
    df["source"] = [str(sources[r]) if sources and r in sources else "" for r in df["run"]]
    return in_board_order(df)


# ---------------------------------------------------------------- paired comparison


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


def paired_comparison(per_image: pd.DataFrame, baseline: pd.DataFrame, bootstrap: Mapping) -> dict:
    """Run minus baseline on the test images both scored: paired bootstrap interval per metric
    (same subject resamples for both) and the Wilcoxon test on per-image Dice.

    ``bootstrap`` is the config's compare.bootstrap section: n_resamples, seed and confidence.
    """
    ours, theirs = _shared(per_image, baseline)
    out: dict = {"n_shared_images": int(len(ours))}
    if len(ours):
        resampler = Resampler.from_subjects(
            ours["subject"].astype(str).tolist(),
            bootstrap["n_resamples"],
            bootstrap["seed"],
            bootstrap["confidence"],
            "compare.bootstrap",
        )
        for metric, estimate in paired_estimates(ours, theirs, resampler, PAIRED_METRICS).items():
            described = describe(estimate, "d")
            out[f"paired_delta_{metric}"] = described["d"]
            out[f"paired_delta_{metric}_ci_low"] = described["d_ci_low"]
            out[f"paired_delta_{metric}_ci_high"] = described["d_ci_high"]
    out.update(wilcoxon_dice(ours, theirs))
    return out


# ---------------------------------------------------------------- the stage


def _paired(per_image: pd.DataFrame, baseline: pd.DataFrame, boot: Mapping) -> dict:
    if CLASS_COLUMN in per_image.columns:  # several lesion classes: class by class, then macro
        return class_paired_comparison(per_image, baseline, boot, _shared, wilcoxon_dice)
    return paired_comparison(per_image, baseline, boot)


def check_settings(settings: Mapping, baseline: str) -> None:
    """Raise unless ``settings`` holds every key run_compare reads and agrees on the baseline.

    Defaults are filled from the config schema before the stage runs; a missing key here means a
    caller skipped that, and guessing a default would hide it.
    """
    missing = [key for key in SETTINGS_KEYS if key not in settings]
    if "bootstrap" in settings:
        missing += [f"bootstrap.{key}" for key in BOOTSTRAP_KEYS if key not in settings["bootstrap"]]
    if missing:
        raise LesionflowError(
            f"compare settings lack {', '.join(missing)}: pass the config's compare section with the "
            "schema's defaults filled, and every run's tags"
        )
    if "baseline" in settings and settings["baseline"] != baseline:
        raise LesionflowError(
            f"compare: baseline {baseline!r} differs from compare.baseline {settings['baseline']!r} "
            "in the settings"
        )


def read_summaries(summary_paths: Mapping[str, str | os.PathLike]) -> dict[str, dict]:
    """Each run's summary.json, by run; an error naming the run and file when one is absent."""
    summaries = {}
    for name, path in summary_paths.items():
        if not Path(path).is_file():
            raise LesionflowError(f"summary of run {name!r} not found: {path}")
        summaries[name] = read_json(path)
    return summaries


def _read_per_image(name: str, path: str | os.PathLike) -> pd.DataFrame:
    if not Path(path).is_file():
        raise LesionflowError(f"per-image test table of run {name!r} not found: {path}")
    return pd.read_csv(path, dtype={"image_id": str, "subject": str})


def run_compare(
    summary_paths: Mapping[str, str | os.PathLike],
    baseline: str,
    out_dir: str | os.PathLike,
    per_image_paths: Mapping[str, str | os.PathLike] | None,
    settings: Mapping,
    failures: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Write ``leaderboard.csv``, ``leaderboard_groups.csv`` and ``leaderboard.png`` from the runs'
    summaries, with a row for each run of ``failures`` (run -> {stage, log, reason}), which has none.

    With ``per_image_paths`` (each run's per_image_test.csv) every run is also compared with the
    baseline on their shared test images: paired bootstrap intervals and a Wilcoxon p-value.
    ``settings`` is the config's compare section with the schema's defaults filled, plus every
    run's tags (``tags``: run -> list); its ``exclude_tags`` and ``bootstrap`` are used, and
    ``groups`` (run -> recipe) and ``seeds`` (run -> seed) when given: see
    :func:`lesionflow.evaluation.run_groups.with_groups` for the noise floors they give.
    """
    out = Path(out_dir)
    failed = failed_rows(failures or {}, settings.get("tags", {}))
    if not summary_paths:
        # No segmentation run has test results (a config of regression runs only, or every one
        # failed): the table is written with its header and the failed runs' rows.
        return _write_board(with_failed(pd.DataFrame(columns=LEADERBOARD_COLUMNS), failed), settings, out)
    check_settings(settings, baseline)
    summaries = read_summaries(summary_paths)
    df = leaderboard(
        summaries, baseline, summary_paths, tags=settings["tags"], exclude_tags=settings["exclude_tags"]
    )
    if per_image_paths is not None:
        missing = sorted(set(summary_paths) - set(per_image_paths))
        if missing:
            raise LesionflowError(f"compare: no per-image test table given for runs {missing}")
        tables = {name: _read_per_image(name, path) for name, path in per_image_paths.items()}
        boot = settings["bootstrap"]
        paired = pd.DataFrame(
            [{"run": run, **_paired(tables[run], tables[baseline], boot)} for run in df["run"]]
        )
        df = df.merge(paired, on="run", how="left")
        df = df[[c for c in df.columns if c != "source"] + ["source"]]
    return _write_board(in_board_order(with_failed(df, failed)), settings, out)


def _write_board(board: pd.DataFrame, settings: Mapping, out: Path) -> pd.DataFrame:
    board = with_groups(board, settings, RANK_COLUMNS)
    write_csv(board, out / "leaderboard.csv")
    write_csv(group_summary(board, PAIRED_METRICS), out / "leaderboard_groups.csv")
    save_figure(plot_leaderboard(board), out / "leaderboard.png")
    return board
