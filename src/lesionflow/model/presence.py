"""Image-level presence of a dual-head model: combining its head's logits, scoring and tabling them.

Never thresholds a presence score and never fills an undefined one: no head, or one class only, is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.special import expit
from sklearn.metrics import average_precision_score, roc_auc_score

# metrics_by_epoch.csv columns a dual-head model adds: the training presence BCE (unweighted), and
# the head's ranking of validation images by lesion presence.
EPOCH_COLUMNS = ["presence_loss", "val_presence_roc_auc", "val_presence_ap"]
# <subset>_presence.csv, written by every infer run: empty (NaN) scores for a model without a head.
TABLE_COLUMNS = ["image_id", "presence_logit", "presence_probability"]


def mean_probability_logit(logits: torch.Tensor) -> torch.Tensor:
    """The logit of the mean over the first axis of ``sigmoid(logits)``, finite for finite logits.

    ``log(mean sigmoid(l)) - log(mean sigmoid(-l))``, in log space, so that a saturated sigmoid
    (probability exactly 1 in floating point) still gives the finite logit it came from.
    """
    logits = logits.double()
    return torch.logsumexp(F.logsigmoid(logits), dim=0) - torch.logsumexp(F.logsigmoid(-logits), dim=0)


def highest_logit(logits: Sequence[float]) -> float:
    """The highest of an image's window logits; NaN when there is none or any is NaN (no head)."""
    values = np.asarray(logits, dtype=np.float64)
    if values.size == 0 or np.isnan(values).any():
        return math.nan
    return float(values.max())


def presence_metrics(labels: Sequence[bool], logits: Sequence[float]) -> dict[str, float]:
    """ROC-AUC and average precision of ``logits`` for lesion presence; NaN with one class only."""
    y = np.asarray(labels, dtype=bool)
    scores = np.asarray(logits, dtype=np.float64)
    if y.all() or not y.any():
        return {"roc_auc": math.nan, "ap": math.nan}
    return {
        "roc_auc": float(roc_auc_score(y, scores)),
        "ap": float(average_precision_score(y, scores)),
    }


def presence_table(image_ids: Sequence[str], logits: Sequence[float]) -> pd.DataFrame:
    """One row per image: its presence logit and ``sigmoid`` of it (both NaN without a head)."""
    values = np.asarray(logits, dtype=np.float64)
    return pd.DataFrame(
        {"image_id": list(image_ids), "presence_logit": values, "presence_probability": expit(values)},
        columns=TABLE_COLUMNS,
    )
