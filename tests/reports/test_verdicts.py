"""Tests of lesionflow.reports.verdicts: each conclusion states its rule and the numbers it judged;
bad rule settings are user errors naming the key; the schema describes every rule."""

import math

import numpy as np
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


# --- collapse ------------------------------------------------------------------------------------

COLLAPSE_RULES = {"collapse_epochs": 5, "overprediction_ratio": 10}


def collapsed_frame(n=40, empty=range(3, 36)):
    """A run whose model predicts no pixel on validation (and training batches) in epochs ``empty``.

    The learning rate rises to its peak 1e-2 at epoch 12 (warm-up), then falls; lesion pixels are
    0.21% of the training batches and 0.12% of validation.
    """
    epoch = np.arange(1, n + 1)
    off = np.isin(epoch, list(empty))
    return pd.DataFrame(
        {
            "epoch": epoch,
            "train_loss": 0.99,
            "val_loss": 0.99,
            "train_dice": np.where(off, 0.0, 0.05),
            "val_dice": np.where(off, 0.0, 0.04),
            "lr": np.where(epoch <= 12, 1e-2 * epoch / 12, 1e-2 * (41 - epoch) / 29),
            "seconds": 1.0,
            "train_predicted_fraction": np.where(off, 0.0, 0.003),
            "train_true_fraction": 0.0021,
            "val_predicted_fraction": np.where(off, 0.0, 0.002),
            "val_true_fraction": 0.0012,
            "val_images_with_prediction": np.where(off, 0, 7),
        }
    )


def test_a_model_predicting_nothing_for_33_of_40_epochs_is_called_collapsed_with_its_causes():
    (verdict,) = verdicts.training_verdicts(collapsed_frame(), COLLAPSE_RULES)
    assert verdict == (
        "Rule 'collapsed if the model predicts no lesion pixel on validation for >= 5 consecutive "
        "epochs': met (collapsed); the model predicted no lesion pixel on validation for 33 of 40 "
        "epochs (longest run: epochs 3-35, 33 epochs >= 5 = verdict_rules.collapse_epochs); likely "
        "causes: it predicted no lesion pixel on its training batches either: training collapsed; "
        "lesion pixels were 0.21% of the training batches' pixels, so predicting none is right on "
        "99.8% of them; on sparse tiles a Dice loss averaged per image rewards an empty prediction "
        "(train.batch_dice pools it over the batch) and train.positive_oversampling sets how many "
        "batches hold a lesion; it began at epoch 3 during the learning-rate warm-up (2.50e-03, "
        "rising to its peak 1.00e-02 at epoch 12): a peak train.learning_rate too high for this data "
        "can push the model to the all-background solution before it learns the lesions."
    )


def test_collapse_is_said_first_with_the_schema_defaults_and_counts_every_empty_epoch():
    block = load_schema()["$defs"]["run"]["properties"]["analyse"]["properties"]
    defaults = {name: spec["default"] for name, spec in block["verdict_rules"]["properties"].items()}
    frame, bands = collapsed_frame(empty=[*range(3, 36), 38]), block["dice_bands"]["default"]
    found = verdicts.training_verdicts(frame, defaults, bands)
    assert "for 34 of 40 epochs (longest run: epochs 3-35, 33 epochs >= 5" in found[0]
    assert "is in band 'bad'" in found[1]
    # A longer threshold than the 33-epoch run: the same conclusions without the collapse.
    assert found[1:] == verdicts.training_verdicts(frame, {**defaults, "collapse_epochs": 34}, bands)


def test_with_the_runs_train_settings_the_causes_state_their_values():
    settings = {"loss": "DiceCE", "batch_dice": False, "positive_oversampling": 0.0, "learning_rate": 0.01}
    (verdict,) = verdicts.training_verdicts(collapsed_frame(), COLLAPSE_RULES, train_settings=settings)
    assert (
        "(train.batch_dice (false in this run) pools it over the batch) and "
        "train.positive_oversampling (0 in this run) sets how many batches hold a lesion" in verdict
    )
    assert "a peak train.learning_rate (0.01 in this run) too high for this data" in verdict
    flooded = collapsed_frame(n=10, empty=[]).assign(
        val_predicted_fraction=0.5, train_predicted_fraction=0.002, train_true_fraction=0.05
    )
    (flood,) = verdicts.collapse_verdicts(flooded, COLLAPSE_RULES, {"positive_oversampling": 0.9})
    assert "train.positive_oversampling (0.9 in this run) teaches the model a lesion prior" in flood


def test_a_collapse_only_on_validation_is_told_apart_from_a_collapsed_training():
    frame = collapsed_frame().assign(train_predicted_fraction=0.003)
    (verdict,) = verdicts.training_verdicts(frame, COLLAPSE_RULES)
    assert (
        "likely causes: on its training batches it still predicted 0.3% of pixels as lesion (true "
        "0.21%), so only validation collapsed" in verdict
    )


