"""The training report's conclusions, one per configured rule, each stating its number and threshold.

Must never judge a run by anything but the rules it is given, nor invent a threshold or a window.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.bands import band_labels, check_bands, dice_band
from lesionflow.reports.collapse import empty_collapse_verdict, flood_collapse_verdict
from lesionflow.reports.labels import MISSING, format_value, is_undefined
from lesionflow.reports.trends import (
    MIN_WINDOW,
    Trend,
    best_epoch,
    final_value,
    gap_trend,
    is_score_table,
    val_dice_trend,
    val_srmse_trend,
)

# Rules training_verdicts knows; a config key outside this list is a typo, not a silent no-op.
# The templates are filled with the rule's value and, for the slope rules, the window.
VERDICT_RULES: dict[str, str] = {
    "good_val_dice": "good performance if best val Dice > {value}",
    "overfit_loss_ratio": "overfitting if final val loss / final train loss > {value}",
    "window": "slopes are fitted over the last {value} epochs",
    "overfit_gap_slope": (
        "overfitting if the slope of (val loss - train loss) over the last {window} epochs "
        "> {value} per epoch"
    ),
    "improving_slope": (
        "still improving if the slope of val Dice over the last {window} epochs > {value} per epoch"
    ),
    "good_val_srmse": "good performance if best val sRMSE < {value}",
    "improving_srmse_slope": (
        "still improving if the slope of val sRMSE over the last {window} epochs < -{value} per epoch"
    ),
    "collapse_epochs": (
        "collapsed if the model predicts no lesion pixel on validation for >= {value} consecutive epochs"
    ),
    "overprediction_ratio": (
        "collapsed to lesion everywhere if the fraction of validation pixels predicted lesion is > "
        "{value} x the true lesion fraction for >= {epochs} consecutive epochs"
    ),
}
# Rules that fit a slope, so they need verdict_rules.window.
SLOPE_RULES = ("overfit_gap_slope", "improving_slope", "improving_srmse_slope")
# Rules that count epochs of a collapse, so they need verdict_rules.collapse_epochs.
COLLAPSE_RULES = ("overprediction_ratio",)
# Rules that judge one task's metric: the other task's runs skip them (every run carries them all).
DICE_RULES = ("good_val_dice", "improving_slope", "collapse_epochs", "overprediction_ratio")
SCORE_RULES = ("good_val_srmse", "improving_srmse_slope")


# ---------------------------------------------------------------- rules


def check_rules(rules: Mapping[str, Any]) -> None:
    """Raise naming the key for an unknown rule, a non-numeric value, or a slope rule without a window."""
    for name, value in rules.items():
        if name not in VERDICT_RULES:
            raise LesionflowError(
                f"verdict_rules.{name}: unknown rule; known rules are {', '.join(VERDICT_RULES)}"
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LesionflowError(f"verdict_rules.{name}: expected a number, got {value!r}")
    if "window" in rules and (not isinstance(rules["window"], int) or rules["window"] < MIN_WINDOW):
        raise LesionflowError(
            f"verdict_rules.window: expected a whole number of epochs >= {MIN_WINDOW}, "
            f"got {rules['window']!r}"
        )
    needing_window = [name for name in SLOPE_RULES if name in rules]
    if needing_window and "window" not in rules:
        # No silent default: the number of epochs a slope is fitted over changes the verdict.
        raise LesionflowError(
            f"verdict_rules.{needing_window[0]}: needs verdict_rules.window (epochs the slope is fitted over)"
        )
    _check_collapse_rules(rules)


def _check_collapse_rules(rules: Mapping[str, Any]) -> None:
    epochs = rules.get("collapse_epochs", 1)
    if not isinstance(epochs, int) or epochs < 1:
        raise LesionflowError(f"verdict_rules.collapse_epochs: expected a whole number >= 1, got {epochs!r}")
    if "overprediction_ratio" in rules and rules["overprediction_ratio"] <= 1:
        # At a ratio of 1 or below, a model predicting exactly the true lesion area would be 'collapsed'.
        ratio = rules["overprediction_ratio"]
        raise LesionflowError(f"verdict_rules.overprediction_ratio: expected a number > 1, got {ratio!r}")
    needing_epochs = [name for name in COLLAPSE_RULES if name in rules]
    if needing_epochs and "collapse_epochs" not in rules:
        raise LesionflowError(
            f"verdict_rules.{needing_epochs[0]}: needs verdict_rules.collapse_epochs "
            "(epochs a collapse must last)"
        )


def rule_text(name: str, rules: Mapping[str, Any]) -> str:
    """The configured rule ``name`` in words with its threshold, or '' when it is not configured."""
    if name not in rules:
        return ""
    return VERDICT_RULES[name].format(
        value=rules[name], window=rules.get("window", MISSING), epochs=rules.get("collapse_epochs", MISSING)
    )


def band_rule_text(bands: Sequence[float]) -> str:
    """The performance-band rule in words, with both band edges."""
    low, high = bands
    return f"performance band of best val Dice: bad < {low:g} <= mid < {high:g} <= good"


# ---------------------------------------------------------------- the judged metric


@dataclass(frozen=True)
class Quality:
    """The epoch-table metric a run's training is judged by, and the two rules that judge it."""

    what: str  # its name in the verdicts, e.g. 'val Dice'
    column: str  # its metrics_by_epoch.csv column
    lower_is_better: bool
    good_rule: str  # judges the best epoch's value
    improving_rule: str  # judges its trend over the last epochs
    trend: Callable[[pd.DataFrame, int], Trend | None]
    good_words: tuple[str, str]  # the good rule's conclusion when met, when not


