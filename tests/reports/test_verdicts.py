"""Tests of lesionflow.reports.verdicts: each conclusion states its rule and the numbers it judged;
bad rule settings are user errors naming the key; the schema describes every rule."""

import math

import pandas as pd
import pytest
from frames import epochs_frame, trend_frame

from lesionflow.pipeline.config import load_schema
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import trends, verdicts

RULES = {"good_val_dice": 0.7, "overfit_loss_ratio": 1.5}
SLOPE_RULES = {"window": 3, "overfit_gap_slope": 0.01, "improving_slope": 0.001}
# The regression rules, as the schema's defaults set them.
SCORE_RULES = {"good_val_srmse": 0.6, "improving_srmse_slope": 0.002}


def score_frame(val_srmse=(1.2, 0.5, 0.7), train_loss=(0.9, 0.5, 0.3), val_loss=(1.0, 0.7, 0.6)):
    """A regression run's metrics_by_epoch.csv (epochs from 1): val sRMSE lowest at epoch 2 by default."""
    n = len(val_srmse)
    srmse = pd.Series(val_srmse, dtype=float)
    return pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_rmse": 4.0 * srmse,
            "val_rmse": 5.0 * srmse,
            "val_srmse": srmse,
            "val_mae": 4.0 * srmse,
            "val_pearson": 1.0 - srmse / 2,
            "lr": 1e-3,
            "seconds": 1.0,
        }
    )


def test_verdicts_state_each_rule_and_the_numbers_it_judged():
    met, overfit = verdicts.training_verdicts(epochs_frame(), RULES)
    assert "good performance if best val Dice > 0.7" in met
    assert "met; best val Dice 0.8000 (epoch 2) > 0.7" in met
    assert "overfitting if final val loss / final train loss > 1.5" in overfit
    assert "met; 0.6000 / 0.3000 = 2.00 > 1.5" in overfit

    calm = epochs_frame(train_loss=(0.9, 0.6, 0.5), val_loss=(1.0, 0.7, 0.6))
    rules = {"good_val_dice": 0.9, "overfit_loss_ratio": 1.5}
    low, fine = verdicts.training_verdicts(calm, rules)
    assert "not met; best val Dice 0.8000 (epoch 2) <= 0.9" in low
    assert "not met; 0.6000 / 0.5000 = 1.20 <= 1.5" in fine


def test_verdicts_without_finite_val_dice_say_undefined():
    frame = epochs_frame().assign(val_dice=math.nan)
    (verdict,) = verdicts.training_verdicts(frame, {"good_val_dice": 0.7})
    assert "undefined" in verdict


def test_unknown_or_non_numeric_rule_is_a_user_error():
    with pytest.raises(LesionflowError, match="verdict_rules.good_dice: unknown rule"):
        verdicts.training_verdicts(epochs_frame(), {"good_dice": 0.7})
    with pytest.raises(LesionflowError, match="expected a number"):
        verdicts.training_verdicts(epochs_frame(), {"good_val_dice": "high"})


def test_overfitting_rule_is_met_when_the_loss_gap_widens_faster_than_the_threshold():
    # Gaps over the last 3 epochs are 0.10, 0.15, 0.20: least-squares slope 0.05 per epoch.
    frame = trend_frame((0.9, 0.5, 0.4, 0.3), (1.0, 0.6, 0.55, 0.5), (0.3, 0.5, 0.6, 0.6))
    assert trends.gap_trend(frame, 3).slope == pytest.approx(0.05)
    (verdict,) = verdicts.training_verdicts(frame, {"window": 3, "overfit_gap_slope": 0.01})
    assert "overfitting if the slope of (val loss - train loss) over the last 3 epochs > 0.01" in verdict
    assert "met (overfitting); slope +0.05 per epoch over epochs 2-4 (3 epochs) > 0.01." in verdict


