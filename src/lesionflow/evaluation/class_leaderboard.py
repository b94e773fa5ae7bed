"""The leaderboard of runs of several lesion classes: ranked by the macro mean over classes, and
per class beside it.

A run's row holds the macro means where a binary run's metrics stand (so every reader of the
leaderboard ranks and plots them alike), a ``ranked_by`` column that says so and over which
classes, each class's metrics as ``<metric>_<class>`` with their intervals, and each class's own
ranks (``rank_<metric>_<class>``), which do not enter ``mean_rank``. Paired comparisons with the
baseline are made class by class, on the same resamples, and their macro mean is the run's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from lesionflow.evaluation import bootstrap
from lesionflow.evaluation.bootstrap import Estimate, Resampler
from lesionflow.evaluation.classes import macro_estimate
from lesionflow.evaluation.leaderboard_columns import COUNTS, PAIRED_METRICS, RANK_COLUMNS, RANKED
from lesionflow.evaluation.summary import paired_estimates

CLASS_COLUMN = "class"
SUFFIXES = ("", "_ci_low", "_ci_high", "_n")


def ranked_by(names: Sequence[str]) -> str:
    """The ``ranked_by`` cell of a run of the classes ``names``."""
    return f"macro mean over {len(names)} classes ({', '.join(names)})"


def flat_test(summary: Mapping) -> dict:
    """The test section of a summary of several classes as a binary run's: each metric its macro
    mean (with interval, n and the number of classes averaged), counts over (image, class) pairs
    (``n_images`` is the number of images)."""
    test, names = summary["test"], summary["classes"]
    flat = {key: value for key, value in test["macro"].items() if not key.endswith("_classes")}
    per_class = [test["classes"][name] for name in names]
    flat["n_images"] = per_class[0].get("n_images")
    for count in COUNTS[1:]:
        values = [section.get(count) for section in per_class]
        flat[count] = None if any(value is None for value in values) else sum(values)
    return flat


def class_cells(summary: Mapping) -> dict:
    """Each class's paired metrics, ``<metric>_<class>`` with its interval and n, and ``ranked_by``."""
    test, names = summary["test"], summary["classes"]
    cells: dict = {"ranked_by": ranked_by(names)}
    for name in names:
        for metric in PAIRED_METRICS:
            for suffix in SUFFIXES:
                value = test["classes"][name].get(metric + suffix)
                # An undefined value (null in summary.json) is NaN in the table, never 0.
                cells[f"{metric}_{name}{suffix}"] = np.nan if value is None else float(value)
    return cells


def with_class_ranks(df: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """``df`` with each class's rank columns among the ranked runs (1 = best, NaN last); they stay
    out of ``mean_rank``, which ranks the macro means."""
    ranked = df["status"] == RANKED
    for name in names:
        for metric, column in RANK_COLUMNS.items():
            values = df.loc[ranked, f"{metric}_{name}"].astype(float)
            df[f"{column}_{name}"] = values.rank(ascending=False, method="min", na_option="bottom")
    return df


def class_paired_comparison(
    per_image: pd.DataFrame,
    baseline: pd.DataFrame,
    bootstrap_settings: Mapping,
    shared: Callable[[pd.DataFrame, pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]],
    wilcoxon: Callable[[pd.DataFrame, pd.DataFrame], dict],
) -> dict:
    """Run minus baseline class by class (``paired_delta_<metric>_<class>``, the Wilcoxon test of
    each class's Dice) and the macro mean of the class deltas as ``paired_delta_<metric>``.

    ``shared`` pairs two tables on their shared images, ``wilcoxon`` tests Dice on such a pair
    (the binary comparison's own). Every class has every image, so every class is resampled alike.
    """
    names = list(dict.fromkeys(per_image[CLASS_COLUMN]))
    out: dict = {}
    estimates: dict[str, dict[str, Estimate]] = {}
    for name in names:
        ours, theirs = shared(_block(per_image, name), _block(baseline, name))
        out["n_shared_images"] = int(len(ours))
        if len(ours):
            resampler = Resampler.from_subjects(
                ours["subject"].astype(str).tolist(), bootstrap_settings["n_resamples"],
                bootstrap_settings["seed"], bootstrap_settings["confidence"], "compare.bootstrap",
            )  # fmt: skip
            estimates[name] = paired_estimates(ours, theirs, resampler, PAIRED_METRICS)
            for metric, estimate in estimates[name].items():
                out.update(_described(estimate, f"paired_delta_{metric}_{name}"))
        out.update({f"{key}_{name}": value for key, value in wilcoxon(ours, theirs).items()})
    if len(estimates) == len(names):
        for metric in PAIRED_METRICS:
            macro, defined = macro_estimate({name: estimates[name][metric] for name in names})
            if len(defined) < len(names):  # a class undefined in the run or the baseline: no macro delta
                macro = Estimate(float("nan"), np.full(np.shape(macro.samples), np.nan), 0, macro.confidence)
            out.update(_described(macro, f"paired_delta_{metric}"))
    return out


def _block(table: pd.DataFrame, name: str) -> pd.DataFrame:
    return table[table[CLASS_COLUMN] == name].drop(columns=CLASS_COLUMN)


def _described(estimate: Estimate, name: str) -> dict:
    described = bootstrap.describe(estimate, name)
    return {key: value for key, value in described.items() if not key.endswith("_n")}