DICE = Quality(
    "val Dice", "val_dice", False, "good_val_dice", "improving_slope", val_dice_trend, ("met", "not met")
)
SRMSE = Quality(
    "val sRMSE", "val_srmse", True, "good_val_srmse", "improving_srmse_slope", val_srmse_trend,
    ("met (good)", "not met (not good)"),
)  # fmt: skip


def quality_of(metrics_by_epoch: pd.DataFrame) -> Quality:
    """The metric an epoch table is judged by: val sRMSE for a regression run's, else val Dice."""
    return SRMSE if is_score_table(metrics_by_epoch) else DICE


# ---------------------------------------------------------------- verdicts


def _relation(met: bool, lower_is_better: bool) -> str:
    """How the judged number compares with the rule's bound: below it meets a lower-better rule."""
    if lower_is_better:
        return "<" if met else ">="
    return ">" if met else "<="


def _undefined_trend(rule: str, metrics_by_epoch: pd.DataFrame, what: str) -> str:
    return (
        f"Rule '{rule}': undefined; {len(metrics_by_epoch)} epoch(s) in the table, fewer than "
        f"{MIN_WINDOW} of them with finite {what}; a slope needs at least {MIN_WINDOW}."
    )


def _best(metrics_by_epoch: pd.DataFrame, quality: Quality) -> tuple[int, float] | None:
    """(epoch, value) of the epoch whose weights are kept; None without a finite value."""
    best = best_epoch(metrics_by_epoch) if len(metrics_by_epoch) else None
    if best is None:
        return None
    values = metrics_by_epoch[quality.column]
    return best, float(values.min() if quality.lower_is_better else values.max())


def _no_best(rule: str, quality: Quality) -> str:
    return f"Rule '{rule}': undefined, no finite {quality.what} in the epoch table."


def performance_band_verdict(metrics_by_epoch: pd.DataFrame, bands: Sequence[float]) -> str:
    """The quality band (bad/mid/good) of the best val Dice, stating the Dice and the band edges."""
    low, high = check_bands(bands)
    rule = band_rule_text((low, high))
    best = _best(metrics_by_epoch, DICE)
    if best is None:
        return _no_best(rule, DICE)
    epoch, dice = best
    band = dice_band(dice, (low, high))
    return (
        f"Rule '{rule}': best val Dice {dice:.4f} (epoch {epoch}) is in band '{band}' "
        f"({band_labels((low, high))[band]})."
    )


def overfitting_verdict(metrics_by_epoch: pd.DataFrame, window: int, max_gap_slope: float) -> str:
    """Overfitting if (val loss - train loss) rose faster than ``max_gap_slope`` per epoch lately.

    The trend of the gap, not its size, is judged: validation loss is often above training loss
    from the first epoch (different data, augmentation), but a gap that keeps widening means the
    model is learning the training images rather than lesions.
    """
    rule = rule_text("overfit_gap_slope", {"overfit_gap_slope": max_gap_slope, "window": window})
    trend = gap_trend(metrics_by_epoch, window)
    if trend is None:
        return _undefined_trend(rule, metrics_by_epoch, "train and val loss")
    met = trend.slope > max_gap_slope
    conclusion = "met (overfitting)" if met else "not met (no overfitting by this rule)"
    return f"Rule '{rule}': {conclusion}; {trend.describe()} {_relation(met, False)} {max_gap_slope}."


def improving_verdict(
    metrics_by_epoch: pd.DataFrame, window: int, min_slope: float, quality: Quality = DICE
) -> str:
    """Still improving if the ``quality`` metric (val Dice unless given) rose faster than
    ``min_slope`` per epoch over the last epochs; a lower-better one (val sRMSE) must fall faster
    than ``min_slope``, i.e. its slope must be below ``-min_slope``."""
    name = quality.improving_rule
    rule = rule_text(name, {name: min_slope, "window": window})
    trend = quality.trend(metrics_by_epoch, window)
    if trend is None:
        return _undefined_trend(rule, metrics_by_epoch, quality.what)
    lower = quality.lower_is_better
    bound = -min_slope if lower else min_slope
    met = trend.slope < bound if lower else trend.slope > bound
    conclusion = "met (still improving)" if met else "not met (not improving by this rule)"
    ending = f"; more epochs may {'lower' if lower else 'raise'} {quality.what}." if met else "."
    return f"Rule '{rule}': {conclusion}; {trend.describe()} {_relation(met, lower)} {bound}{ending}"


