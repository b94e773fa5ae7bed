"""Point metrics of predicted against true scores (RMSE, sRMSE, MAE, R², Pearson, Spearman).

Kept apart from the bootstrap, so the train stage, which chooses its checkpoint by validation sRMSE,
does not rerun when interval code changes; must never report an undefined metric as a number.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import pearsonr, spearmanr

from lesionflow.evaluation import vectors
from lesionflow.pipeline.errors import LesionflowError

# Metrics that get a bootstrap interval; the p-values are reported for the point estimate only.
INTERVAL_METRICS = ("rmse", "srmse", "mae", "r2", "pearson_r", "spearman_rho")
P_VALUES = {"pearson_r": "pearson_p", "spearman_rho": "spearman_p"}


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict:
    """Point values: n, rmse, srmse, mae, r2, pearson_r, pearson_p, spearman_rho, spearman_p.

    Every value that is undefined for these rows (see the module conventions) is NaN.
    """
    true, pred = check_pair(y_true, y_pred)
    n = int(true.size)
    out: dict = {"n": n, **{name: math.nan for name in (*INTERVAL_METRICS, *P_VALUES.values())}}
    if n == 0:
        return out
    err = pred - true
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    out["mae"] = float(np.mean(np.abs(err)))
    # Constancy is tested on the values, not on a computed std, which can be a rounding residue.
    true_constant, pred_constant = _is_constant(true), _is_constant(pred)
    if not true_constant:
        out["srmse"] = out["rmse"] / float(np.std(true))
        if n >= 2:
            out["r2"] = float(1.0 - np.sum(err**2) / np.sum((true - true.mean()) ** 2))
    if n >= 3 and not true_constant and not pred_constant:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pearson = pearsonr(true, pred)
            spearman = spearmanr(true, pred)
        out["pearson_r"], out["pearson_p"] = float(pearson.statistic), float(pearson.pvalue)
        out["spearman_rho"], out["spearman_p"] = float(spearman.statistic), float(spearman.pvalue)
    return out


def _is_constant(values: np.ndarray) -> bool:
    return bool(values.size == 0 or np.all(values == values[0]))


def check_pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both score vectors as 1-D float arrays of one length; LesionflowError for NaN, inf or text."""
    true = finite_vector(y_true, "y_true")
    pred = finite_vector(y_pred, "y_pred")
    if true.size != pred.size:
        raise LesionflowError(f"y_true has {true.size} values but y_pred has {pred.size}")
    return true, pred


def finite_vector(values: ArrayLike, what: str) -> np.ndarray:
    """``values`` as a 1-D float array; LesionflowError naming ``what`` for text, NaN or inf."""
    return vectors.finite_vector(values, what, "every score must be a finite number")
