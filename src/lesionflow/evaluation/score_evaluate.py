"""The evaluate_scores stage: locked calibration applied to val and test predictions, scored with intervals.

Must never fit anything: the calibration is calibration.json's, fitted on validation before test is read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from lesionflow.evaluation.calibration import apply_calibration, subset_cases
from lesionflow.evaluation.regression import range_labels, regression_summary
from lesionflow.pipeline.artifacts import read_json, write_csv, write_json
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

PER_CASE_COLUMNS = (
    "image_id",
    "subject",
    "visit",
    "true",
    "predicted_raw",
    "predicted",
    "residual",
    "abs_error",
    "range",
)
SETTINGS_KEYS = ("score_ranges", "bootstrap")
BOOTSTRAP_KEYS = ("n_resamples", "seed", "confidence")
CALIBRATION_KEYS = ("method", "intercept", "slope", "fitted_on", "n_val")


def evaluate_settings(settings: Mapping) -> dict:
    """The job's evaluate section, checked to hold every key this stage reads (schema defaults filled)."""
    evaluate = complete_section(settings, "evaluate", SETTINGS_KEYS)
    complete_section({"evaluate.bootstrap": evaluate["bootstrap"]}, "evaluate.bootstrap", BOOTSTRAP_KEYS)
    return evaluate


def read_calibration(path: str | os.PathLike, n_val: int) -> dict:
    """The locked calibration.json; an error unless it was fitted on these ``n_val`` validation cases."""
    if not Path(path).is_file():
        raise LesionflowError(f"calibration file {path} does not exist; the calibrate stage writes it")
    calibration = read_json(path)
    missing = [key for key in CALIBRATION_KEYS if key not in calibration]
    if missing:
        raise LesionflowError(f"calibration file {path} lacks {missing}, which the calibrate stage writes")
    if calibration["fitted_on"] != "val":
        raise LesionflowError(
            f"calibration file {path} says fitted_on {calibration['fitted_on']!r}; only a calibration "
            "fitted on validation may be applied"
        )
    if calibration["n_val"] != n_val:
        raise LesionflowError(
            f"calibration file {path} was fitted on {calibration['n_val']} validation cases but the "
            f"validation scores hold {n_val}; it is stale, rerun the calibrate stage"
        )
    return calibration


def per_case_table(cases: pd.DataFrame, calibration: Mapping, settings: Mapping) -> pd.DataFrame:
    """The per-case table (:data:`PER_CASE_COLUMNS`) of one subset's joined cases.

    ``range`` is the ``by_range`` label of the true score ('' outside every range).
    """
    out = cases.copy()
    out["predicted"] = apply_calibration(calibration, out["predicted_raw"].to_numpy())
    out["residual"] = out["predicted"] - out["true"]
    out["abs_error"] = out["residual"].abs()
    out["range"] = range_labels(out["true"].to_numpy(), settings["score_ranges"])
    return out[list(PER_CASE_COLUMNS)]


def subset_summary(per_case: pd.DataFrame, settings: Mapping) -> dict:
    """``regression_summary`` of a per-case table's calibrated predictions, by subject bootstrap."""
    if per_case.empty:
        raise LesionflowError("evaluate_scores: a subset without cases cannot be scored")
    boot = settings["bootstrap"]
    return regression_summary(
        per_case["true"].to_numpy(),
        per_case["predicted"].to_numpy(),
        per_case["subject"].astype(str).tolist(),
        settings["score_ranges"],
        n_resamples=boot["n_resamples"],
        seed=boot["seed"],
        confidence=boot["confidence"],
        config_key="evaluate.bootstrap",
    )


def run_evaluate_scores(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    val_scores_path: str | os.PathLike,
    test_scores_path: str | os.PathLike,
    calibration_path: str | os.PathLike,
    settings: Mapping,
    out_dir: str | os.PathLike,
) -> dict:
    """Write ``per_case_val.csv``, ``per_case_test.csv`` and ``summary.json``; return the summary.

    ``settings`` is the job's ``{"evaluate": {score_ranges, bootstrap}}``. Each scores file must hold
    exactly its subset's images. The calibration is read, checked and applied as it is.
    """
    settings = evaluate_settings(settings)
    val = subset_cases(
        manifest_path, split_path, val_scores_path, "val", "the val scores file must hold val images only"
    )
    calibration = read_calibration(calibration_path, len(val))
    # Test is read only now, once the calibration it is scored with is known to be the locked one.
    test = subset_cases(
        manifest_path, split_path, test_scores_path, "test", "the test scores file must hold test images only"
    )
    tables = {
        "val": per_case_table(val, calibration, settings),
        "test": per_case_table(test, calibration, settings),
    }
    summary = {
        "task": "regression",
        **{subset: subset_summary(table, settings) for subset, table in tables.items()},
        "calibration": calibration,
        "score_ranges": [float(cut) for cut in settings["score_ranges"]],
    }
    out = Path(out_dir)
    for subset, table in tables.items():
        write_csv(table, out / f"per_case_{subset}.csv")
    write_json(out / "summary.json", summary)
    return summary