def test_overfitting_rule_is_not_met_when_the_loss_gap_is_level_even_if_large():
    # A constant gap of 0.5 has slope 0: a large but steady gap is not a trend.
    frame = trend_frame((0.9, 0.5, 0.4, 0.3), (1.4, 1.0, 0.9, 0.8), (0.3, 0.5, 0.6, 0.6))
    (verdict,) = verdicts.training_verdicts(frame, {"window": 3, "overfit_gap_slope": 0.01})
    assert "not met (no overfitting by this rule); slope +0 per epoch over epochs 2-4" in verdict
    assert "<= 0.01" in verdict


def test_improving_rule_compares_the_val_dice_slope_with_the_threshold():
    # Val Dice 0.50, 0.56, 0.62 over the last 3 epochs: slope 0.06 per epoch.
    rising = trend_frame((0.9, 0.8, 0.7, 0.6), (1.0, 0.9, 0.8, 0.7), (0.2, 0.5, 0.56, 0.62))
    (verdict,) = verdicts.training_verdicts(rising, {"window": 3, "improving_slope": 0.001})
    assert "met (still improving); slope +0.06 per epoch over epochs 2-4 (3 epochs) > 0.001" in verdict
    # 0.60, 0.6005, 0.601: slope 0.0005 per epoch, below 0.001.
    flat = rising.assign(val_dice=(0.2, 0.6, 0.6005, 0.601))
    (verdict,) = verdicts.training_verdicts(flat, {"window": 3, "improving_slope": 0.001})
    assert "not met (not improving by this rule); slope +0.0005 per epoch" in verdict
    assert "<= 0.001." in verdict


def test_trend_rules_are_undefined_with_one_epoch():
    frame = trend_frame((0.9,), (1.0,), (0.3,))
    assert trends.gap_trend(frame, 3) is None
    overfit, improving = verdicts.training_verdicts(frame, SLOPE_RULES)
    for verdict in (overfit, improving):
        assert "undefined; 1 epoch(s) in the table" in verdict
        assert "a slope needs at least 2" in verdict


@pytest.mark.parametrize(
    ("best", "band", "edge"),
    [(0.3999, "bad", "bad: < 0.4"), (0.4, "mid", "mid: 0.4 to < 0.6"), (0.6, "good", "good: >= 0.6")],
)
def test_performance_band_puts_each_band_edge_in_the_upper_band_and_states_the_edges(best, band, edge):
    frame = trend_frame((0.9, 0.8), (1.0, 0.9), (0.1, best))
    (verdict,) = verdicts.training_verdicts(frame, {}, bands=(0.4, 0.6))
    assert "performance band of best val Dice: bad < 0.4 <= mid < 0.6 <= good" in verdict
    assert f"best val Dice {best:.4f} (epoch 2) is in band '{band}' ({edge})." in verdict


def test_performance_band_is_undefined_without_finite_val_dice():
    frame = trend_frame((0.9,), (1.0,), (math.nan,))
    (verdict,) = verdicts.training_verdicts(frame, {}, bands=(0.4, 0.6))
    assert "undefined, no finite val Dice" in verdict


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"windows": 5}, "verdict_rules.windows: unknown rule"),
        ({"window": 1, "improving_slope": 0.001}, "verdict_rules.window: expected a whole number"),
        ({"window": 2.5, "improving_slope": 0.001}, "verdict_rules.window: expected a whole number"),
        ({"overfit_gap_slope": 0.01}, "verdict_rules.overfit_gap_slope: needs verdict_rules.window"),
        ({"window": 5, "improving_slope": True}, "verdict_rules.improving_slope: expected a number"),
    ],
)
def test_bad_trend_rule_settings_are_user_errors_naming_the_key(rules, message):
    with pytest.raises(LesionflowError, match=message.replace(".", r"\.")):
        verdicts.training_verdicts(epochs_frame(), rules)


def test_schema_describes_every_known_rule_and_its_defaults_pass_the_rule_checks():
    block = load_schema()["$defs"]["run"]["properties"]["analyse"]["properties"]
    rules = block["verdict_rules"]["properties"]
    assert set(rules) == set(verdicts.VERDICT_RULES)
    for spec in rules.values():
        assert {"description", "type", "default"} <= set(spec)
    defaults = {name: spec["default"] for name, spec in rules.items()}
    assert verdicts.training_verdicts(epochs_frame(), defaults, block["dice_bands"]["default"])
    assert len(verdicts.training_verdicts(score_frame(), defaults, block["dice_bands"]["default"])) == 4


