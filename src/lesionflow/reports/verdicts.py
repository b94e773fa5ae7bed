"""The training report's conclusions, one per configured rule, each stating its number and threshold.

Must never judge a run by anything but the rules it is given, nor invent a threshold or a window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.bands import band_labels, check_bands, dice_band
from lesionflow.reports.labels import MISSING, format_value, is_undefined
from lesionflow.reports.trends import (
    MIN_WINDOW,
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
}
# Rules that fit a slope, so they need verdict_rules.window.
SLOPE_RULES = ("overfit_gap_slope", "improving_slope", "improving_srmse_slope")
# Rules that judge one task's metric: the other task's runs skip them (every run carries them all).
DICE_RULES = ("good_val_dice", "improving_slope")
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


def rule_text(name: str, rules: Mapping[str, Any]) -> str:
    """The configured rule ``name`` in words with its threshold, or '' when it is not configured."""
    if name not in rules:
        return ""
    return VERDICT_RULES[name].format(value=rules[name], window=rules.get("window", MISSING))


def band_rule_text(bands: Sequence[float]) -> str:
    """The performance-band rule in words, with both band edges."""
    low, high = bands
    return f"performance band of best val Dice: bad < {low:g} <= mid < {high:g} <= good"


# ---------------------------------------------------------------- verdicts


def _undefined_trend(rule: str, metrics_by_epoch: pd.DataFrame, what: str) -> str:
    return (
        f"Rule '{rule}': undefined; {len(metrics_by_epoch)} epoch(s) in the table, fewer than "
        f"{MIN_WINDOW} of them with finite {what}; a slope needs at least {MIN_WINDOW}."
    )


def performance_band_verdict(metrics_by_epoch: pd.DataFrame, bands: Sequence[float]) -> str:
    """The quality band (bad/mid/good) of the best val Dice, stating the Dice and the band edges."""
    low, high = check_bands(bands)
    rule = band_rule_text((low, high))
    best = best_epoch(metrics_by_epoch) if len(metrics_by_epoch) else None
    if best is None:
        return f"Rule '{rule}': undefined, no finite val Dice in the epoch table."
    dice = float(metrics_by_epoch["val_dice"].max())
    band = dice_band(dice, (low, high))
    return (
        f"Rule '{rule}': best val Dice {dice:.4f} (epoch {best}) is in band '{band}' "
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
    return f"Rule '{rule}': {conclusion}; {trend.describe()} {'>' if met else '<='} {max_gap_slope}."


def improving_verdict(metrics_by_epoch: pd.DataFrame, window: int, min_slope: float) -> str:
    """Still improving if val Dice rose faster than ``min_slope`` per epoch over the last epochs."""
    rule = rule_text("improving_slope", {"improving_slope": min_slope, "window": window})
    trend = val_dice_trend(metrics_by_epoch, window)
    if trend is None:
        return _undefined_trend(rule, metrics_by_epoch, "val Dice")
    met = trend.slope > min_slope
    conclusion = "met (still improving)" if met else "not met (not improving by this rule)"
    ending = "; more epochs may raise val Dice." if met else "."
    return f"Rule '{rule}': {conclusion}; {trend.describe()} {'>' if met else '<='} {min_slope}{ending}"


def _good_val_dice_verdict(metrics_by_epoch: pd.DataFrame, threshold: float) -> str:
    rule = rule_text("good_val_dice", {"good_val_dice": threshold})
    best = best_epoch(metrics_by_epoch) if len(metrics_by_epoch) else None
    if best is None:
        return f"Rule '{rule}': undefined, no finite val Dice in the epoch table."
    dice = float(metrics_by_epoch["val_dice"].max())
    met = dice > threshold
    return (
        f"Rule '{rule}': {'met' if met else 'not met'}; best val Dice {dice:.4f} "
        f"(epoch {best}) {'>' if met else '<='} {threshold}."
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
        f"{float(train):.4f} = {ratio:.2f} {'>' if met else '<='} {threshold}."
    )


def _good_val_srmse_verdict(metrics_by_epoch: pd.DataFrame, threshold: float) -> str:
    rule = rule_text("good_val_srmse", {"good_val_srmse": threshold})
    best = best_epoch(metrics_by_epoch) if len(metrics_by_epoch) else None
    if best is None:
        return f"Rule '{rule}': undefined, no finite val sRMSE in the epoch table."
    srmse = float(metrics_by_epoch["val_srmse"].min())
    met = srmse < threshold
    return (
        f"Rule '{rule}': {'met (good)' if met else 'not met (not good)'}; best val sRMSE "
        f"{srmse:.4f} (epoch {best}) {'<' if met else '>='} {threshold}."
    )


def improving_srmse_verdict(metrics_by_epoch: pd.DataFrame, window: int, min_fall: float) -> str:
    """Still improving if val sRMSE fell faster than ``min_fall`` per epoch over the last epochs
    (its slope is below ``-min_fall``; sRMSE is lower-better)."""
    rule = rule_text("improving_srmse_slope", {"improving_srmse_slope": min_fall, "window": window})
    trend = val_srmse_trend(metrics_by_epoch, window)
    if trend is None:
        return _undefined_trend(rule, metrics_by_epoch, "val sRMSE")
    met = trend.slope < -min_fall
    conclusion = "met (still improving)" if met else "not met (not improving by this rule)"
    ending = "; more epochs may lower val sRMSE." if met else "."
    return f"Rule '{rule}': {conclusion}; {trend.describe()} {'<' if met else '>='} {-min_fall}{ending}"


def _score_verdicts(metrics_by_epoch: pd.DataFrame, rules: Mapping[str, Any]) -> list[str]:
    verdicts = []
    if "good_val_srmse" in rules:
        verdicts.append(_good_val_srmse_verdict(metrics_by_epoch, rules["good_val_srmse"]))
    if "overfit_loss_ratio" in rules:
        verdicts.append(_loss_ratio_verdict(metrics_by_epoch, rules["overfit_loss_ratio"]))
    if "overfit_gap_slope" in rules:
        verdicts.append(overfitting_verdict(metrics_by_epoch, rules["window"], rules["overfit_gap_slope"]))
    if "improving_srmse_slope" in rules:
        verdicts.append(
            improving_srmse_verdict(metrics_by_epoch, rules["window"], rules["improving_srmse_slope"])
        )
    return verdicts


def training_verdicts(
    metrics_by_epoch: pd.DataFrame, rules: Mapping[str, Any], bands: Sequence[float] | None = None
) -> list[str]:
    """Conclusions from the epoch table, one per configured rule, each stating rule and numbers.

    With ``bands`` the first conclusion is the performance band of the best val Dice.
    ``rules['window']`` is a setting of the slope rules, not a conclusion of its own.
    A regression run's table (val sRMSE, no val Dice) is judged by the sRMSE and loss rules only:
    the Dice rules and ``bands`` are Dice cut points, and the sRMSE rules are skipped for a
    segmentation run's table.
    """
    check_rules(rules)
    if is_score_table(metrics_by_epoch):
        return _score_verdicts(metrics_by_epoch, rules)
    verdicts = [] if bands is None else [performance_band_verdict(metrics_by_epoch, bands)]
    if "good_val_dice" in rules:
        verdicts.append(_good_val_dice_verdict(metrics_by_epoch, rules["good_val_dice"]))
    if "overfit_loss_ratio" in rules:
        verdicts.append(_loss_ratio_verdict(metrics_by_epoch, rules["overfit_loss_ratio"]))
    if "overfit_gap_slope" in rules:
        verdicts.append(
            overfitting_verdict(metrics_by_epoch, rules["window"], rules["overfit_gap_slope"])
        )
    if "improving_slope" in rules:
        verdicts.append(improving_verdict(metrics_by_epoch, rules["window"], rules["improving_slope"]))
    return verdicts