def test_healthy_or_briefly_empty_runs_get_no_collapse_conclusion():
    healthy = epochs_frame().assign(
        train_predicted_fraction=0.003, train_true_fraction=0.002, val_predicted_fraction=0.0015,
        val_true_fraction=0.001, val_images_with_prediction=6,
    )  # fmt: skip
    assert verdicts.collapse_verdicts(healthy, COLLAPSE_RULES) == []
    assert verdicts.training_verdicts(healthy, RULES | COLLAPSE_RULES) == verdicts.training_verdicts(
        healthy, RULES
    )
    # Two runs of 4 empty epochs: neither lasts 5.
    twice_four = collapsed_frame(empty=[3, 4, 5, 6, 9, 10, 11, 12])
    assert verdicts.collapse_verdicts(twice_four, COLLAPSE_RULES) == []
    # Exactly 5 is enough.
    assert verdicts.collapse_verdicts(collapsed_frame(empty=range(3, 8)), COLLAPSE_RULES)


def test_a_model_predicting_lesion_almost_everywhere_is_called_collapsed_the_other_way():
    frame = collapsed_frame(n=10, empty=[]).assign(
        lr=1e-3,
        train_predicted_fraction=[0.7] * 8 + [0.06] * 2,
        train_true_fraction=0.05,
        val_predicted_fraction=[0.6, 0.65, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.004, 0.003],
        val_true_fraction=0.002,
    )
    (verdict,) = verdicts.training_verdicts(frame, COLLAPSE_RULES)
    assert verdict == (
        "Rule 'collapsed to lesion everywhere if the fraction of validation pixels predicted lesion is "
        "> 10 x the true lesion fraction for >= 5 consecutive epochs': met (collapsed to lesion "
        "everywhere); the model predicted lesion on more than 10 x the true lesion fraction of "
        "validation (0.2%) for 8 of 10 epochs (longest run: epochs 1-8, 8 epochs >= 5 = "
        "verdict_rules.collapse_epochs), up to 80% of validation pixels (epoch 3); likely causes: on "
        "its training batches too it predicted 70% of pixels as lesion (true 5%): training itself "
        "collapsed; training batches held 5% lesion pixels against 0.2% in validation (25 times as "
        "many): train.positive_oversampling teaches the model a lesion prior far above validation's; "
        "it began at epoch 1 at a learning rate of 1.00e-03 with no warm-up before it: a "
        "train.learning_rate too high for this data can push the model to predicting lesion "
        "everywhere at once."
    )
    # 4x the true fraction is within a ratio of 10.
    assert verdicts.collapse_verdicts(frame.assign(val_predicted_fraction=0.008), COLLAPSE_RULES) == []


def test_an_old_table_without_predicted_fractions_falls_back_to_val_dice_exactly_zero():
    old = trend_frame([0.9] * 8, [1.0] * 8, [0.1, 0, 0, 0, 0, 0, 0, 0.2]).assign(lr=1e-3)
    (verdict,) = verdicts.training_verdicts(old, COLLAPSE_RULES)
    assert verdict.startswith(
        "Rule 'collapsed if the model predicts no lesion pixel on validation for >= 5 consecutive "
        "epochs': possibly collapsed; val Dice was exactly 0 for 6 of 8 epochs (longest run: epochs "
        "2-7, 6 epochs >= 5 = verdict_rules.collapse_epochs); this epoch table has no "
        "val_predicted_fraction column (it predates it), so it cannot tell a model that predicted "
        "nothing from one whose predictions all missed the lesions; likely causes: the lesion "
        "fraction of the data is not in this epoch table; on sparse tiles"
    )
    assert verdict.endswith("; it began at epoch 2 at the constant learning rate 1.00e-03.")
    falling = verdicts.collapse_verdicts(old.assign(lr=np.linspace(1e-3, 1e-4, 8)), COLLAPSE_RULES)
    assert falling[0].endswith(
        "; it began at epoch 2, after the learning-rate peak (1.00e-03 at epoch 1; 8.71e-04 then)."
    )
    # Undefined val Dice (no lesion-positive image scored) is no evidence of a collapse.
    assert verdicts.collapse_verdicts(old.assign(val_dice=math.nan), COLLAPSE_RULES) == []


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"collapse_epochs": 0}, "verdict_rules.collapse_epochs: expected a whole number >= 1, got 0"),
        ({"collapse_epochs": 2.5}, "verdict_rules.collapse_epochs: expected a whole number >= 1"),
        ({"collapse_epochs": 5, "overprediction_ratio": 1}, "overprediction_ratio: expected a number > 1"),
        ({"overprediction_ratio": 10}, "overprediction_ratio: needs verdict_rules.collapse_epochs"),
    ],
)
def test_bad_collapse_rule_settings_are_user_errors_naming_the_key(rules, message):
    with pytest.raises(LesionflowError, match=message.replace(".", r"\.")):
        verdicts.training_verdicts(collapsed_frame(), rules)


def test_regression_runs_skip_the_collapse_rules():
    assert verdicts.training_verdicts(score_frame(), COLLAPSE_RULES) == []
