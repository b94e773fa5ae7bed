"""Collapse diagnosis: the epochs a model predicted no lesion, or lesion almost everywhere, on validation.

Must never name a cause its epoch table does not show, nor set a threshold: verdicts passes the rules.

It reads the columns lesionflow.model.epoch records (trends.VAL_PREDICTED and the others); a table
written before them is judged by val Dice alone, and the conclusion says it cannot tell more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from lesionflow.reports.trends import (
    TRAIN_PREDICTED,
    TRAIN_TRUE,
    VAL_PREDICTED,
    VAL_TRUE,
    Stretch,
    longest_stretch,
)


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def _finite(rows: pd.DataFrame, column: str) -> pd.Series | None:
    """The finite values of ``column`` in ``rows``; None when the table lacks it or has none."""
    if column not in rows.columns:
        return None
    values = pd.to_numeric(rows[column], errors="coerce")
    values = values[np.isfinite(values)]
    return values if len(values) else None


def _setting(settings: Mapping[str, Any] | None, key: str) -> str:
    """``train.<key>``, with the run's value when its train settings are known (train_summary.json's
    train_settings; a summary written before they were recorded has none)."""
    if settings is None or key not in settings:
        return f"train.{key}"
    return f"train.{key} ({_yaml_value(settings[key])} in this run)"


def _yaml_value(value: Any) -> str:
    """A setting's value as the config spells it: null, true / false, 0.003."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _stretch_text(stretch: Stretch, epochs: int) -> str:
    return (
        f"for {stretch.n_held} of {stretch.n_table} epochs (longest run: epochs {stretch.first_epoch}-"
        f"{stretch.last_epoch}, {stretch.n_epochs} epochs >= {epochs} = verdict_rules.collapse_epochs)"
    )


def _learning_rate_cause(
    metrics_by_epoch: pd.DataFrame, stretch: Stretch, outcome: str, settings: Mapping[str, Any] | None
) -> list[str]:
    """Where in the learning-rate schedule the collapse began (``lr``: the rate at an epoch's end)."""
    lr = _finite(metrics_by_epoch, "lr")
    if lr is None:
        return []
    epochs = metrics_by_epoch.loc[lr.index, "epoch"]
    peak, peak_epoch = float(lr.max()), int(epochs[lr.idxmax()])
    at_start = lr[epochs == stretch.first_epoch]
    began = f"it began at epoch {stretch.first_epoch}"
    if at_start.empty:
        return []
    start = float(at_start.iloc[0])
    if stretch.first_epoch <= peak_epoch and peak > float(lr.iloc[0]):
        return [
            f"{began} during the learning-rate warm-up ({start:.2e}, rising to its peak {peak:.2e} at "
            f"epoch {peak_epoch}): a peak {_setting(settings, 'learning_rate')} too high for this data "
            f"can push the model to {outcome} before it learns the lesions"
        ]
    if stretch.first_epoch == int(epochs.iloc[0]):
        return [
            f"{began} at a learning rate of {start:.2e} with no warm-up before it: a "
            f"{_setting(settings, 'learning_rate')} too high for this data can push the model to "
            f"{outcome} at once"
        ]
    if peak == float(lr.min()):
        return [f"{began} at the constant learning rate {start:.2e}"]
    return [f"{began}, after the learning-rate peak ({peak:.2e} at epoch {peak_epoch}; {start:.2e} then)"]


def _empty_causes(
    rows: pd.DataFrame, metrics_by_epoch: pd.DataFrame, stretch: Stretch, settings: Mapping[str, Any] | None
) -> list[str]:
    """Why a model may predict nothing, from what the collapsed epochs recorded."""
    causes = []
    train_predicted, train_dice = _finite(rows, TRAIN_PREDICTED), _finite(rows, "train_dice")
    train_true, val_true = _finite(rows, TRAIN_TRUE), _finite(rows, VAL_TRUE)
    if train_predicted is not None and (train_predicted == 0).all():
        causes.append("it predicted no lesion pixel on its training batches either: training collapsed")
    elif train_predicted is not None:
        true = f" (true {_percent(train_true.mean())})" if train_true is not None else ""
        causes.append(
            f"on its training batches it still predicted {_percent(train_predicted.mean())} of pixels as "
            f"lesion{true}, so only validation collapsed: whole validation images differ from the "
            "training patches, or its probabilities stay just below 0.5"
        )
    elif train_dice is not None and (train_dice == 0).all():
        causes.append("train Dice was 0 in those epochs too: training itself failed, not only validation")
    if train_true is not None:
        sparse = (
            f"lesion pixels were {_percent(train_true.mean())} of the training batches' pixels, so "
            f"predicting none is right on {_percent(1 - train_true.mean())} of them"
        )
    elif val_true is not None:
        sparse = f"lesion pixels are {_percent(val_true.mean())} of the validation pixels"
    else:
        sparse = "the lesion fraction of the data is not in this epoch table"
    causes.append(
        f"{sparse}; on sparse tiles a Dice loss averaged per image rewards an empty prediction "
        f"({_setting(settings, 'batch_dice')} pools it over the batch) and "
        f"{_setting(settings, 'positive_oversampling')} sets how many batches hold a lesion"
    )
    return causes + _learning_rate_cause(metrics_by_epoch, stretch, "the all-background solution", settings)