# --- regression runs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.6, "met (good); best val sRMSE 0.5000 (epoch 2) < 0.6."),
        (0.5, "not met (not good); best val sRMSE 0.5000 (epoch 2) >= 0.5."),
        (0.4, "not met (not good); best val sRMSE 0.5000 (epoch 2) >= 0.4."),
    ],
)
def test_regression_performance_states_the_best_val_srmse_and_the_threshold(threshold, expected):
    (verdict,) = verdicts.training_verdicts(score_frame(), {"good_val_srmse": threshold}, bands=(0.4, 0.6))
    assert verdict == f"Rule 'good performance if best val sRMSE < {threshold}': {expected}"


def test_regression_still_improving_when_val_srmse_falls_faster_than_the_threshold():
    rules = {"window": 3, "improving_srmse_slope": 0.002}
    (falling,) = verdicts.training_verdicts(score_frame((0.9, 0.8, 0.7)), rules)
    assert "still improving if the slope of val sRMSE over the last 3 epochs < -0.002 per epoch" in falling
    assert falling.endswith(
        "met (still improving); slope -0.1 per epoch over epochs 1-3 (3 epochs) < -0.002; "
        "more epochs may lower val sRMSE."
    )
    # 0.700, 0.699, 0.698: falling by 0.001 per epoch, slower than 0.002.
    (flat,) = verdicts.training_verdicts(score_frame((0.7, 0.699, 0.698)), rules)
    assert "not met (not improving by this rule); slope -0.001 per epoch over epochs 1-3" in flat
    assert flat.endswith(">= -0.002.")
    (rising,) = verdicts.training_verdicts(score_frame((0.5, 0.6, 0.7)), rules)
    assert "not met (not improving by this rule); slope +0.1 per epoch" in rising


def test_regression_verdicts_judge_srmse_and_loss_rules_and_skip_the_dice_rules():
    rules = RULES | SLOPE_RULES | SCORE_RULES
    found = verdicts.training_verdicts(score_frame(), rules, bands=(0.4, 0.6))
    assert [v.split("':")[0] for v in found] == [
        "Rule 'good performance if best val sRMSE < 0.6",
        "Rule 'overfitting if final val loss / final train loss > 1.5",
        "Rule 'overfitting if the slope of (val loss - train loss) over the last 3 epochs > 0.01 per epoch",
        "Rule 'still improving if the slope of val sRMSE over the last 3 epochs < -0.002 per epoch",
    ]
    assert "met; 0.6000 / 0.3000 = 2.00 > 1.5" in found[1]
    assert not any("Dice" in verdict for verdict in found)


def test_segmentation_verdicts_are_unchanged_by_the_regression_rules():
    rules = RULES | SLOPE_RULES
    alone = verdicts.training_verdicts(epochs_frame(), rules, bands=(0.4, 0.6))
    assert verdicts.training_verdicts(epochs_frame(), rules | SCORE_RULES, bands=(0.4, 0.6)) == alone


def test_regression_verdicts_are_undefined_without_finite_val_srmse_or_with_one_epoch():
    rules = {"window": 3} | SCORE_RULES
    good, improving = verdicts.training_verdicts(score_frame((math.nan, math.nan, math.nan)), rules)
    assert good.endswith("undefined, no finite val sRMSE in the epoch table.")
    assert "undefined; 3 epoch(s) in the table, fewer than 2 of them with finite val sRMSE" in improving
    _, one = verdicts.training_verdicts(score_frame((0.5,), (0.9,), (1.0,)), rules)
    assert "undefined; 1 epoch(s) in the table" in one


def test_srmse_slope_rule_without_a_window_is_a_user_error():
    message = r"verdict_rules\.improving_srmse_slope: needs verdict_rules\.window"
    with pytest.raises(LesionflowError, match=message):
        verdicts.training_verdicts(score_frame(), {"improving_srmse_slope": 0.002})