def _good_verdict(metrics_by_epoch: pd.DataFrame, threshold: float, quality: Quality) -> str:
    rule = rule_text(quality.good_rule, {quality.good_rule: threshold})
    best = _best(metrics_by_epoch, quality)
    if best is None:
        return _no_best(rule, quality)
    epoch, value = best
    lower = quality.lower_is_better
    met = value < threshold if lower else value > threshold
    return (
        f"Rule '{rule}': {quality.good_words[0 if met else 1]}; best {quality.what} {value:.4f} "
        f"(epoch {epoch}) {_relation(met, lower)} {threshold}."
    )


def _loss_ratio_verdict(metrics_by_epoch: pd.DataFrame, threshold: float) -> str:
    rule = rule_text("overfit_loss_ratio", {"overfit_loss_ratio": threshold})
    train, val = final_value(metrics_by_epoch, "train_loss"), final_value(metrics_by_epoch, "val_loss")
    if is_undefined(train) or is_undefined(val) or float(train) <= 0:
        return (
            f"Rule '{rule}': undefined; final train loss {format_value(train)}, "
            f"final val loss {format_value(val)}."
        )
    ratio = float(val) / float(train)
    met = ratio > threshold
    return (
        f"Rule '{rule}': {'met' if met else 'not met'}; {float(val):.4f} / "
        f"{float(train):.4f} = {ratio:.2f} {_relation(met, False)} {threshold}."
    )


def training_verdicts(
    metrics_by_epoch: pd.DataFrame,
    rules: Mapping[str, Any],
    bands: Sequence[float] | None = None,
    train_settings: Mapping[str, Any] | None = None,
) -> list[str]:
    """Conclusions from the epoch table, one per configured rule, each stating rule and numbers.

    A segmentation run that collapsed (collapse_verdicts) is told so first; a run that did not gets
    no collapse conclusion. With ``bands`` the next conclusion is the performance band of the best
    val Dice. ``rules['window']`` is a setting of the slope rules, not a conclusion of its own.
    A regression run's table (val sRMSE, no val Dice) is judged by the sRMSE and loss rules only:
    the Dice rules and ``bands`` are Dice cut points, and the sRMSE rules are skipped for a
    segmentation run's table. ``train_settings`` (train_summary.json's) let a collapse's causes
    state the values of the settings they name.
    """
    check_rules(rules)
    quality = quality_of(metrics_by_epoch)
    use_bands = bands is not None and quality is DICE
    # A collapse explains every other number of the run, so it is said first.
    verdicts = collapse_verdicts(metrics_by_epoch, rules, train_settings) if quality is DICE else []
    if use_bands:
        verdicts.append(performance_band_verdict(metrics_by_epoch, bands))
    if quality.good_rule in rules:
        verdicts.append(_good_verdict(metrics_by_epoch, rules[quality.good_rule], quality))
    if "overfit_loss_ratio" in rules:
        verdicts.append(_loss_ratio_verdict(metrics_by_epoch, rules["overfit_loss_ratio"]))
    if "overfit_gap_slope" in rules:
        verdicts.append(overfitting_verdict(metrics_by_epoch, rules["window"], rules["overfit_gap_slope"]))
    if quality.improving_rule in rules:
        rate = rules[quality.improving_rule]
        verdicts.append(improving_verdict(metrics_by_epoch, rules["window"], rate, quality))
    return verdicts


def collapse_verdicts(
    metrics_by_epoch: pd.DataFrame, rules: Mapping[str, Any], train_settings: Mapping[str, Any] | None = None
) -> list[str]:
    """Collapse conclusions of a segmentation run's epoch table: none unless it collapsed.

    ``collapse_epochs``: the model predicted no validation pixel as lesion for at least that many
    consecutive epochs; a table without ``val_predicted_fraction`` (written before it was recorded)
    falls back to val Dice exactly 0 and says it cannot tell the two apart. ``overprediction_ratio``:
    it predicted more than that many times the true lesion fraction for as many epochs. Each states
    its epochs and the likely causes the table shows (lesionflow.reports.collapse).
    """
    if "collapse_epochs" not in rules or not len(metrics_by_epoch):
        return []
    epochs = rules["collapse_epochs"]
    rule = rule_text("collapse_epochs", rules)
    found = [empty_collapse_verdict(metrics_by_epoch, epochs, rule, train_settings)]
    if "overprediction_ratio" in rules:
        rule = rule_text("overprediction_ratio", rules)
        ratio = rules["overprediction_ratio"]
        found.append(flood_collapse_verdict(metrics_by_epoch, epochs, ratio, rule, train_settings))
    return [verdict for verdict in found if verdict is not None]