def _flood_causes(
    rows: pd.DataFrame,
    metrics_by_epoch: pd.DataFrame,
    stretch: Stretch,
    ratio: float,
    settings: Mapping[str, Any] | None,
) -> list[str]:
    """Why a model may predict lesion almost everywhere, from what the collapsed epochs recorded."""
    causes = []
    train_predicted, train_true = _finite(rows, TRAIN_PREDICTED), _finite(rows, TRAIN_TRUE)
    val_true = _finite(rows, VAL_TRUE)
    if train_predicted is not None and train_true is not None:
        predicted, true = train_predicted.mean(), train_true.mean()
        shares = f"{_percent(predicted)} of pixels as lesion (true {_percent(true)})"
        if predicted > ratio * true:
            causes.append(f"on its training batches too it predicted {shares}: training itself collapsed")
        else:
            causes.append(f"on its training batches it predicted {shares}, within the ratio")
    if train_true is not None and val_true is not None and train_true.mean() > val_true.mean() > 0:
        causes.append(
            f"training batches held {_percent(train_true.mean())} lesion pixels against "
            f"{_percent(val_true.mean())} in validation ({train_true.mean() / val_true.mean():.3g} times "
            f"as many): {_setting(settings, 'positive_oversampling')} teaches the model a lesion prior far "
            "above validation's"
        )
    return causes + _learning_rate_cause(metrics_by_epoch, stretch, "predicting lesion everywhere", settings)


def empty_collapse_verdict(
    metrics_by_epoch: pd.DataFrame, epochs: int, rule: str, settings: Mapping[str, Any] | None = None
) -> str | None:
    """The conclusion of ``rule`` (its text) when the model predicted no validation pixel as lesion
    for at least ``epochs`` consecutive epochs, with its likely causes; None when it did not.
    With the run's train ``settings`` the causes state the values of the settings they name.

    Without a val_predicted_fraction column, epochs of val Dice exactly 0 count, and it says so.
    """
    predicted = _finite(metrics_by_epoch, VAL_PREDICTED)
    if predicted is not None:
        held = metrics_by_epoch.index.isin(predicted.index[predicted == 0])
        found, how = "met (collapsed); the model predicted no lesion pixel on validation", ""
    else:
        # A table written before the predicted fraction was recorded: Dice exactly 0 on every
        # lesion-positive image is what an empty prediction gives, but so do predictions that all miss.
        held = (pd.to_numeric(metrics_by_epoch["val_dice"], errors="coerce") == 0).to_numpy()
        found = "possibly collapsed; val Dice was exactly 0"
        how = (
            f"; this epoch table has no {VAL_PREDICTED} column (it predates it), so it cannot tell a "
            "model that predicted nothing from one whose predictions all missed the lesions"
        )
    stretch = longest_stretch(metrics_by_epoch, pd.Series(held))
    if stretch is None or stretch.n_epochs < epochs:
        return None
    causes = "; ".join(_empty_causes(stretch.epochs(metrics_by_epoch), metrics_by_epoch, stretch, settings))
    return f"Rule '{rule}': {found} {_stretch_text(stretch, epochs)}{how}; likely causes: {causes}."


def flood_collapse_verdict(
    metrics_by_epoch: pd.DataFrame,
    epochs: int,
    ratio: float,
    rule: str,
    settings: Mapping[str, Any] | None = None,
) -> str | None:
    """The conclusion of ``rule`` (its text) when the fraction of validation pixels predicted lesion
    was above ``ratio`` times the true one for at least ``epochs`` consecutive epochs, with its
    likely causes; None when it was not, or when the table lacks those fractions."""
    predicted, true = _finite(metrics_by_epoch, VAL_PREDICTED), _finite(metrics_by_epoch, VAL_TRUE)
    if predicted is None or true is None:
        return None
    flooded = predicted > ratio * true.reindex(predicted.index)
    held = metrics_by_epoch.index.isin(flooded.index[flooded])
    stretch = longest_stretch(metrics_by_epoch, pd.Series(held))
    if stretch is None or stretch.n_epochs < epochs:
        return None
    rows = stretch.epochs(metrics_by_epoch)
    most = rows.loc[pd.to_numeric(rows[VAL_PREDICTED]).idxmax()]
    causes = _flood_causes(rows, metrics_by_epoch, stretch, ratio, settings)
    return (
        f"Rule '{rule}': met (collapsed to lesion everywhere); the model predicted lesion on more "
        f"than {ratio:g} x the true lesion fraction of validation "
        f"({_percent(true.mean())}) {_stretch_text(stretch, epochs)}, up to {_percent(most[VAL_PREDICTED])} "
        f"of validation pixels (epoch {int(most['epoch'])}); likely causes: {'; '.join(causes)}."
    )
