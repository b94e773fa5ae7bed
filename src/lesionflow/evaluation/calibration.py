"""The calibrate stage: a line true ~ a + b * predicted fitted on validation predictions, then locked.

Must never fit on a prediction of a non-validation image: run_calibrate refuses a file holding one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.stats import linregress
from sklearn.metrics import mean_squared_error

from lesionflow.data.subsets import read_split
from lesionflow.evaluation.vectors import numeric_vector
from lesionflow.pipeline.artifacts import write_json
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import complete_section

METHODS = ("none", "linear")
# Columns of the joined table of one subset: predictions beside their true scores.
CASE_COLUMNS = ("image_id", "subject", "visit", "true", "predicted_raw")
# Shown of a list of offending ids in a message; the count says how many there are in all.
SHOWN_IDS = 5


# ---------------------------------------------------------------------------------------------
# Reading the inputs
# ---------------------------------------------------------------------------------------------


def _finite_numbers(cells: pd.Series, path: os.PathLike, column: str, ids: pd.Series) -> np.ndarray:
    values = pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise LesionflowError(
            f"{path}: column {column!r} of image {ids.iloc[i]!r} is {cells.iloc[i]!r}; "
            "expected a finite number"
        )
    return values


def _read_table(path: str | os.PathLike, required: Sequence[str], what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise LesionflowError(f"{what} {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise LesionflowError(f"{what} {path} is empty; expected columns {list(required)}") from None
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise LesionflowError(f"{what} {path} lacks the columns {missing}")
    repeated = sorted(set(frame.loc[frame["image_id"].duplicated(), "image_id"]))
    if repeated:
        raise LesionflowError(f"{what} {path} repeats the image ids {repeated[:SHOWN_IDS]}")
    return frame


def read_true_scores(manifest_path: str | os.PathLike) -> pd.DataFrame:
    """image_id, subject, visit ('' without a visit column) and true ``score`` of the data manifest."""
    frame = _read_table(manifest_path, ("image_id", "subject", "score"), "manifest")
    score = _finite_numbers(frame["score"], manifest_path, "score", frame["image_id"])
    visit = frame["visit"] if "visit" in frame.columns else ""
    return pd.DataFrame(
        {"image_id": frame["image_id"], "subject": frame["subject"], "visit": visit, "score": score}
    )


def read_predictions(scores_path: str | os.PathLike) -> pd.DataFrame:
    """image_id and ``prediction`` (raw model output) of an infer_scores ``{subset}_scores.csv``."""
    frame = _read_table(scores_path, ("image_id", "prediction"), "scores file")
    prediction = _finite_numbers(frame["prediction"], scores_path, "prediction", frame["image_id"])
    return pd.DataFrame({"image_id": frame["image_id"], "prediction": prediction})


def check_ids_in_split(
    ids: Sequence[str], split: pd.DataFrame, subset: str, path: str | os.PathLike, why: str
) -> None:
    """Raise unless ``ids`` are exactly the ``subset`` images of ``split``; ``why`` ends the message.

    This is the guard that keeps test predictions out of calibration (and val out of test).
    """
    split_of = dict(zip(split["image_id"], split["split"], strict=True))
    wrong = sorted(i for i in ids if split_of.get(i) != subset)
    if wrong:
        shown = ", ".join(f"{i!r} ({split_of.get(i, 'not in split.csv')})" for i in wrong[:SHOWN_IDS])
        raise LesionflowError(
            f"{path} holds {len(wrong)} image ids outside the {subset!r} split, e.g. {shown}; {why}"
        )
    absent = sorted({i for i, s in split_of.items() if s == subset} - set(ids))
    if absent:
        raise LesionflowError(
            f"{path} lacks predictions for {len(absent)} {subset} image ids, e.g. {absent[:SHOWN_IDS]}"
        )


def subset_cases(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    scores_path: str | os.PathLike,
    subset: str,
    why: str,
) -> pd.DataFrame:
    """The predictions of ``scores_path`` beside their true scores (:data:`CASE_COLUMNS`), by image id.

    The scores file must hold exactly the ``subset`` images of the split (else an error ending in
    ``why``); subjects come from the split, true scores and visits from the data manifest.
    """
    split = read_split(split_path)
    predictions = read_predictions(scores_path)
    check_ids_in_split(predictions["image_id"].tolist(), split, subset, scores_path, why)
    truth = read_true_scores(manifest_path).set_index("image_id")
    absent = sorted(set(predictions["image_id"]) - set(truth.index))
    if absent:
        raise LesionflowError(
            f"manifest {manifest_path} has no score for the image ids {absent[:SHOWN_IDS]} of "
            f"{scores_path}; the predictions were made from another dataset"
        )
    subject_of = split.set_index("image_id")["subject"]
    cases = predictions.sort_values("image_id", kind="stable").reset_index(drop=True)
    ids = cases["image_id"]
    return pd.DataFrame(
        {
            "image_id": ids,
            "subject": subject_of.loc[ids].astype(str).to_numpy(),
            "visit": truth.loc[ids, "visit"].to_numpy(),
            "true": truth.loc[ids, "score"].to_numpy(dtype=float),
            "predicted_raw": cases["prediction"].to_numpy(dtype=float),
        }
    )


# ---------------------------------------------------------------------------------------------
# Fitting and applying
# ---------------------------------------------------------------------------------------------


def _rmse(true: np.ndarray, predicted: np.ndarray) -> float:
    return math.sqrt(mean_squared_error(true, predicted))


def checked_method(method: object) -> str:
    """``method`` if it is a ``tune.calibration`` method; else an error naming the key."""
    if method not in METHODS:
        raise LesionflowError(f"tune.calibration must be one of {list(METHODS)}, got {method!r}")
    return str(method)


def fit_calibration(true: ArrayLike, predicted: ArrayLike, method: str) -> dict:
    """``{"method", "intercept", "slope"}`` of the line true ~ intercept + slope * predicted.

    ``none`` is the identity (intercept 0, slope 1); ``linear`` is the least-squares line, which
    needs at least two distinct predictions.
    """
    method = checked_method(method)
    y = numeric_vector(true, "calibration true scores")
    x = numeric_vector(predicted, "calibration predictions")
    if y.size != x.size or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise LesionflowError(
            f"calibration: {y.size} true scores and {x.size} predictions; both must be finite, equally many"
        )
    if method == "none":
        return {"method": method, "intercept": 0.0, "slope": 1.0}
    n_distinct = int(np.unique(x).size)
    if n_distinct < 2:
        raise LesionflowError(
            f"tune.calibration is 'linear' but the {x.size} validation predictions take {n_distinct} "
            "distinct value(s); a line needs at least 2 (use tune.calibration: none)"
        )
    fit = linregress(x, y)
    return {"method": method, "intercept": float(fit.intercept), "slope": float(fit.slope)}


def apply_calibration(calibration: Mapping, predicted: ArrayLike) -> np.ndarray:
    """intercept + slope * predicted with a locked ``calibration`` (fit_calibration's or calibration.json)."""
    coefficients = []
    for key in ("intercept", "slope"):
        value = calibration.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise LesionflowError(f"calibration {key} must be a finite number, got {value!r}")
        coefficients.append(float(value))
    intercept, slope = coefficients
    return intercept + slope * numeric_vector(predicted, "predictions to calibrate")


# ---------------------------------------------------------------------------------------------
# Stage entry
# ---------------------------------------------------------------------------------------------


def run_calibrate(
    manifest_path: str | os.PathLike,
    split_path: str | os.PathLike,
    val_scores_path: str | os.PathLike,
    settings: Mapping,
    out_dir: str | os.PathLike,
) -> dict:
    """Fit ``tune.calibration`` on the validation predictions; write and return ``calibration.json``.

    ``settings`` is the job's ``{"tune": {"calibration": ...}}``. Every row of ``val_scores_path``
    must be a validation image and every validation image must be there, so a test-split file is
    refused.
    """
    method = checked_method(complete_section(settings, "tune", ("calibration",))["calibration"])
    cases = subset_cases(
        manifest_path, split_path, val_scores_path, "val", "calibration is fitted on validation only"
    )
    if cases.empty:
        raise LesionflowError(f"{val_scores_path} holds no validation predictions to calibrate on")
    true, raw = cases["true"].to_numpy(), cases["predicted_raw"].to_numpy()
    fitted = fit_calibration(true, raw, method)
    calibration = {
        **fitted,
        "fitted_on": "val",
        "n_val": int(len(cases)),
        "val_rmse_before": _rmse(true, raw),
        "val_rmse_after": _rmse(true, apply_calibration(fitted, raw)),
    }
    write_json(Path(out_dir) / "calibration.json", calibration)
    return calibration
