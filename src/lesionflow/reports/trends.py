"""What the epoch table says over time: best and last epoch, least-squares trends over the last epochs.

Must never fill a gap: an undefined value is left out of a fit, and too few points give no trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# A least-squares line through fewer than two points has no slope.
MIN_WINDOW = 2
# Decimals a fitted slope is rounded to before it is judged and shown.
SLOPE_DECIMALS = 12
# The column a regression run's train stage selects its checkpoint by (lowest is kept).
SCORE_COLUMN = "val_srmse"


def is_score_table(metrics_by_epoch: pd.DataFrame) -> bool:
    """Whether the epoch table is a regression run's: val sRMSE and no val Dice."""
    return SCORE_COLUMN in metrics_by_epoch.columns and "val_dice" not in metrics_by_epoch.columns


def best_epoch(metrics_by_epoch: pd.DataFrame) -> int | None:
    """The epoch whose weights are kept: highest val Dice, or lowest val sRMSE for a regression run's
    table; None when that column has no finite value."""
    if is_score_table(metrics_by_epoch):
        val = metrics_by_epoch[SCORE_COLUMN]
        if val.notna().sum() == 0:
            return None
        return int(metrics_by_epoch.loc[val.idxmin(), "epoch"])
    val = metrics_by_epoch["val_dice"]
    if val.notna().sum() == 0:
        return None
    return int(metrics_by_epoch.loc[val.idxmax(), "epoch"])


def final_value(metrics_by_epoch: pd.DataFrame, column: str) -> Any:
    """``column`` at the last epoch; None for an empty table or a column it does not have."""
    if len(metrics_by_epoch) == 0 or column not in metrics_by_epoch.columns:
        return None
    return metrics_by_epoch[column].iloc[-1]


@dataclass(frozen=True)
class Trend:
    """Least-squares line (slope per epoch, intercept at epoch 0) of a series over a span of epochs."""

    slope: float
    intercept: float
    first_epoch: int
    last_epoch: int
    n_epochs: int

    def describe(self) -> str:
        """The slope and its epochs, e.g. 'slope +0.0123 per epoch over epochs 26-30 (5 epochs)'."""
        return (
            f"slope {self.slope:+.4g} per epoch over epochs {self.first_epoch}-{self.last_epoch} "
            f"({self.n_epochs} epochs)"
        )


def loss_gap(metrics_by_epoch: pd.DataFrame) -> pd.Series:
    """Validation minus training loss per epoch (positive: the model fits training data better)."""
    return metrics_by_epoch["val_loss"] - metrics_by_epoch["train_loss"]


def last_epochs_trend(epochs: pd.Series, values: pd.Series, window: int) -> Trend | None:
    """Least-squares slope of ``values`` against ``epochs`` over the last ``window`` epochs.

    Epochs whose value is not finite (an undefined val Dice) are left out of the fit; None when
    fewer than two finite epochs remain, as a line through one point has no slope. A run shorter
    than ``window`` is fitted over all its epochs.
    """
    frame = pd.DataFrame({"epoch": np.asarray(epochs, dtype=float), "value": np.asarray(values, dtype=float)})
    frame = frame.sort_values("epoch").tail(window)
    frame = frame[np.isfinite(frame["value"])]
    if len(frame) < MIN_WINDOW:
        return None
    slope, intercept = np.polyfit(frame["epoch"], frame["value"], 1)
    # Rounding drops the fit's floating-point noise, so a level series reads +0, not +8.55e-17.
    return Trend(
        slope=round(float(slope), SLOPE_DECIMALS),
        intercept=float(intercept),
        first_epoch=int(frame["epoch"].iloc[0]),
        last_epoch=int(frame["epoch"].iloc[-1]),
        n_epochs=len(frame),
    )


def gap_trend(metrics_by_epoch: pd.DataFrame, window: int) -> Trend | None:
    """Slope of (val loss - train loss) over the last ``window`` epochs; None with < 2 epochs."""
    return last_epochs_trend(metrics_by_epoch["epoch"], loss_gap(metrics_by_epoch), window)


def val_dice_trend(metrics_by_epoch: pd.DataFrame, window: int) -> Trend | None:
    """Slope of val Dice over the last ``window`` epochs; None with < 2 epochs of finite val Dice."""
    return last_epochs_trend(metrics_by_epoch["epoch"], metrics_by_epoch["val_dice"], window)


def val_srmse_trend(metrics_by_epoch: pd.DataFrame, window: int) -> Trend | None:
    """Slope of val sRMSE over the last ``window`` epochs (negative: still falling); None with < 2
    epochs of finite val sRMSE."""
    return last_epochs_trend(metrics_by_epoch["epoch"], metrics_by_epoch[SCORE_COLUMN], window)


# Columns lesionflow.model.epoch writes (PREDICTION_COLUMNS), restated so that an edit of the
# training code does not change the report's code fingerprint. Older tables lack them.
VAL_PREDICTED, VAL_TRUE = "val_predicted_fraction", "val_true_fraction"
TRAIN_PREDICTED, TRAIN_TRUE = "train_predicted_fraction", "train_true_fraction"


@dataclass(frozen=True)
class Stretch:
    """The longest stretch of consecutive epochs in which a condition held, and how often it held."""

    first_epoch: int
    last_epoch: int
    n_epochs: int  # epochs in the stretch
    n_held: int  # epochs the condition held anywhere in the table
    n_table: int  # epochs in the table

    def epochs(self, metrics_by_epoch: pd.DataFrame) -> pd.DataFrame:
        """The rows of the table's epochs first_epoch to last_epoch."""
        epoch = metrics_by_epoch["epoch"]
        return metrics_by_epoch[(epoch >= self.first_epoch) & (epoch <= self.last_epoch)]


def longest_stretch(metrics_by_epoch: pd.DataFrame, held: pd.Series) -> Stretch | None:
    """The longest run of consecutive table rows (by epoch) where ``held`` is True; None if none.

    ``held`` is aligned with the table's rows; an undefined condition must be passed as False.
    """
    frame = pd.DataFrame({"epoch": metrics_by_epoch["epoch"].to_numpy(), "held": held.to_numpy(bool)})
    frame = frame.sort_values("epoch").reset_index(drop=True)
    if not frame["held"].any():
        return None
    # Each change of the condition starts a new block; the longest True block wins (earliest on ties).
    block = (frame["held"] != frame["held"].shift()).cumsum()
    sizes = frame[frame["held"]].groupby(block[frame["held"]])["epoch"].agg(["first", "last", "size"])
    longest = sizes.loc[sizes["size"].idxmax()]
    return Stretch(
        first_epoch=int(longest["first"]), last_epoch=int(longest["last"]),
        n_epochs=int(longest["size"]), n_held=int(frame["held"].sum()), n_table=len(frame),
    )  # fmt: skip
