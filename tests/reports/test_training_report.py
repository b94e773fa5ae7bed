"""The training report: rule verdicts, the key-number table, the epoch log and the training figures."""

import math

import numpy as np
import pandas as pd
import pytest
from frames import epochs_frame

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import training_report

RULES = {"good_val_dice": 0.7, "overfit_loss_ratio": 1.5}


def test_verdicts_state_each_rule_and_the_numbers_it_judged():
    met, overfit = training_report.training_verdicts(epochs_frame(), RULES)
    assert "good performance if best val Dice > 0.7" in met
    assert "met; best val Dice 0.8000 (epoch 2) > 0.7" in met
    assert "overfitting if final val loss / final train loss > 1.5" in overfit
    assert "met; 0.6000 / 0.3000 = 2.00 > 1.5" in overfit

    calm = epochs_frame(train_loss=(0.9, 0.6, 0.5), val_loss=(1.0, 0.7, 0.6))
    rules = {"good_val_dice": 0.9, "overfit_loss_ratio": 1.5}
    low, fine = training_report.training_verdicts(calm, rules)
    assert "not met; best val Dice 0.8000 (epoch 2) <= 0.9" in low
    assert "not met; 0.6000 / 0.5000 = 1.20 <= 1.5" in fine


def test_verdicts_without_finite_val_dice_say_undefined():
    frame = epochs_frame().assign(val_dice=math.nan)
    (verdict,) = training_report.training_verdicts(frame, {"good_val_dice": 0.7})
    assert "undefined" in verdict


def test_training_report_shows_numbers_rules_and_unmeasured_gpu_memory():
    summary = {
        "iterations": 120,
        "wall_time_s": 90.0,
        "best_epoch": 2,
        "best_val_dice_pos": 0.8,
        "final_train_loss": 0.3,
        "final_val_loss": 0.6,
        "epochs_run": 3,
        "stopped_early": True,
        "peak_gpu_memory_mb": None,
        "peak_rss_mb": 512.4,
        "device": "cpu",
    }
    table = training_report.training_report(summary, epochs_frame(), RULES).set_index("quantity")
    assert table.loc["total training time", "value"] == "90.0 s (1.5 min)"
    assert table.loc["iterations", "value"] == "120"
    assert table.loc["epochs run", "value"] == "3 (stopped early)"
    assert table.loc["best val Dice (lesion-positive images)", "value"] == "0.8000 at epoch 2"
    assert table.loc["best val Dice (lesion-positive images)", "rule"].endswith("> 0.7")
    assert table.loc["peak GPU memory", "value"] == "not measured (device cpu)"
    assert table.loc["peak RSS", "value"] == "512 MB"
    # A key absent from train_summary.json is shown as missing, never invented.
    partial = training_report.training_report({}, epochs_frame(), {}).set_index("quantity")
    assert partial.loc["iterations", "value"] == "missing"
    assert partial.loc["final train loss", "value"] == "0.3000"


def test_epoch_log_keeps_every_kth_best_and_last_epoch():
    frame = pd.DataFrame({"epoch": range(1, 51), "train_loss": 1.0, "val_loss": 1.0})
    frame["val_dice"] = np.where(frame["epoch"] == 14, 0.9, 0.1)
    log = training_report.epoch_log(frame, max_rows=10)
    assert log.attrs["every"] == 5
    assert list(log["epoch"]) == [1, 6, 11, 14, 16, 21, 26, 31, 36, 41, 46, 50]
    assert log.set_index("epoch").loc[14, "mark"] == "best"
    assert log.set_index("epoch").loc[50, "mark"] == "last"


def test_unknown_or_non_numeric_rule_is_a_user_error():
    with pytest.raises(LesionflowError, match="verdict_rules.good_dice: unknown rule"):
        training_report.training_verdicts(epochs_frame(), {"good_dice": 0.7})
    with pytest.raises(LesionflowError, match="expected a number"):
        training_report.training_verdicts(epochs_frame(), {"good_val_dice": "high"})


def test_epoch_curves_have_one_panel_per_metric_with_train_val_and_best_epoch():
    fig = training_report.plot_epoch_curves(epochs_frame(), bands=(0.4, 0.6))
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["loss", "dice", "iou", "pearson"]
    assert axes[1].get_title() == "Dice, lesion-positive images"
    for ax in axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["train", "val", "best epoch 2"]
    # Three shaded quality bands on the Dice and IoU panels only.
    assert [len(ax.patches) for ax in axes] == [0, 3, 3, 0]


def test_lr_figure_plots_lr_and_loss_per_step():
    steps = pd.DataFrame({"step": range(6), "epoch": [1] * 3 + [2] * 3, "lr": 1e-3, "loss": 0.5})
    fig = training_report.plot_lr(steps)
    assert [len(ax.get_lines()) for ax in fig.get_axes()] == [1, 1]
    assert len(training_report.plot_lr(steps.drop(columns="loss")).get_axes()) == 1


# ---------------------------------------------------------------- trend rules

SLOPE_RULES = {"window": 3, "overfit_gap_slope": 0.01, "improving_slope": 0.001}


def trend_frame(train_loss, val_loss, val_dice) -> pd.DataFrame:
    n = len(train_loss)
    return pd.DataFrame(
        {"epoch": range(1, n + 1), "train_loss": train_loss, "val_loss": val_loss, "val_dice": val_dice}
    )


def test_overfitting_rule_is_met_when_the_loss_gap_widens_faster_than_the_threshold():
    # Gaps over the last 3 epochs are 0.10, 0.15, 0.20: least-squares slope 0.05 per epoch.
    frame = trend_frame((0.9, 0.5, 0.4, 0.3), (1.0, 0.6, 0.55, 0.5), (0.3, 0.5, 0.6, 0.6))
    assert training_report.gap_trend(frame, 3).slope == pytest.approx(0.05)
    (verdict,) = training_report.training_verdicts(frame, {"window": 3, "overfit_gap_slope": 0.01})
    assert "overfitting if the slope of (val loss - train loss) over the last 3 epochs > 0.01" in verdict
    assert "met (overfitting); slope +0.05 per epoch over epochs 2-4 (3 epochs) > 0.01." in verdict


def test_overfitting_rule_is_not_met_when_the_loss_gap_is_level_even_if_large():
    # A constant gap of 0.5 has slope 0: a large but steady gap is not a trend.
    frame = trend_frame((0.9, 0.5, 0.4, 0.3), (1.4, 1.0, 0.9, 0.8), (0.3, 0.5, 0.6, 0.6))
    (verdict,) = training_report.training_verdicts(frame, {"window": 3, "overfit_gap_slope": 0.01})
    assert "not met (no overfitting by this rule); slope +0 per epoch over epochs 2-4" in verdict
    assert "<= 0.01" in verdict


def test_improving_rule_compares_the_val_dice_slope_with_the_threshold():
    # Val Dice 0.50, 0.56, 0.62 over the last 3 epochs: slope 0.06 per epoch.
    rising = trend_frame((0.9, 0.8, 0.7, 0.6), (1.0, 0.9, 0.8, 0.7), (0.2, 0.5, 0.56, 0.62))
    (verdict,) = training_report.training_verdicts(rising, {"window": 3, "improving_slope": 0.001})
    assert "met (still improving); slope +0.06 per epoch over epochs 2-4 (3 epochs) > 0.001" in verdict
    # 0.60, 0.6005, 0.601: slope 0.0005 per epoch, below 0.001.
    flat = rising.assign(val_dice=(0.2, 0.6, 0.6005, 0.601))
    (verdict,) = training_report.training_verdicts(flat, {"window": 3, "improving_slope": 0.001})
    assert "not met (not improving by this rule); slope +0.0005 per epoch" in verdict
    assert "<= 0.001." in verdict


def test_slope_uses_every_epoch_of_a_run_shorter_than_the_window_and_skips_undefined_dice():
    frame = trend_frame((0.9, 0.7), (1.0, 0.9), (0.2, 0.4))
    trend = training_report.val_dice_trend(frame, 5)
    assert (trend.slope, trend.first_epoch, trend.last_epoch, trend.n_epochs) == pytest.approx(
        (0.2, 1, 2, 2)
    )
    # An epoch with undefined val Dice is left out of the fit, not read as 0.
    gappy = trend_frame((0.9, 0.8, 0.7), (1.0, 0.9, 0.8), (0.2, math.nan, 0.6))
    assert training_report.val_dice_trend(gappy, 3).slope == pytest.approx(0.2)


def test_trend_rules_are_undefined_with_one_epoch():
    frame = trend_frame((0.9,), (1.0,), (0.3,))
    assert training_report.gap_trend(frame, 3) is None
    overfit, improving = training_report.training_verdicts(frame, SLOPE_RULES)
    for verdict in (overfit, improving):
        assert "undefined; 1 epoch(s) in the table" in verdict
        assert "a slope needs at least 2" in verdict


@pytest.mark.parametrize(
    ("best", "band", "edge"),
    [(0.3999, "bad", "bad: < 0.4"), (0.4, "mid", "mid: 0.4 to < 0.6"), (0.6, "good", "good: >= 0.6")],
)
def test_performance_band_puts_each_band_edge_in_the_upper_band_and_states_the_edges(best, band, edge):
    frame = trend_frame((0.9, 0.8), (1.0, 0.9), (0.1, best))
    (verdict,) = training_report.training_verdicts(frame, {}, bands=(0.4, 0.6))
    assert "performance band of best val Dice: bad < 0.4 <= mid < 0.6 <= good" in verdict
    assert f"best val Dice {best:.4f} (epoch 2) is in band '{band}' ({edge})." in verdict


def test_performance_band_is_undefined_without_finite_val_dice():
    frame = trend_frame((0.9,), (1.0,), (math.nan,))
    (verdict,) = training_report.training_verdicts(frame, {}, bands=(0.4, 0.6))
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
        training_report.training_verdicts(epochs_frame(), rules)


@pytest.mark.parametrize("bands", [(0.6, 0.4), (0.4,), (0.4, 1.2), ("low", "high")])
def test_dice_bands_must_be_two_increasing_numbers_in_0_1(bands):
    with pytest.raises(LesionflowError, match="dice_bands"):
        training_report.check_bands(bands)


def test_report_table_shows_the_slopes_beside_their_rules():
    rules = {"window": 3, "overfit_gap_slope": 0.01, "improving_slope": 0.001}
    table = training_report.training_report({}, epochs_frame(), rules, (0.4, 0.6)).set_index("quantity")
    # Gaps 0.1, 0.2, 0.3 and val Dice 0.3, 0.8, 0.6 over epochs 1-3: slopes 0.1 and 0.15.
    assert table.loc["trend of val loss - train loss", "value"].startswith("slope +0.1 per epoch")
    assert table.loc["trend of val Dice", "value"].startswith("slope +0.15 per epoch")
    assert table.loc["trend of val Dice", "rule"].endswith("> 0.001 per epoch")
    assert "bad < 0.4 <= mid < 0.6 <= good" in table.loc["best val Dice (lesion-positive images)", "rule"]


def test_peak_memory_says_whether_it_is_gpu_memory_or_rss():
    summary = {"peak_gpu_memory_mb": None, "peak_rss_mb": 812.2, "device": "cpu"}
    cpu = training_report.peak_memory_text(summary)
    assert "Peak GPU memory: not measured (device cpu)" in cpu
    assert "peak RSS (resident memory of the training process) 812 MB" in cpu
    gpu = training_report.peak_memory_text({"peak_gpu_memory_mb": 2048.4, "device": "cuda:0"})
    assert gpu == "Peak GPU memory (allocated by PyTorch on cuda:0): 2048 MB."


def test_formatted_epoch_log_keeps_small_learning_rates_readable():
    shown = training_report.formatted_epoch_log(training_report.epoch_log(epochs_frame()))
    assert list(shown["lr"]) == ["1.00e-04", "1.00e-03", "1.00e-05"]
    assert list(shown["val_dice"]) == ["0.3000", "0.8000", "0.6000"]


def test_loss_figure_draws_the_fitted_gap_trend_the_rule_judges():
    frame = trend_frame((0.9, 0.5, 0.4, 0.3), (1.0, 0.6, 0.55, 0.5), (0.3, 0.5, 0.6, 0.6))
    loss_ax, gap_ax = training_report.plot_loss_curves(frame, window=3).get_axes()
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation", "best epoch 3"]
    assert loss_ax.get_ylabel() == "loss" and gap_ax.get_ylabel() == "val loss - train loss"
    fit = next(line for line in gap_ax.get_lines() if line.get_label().startswith("fit"))
    assert fit.get_label() == "fit, epochs 2-4: +0.05/epoch"
    assert list(fit.get_xdata()) == [2, 4]


def test_metric_figure_has_dice_iou_pearson_panels_and_shades_only_dice():
    fig = training_report.plot_metric_curves(epochs_frame(), bands=(0.4, 0.6))
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["Dice", "IoU (Jaccard)", "Pearson correlation"]
    assert all(ax.get_xlabel() == "epoch" and ax.get_ylabel() for ax in axes)
    assert [len(ax.patches) for ax in axes] == [3, 0, 0]
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()][-1] == "Dice band good: >= 0.6"


# ---------------------------------------------------------------- schema and notebook agree

NOTEBOOK_NAME = "training_report.ipynb"


def notebook_parameters(repo_root) -> dict:
    import nbformat

    notebook = nbformat.read(repo_root / "notebooks" / NOTEBOOK_NAME, as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    values: dict = {}
    exec(cell.source, values)  # noqa: S102 - the notebook's own literal defaults
    return values


def test_schema_verdict_rules_describe_every_known_rule_with_the_notebook_defaults(repo_root):
    from lesionflow.pipeline.config import load_schema

    block = load_schema()["$defs"]["run"]["properties"]["analyse"]["properties"]
    rules = block["verdict_rules"]["properties"]
    assert set(rules) == set(training_report.VERDICT_RULES)
    for spec in rules.values():
        assert {"description", "type", "default"} <= set(spec)
    defaults = {name: spec["default"] for name, spec in rules.items()}
    parameters = notebook_parameters(repo_root)
    assert parameters["verdict_rules"] == defaults
    assert parameters["dice_bands"] == block["dice_bands"]["default"]
    # The defaults themselves must pass the rule checks.
    assert training_report.training_verdicts(epochs_frame(), defaults, parameters["dice_bands"])


def write_run(folder, n_epochs: int, steps_per_epoch: int = 4) -> dict:
    """Tiny training-stage artifacts of an n-epoch run; returns the notebook's file parameters."""
    import json

    folder.mkdir()
    epochs = np.arange(1, n_epochs + 1)
    dice = np.linspace(0.3, 0.7, n_epochs)
    pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": np.linspace(1.0, 0.4, n_epochs),
            "val_loss": np.linspace(1.1, 0.7, n_epochs),
            "train_dice": dice + 0.1,
            "val_dice": dice,
            "train_iou": dice,
            "val_iou": dice - 0.1,
            "train_pearson": dice + 0.1,
            "val_pearson": dice,
            "lr": 1e-3,
            "seconds": 2.0,
        }
    ).to_csv(folder / "metrics_by_epoch.csv", index=False)
    steps = np.arange(1, n_epochs * steps_per_epoch + 1)
    pd.DataFrame(
        {
            "step": steps,
            "epoch": (steps - 1) // steps_per_epoch + 1,
            "lr": np.linspace(1e-3, 1e-5, len(steps)),
            "loss": np.linspace(1.0, 0.4, len(steps)),
        }
    ).to_csv(folder / "lr_by_step.csv", index=False)
    summary = {
        "iterations": int(len(steps)),
        "wall_time_s": 2.0 * n_epochs,
        "best_epoch": n_epochs,
        "best_val_dice_pos": float(dice[-1]),
        "final_train_loss": 0.4,
        "final_val_loss": 0.7,
        "epochs_run": n_epochs,
        "stopped_early": False,
        "peak_gpu_memory_mb": None,
        "peak_rss_mb": 300.0,
        "device": "cpu",
    }
    (folder / "train_summary.json").write_text(json.dumps(summary))
    return {
        "metrics_by_epoch": str(folder / "metrics_by_epoch.csv"),
        "lr_by_step": str(folder / "lr_by_step.csv"),
        "train_summary": str(folder / "train_summary.json"),
        "figures_dir": str(folder / "figures"),
    }


@pytest.mark.parametrize("n_epochs", [3, 1])
def test_notebook_writes_html_with_verdicts_and_non_blank_figures(repo_root, tmp_path, n_epochs):
    from PIL import Image

    from lesionflow.reports.notebook import run_notebook

    parameters = write_run(tmp_path / "run", n_epochs)
    parameters["title"] = f"test run, {n_epochs} epoch(s)"
    out_dir = tmp_path / "report"
    outputs = run_notebook(repo_root / "notebooks" / NOTEBOOK_NAME, parameters, out_dir, cwd=tmp_path)

    html = outputs["html"].read_text(encoding="utf-8")
    assert outputs["html"] == out_dir / "training_report.html"
    assert "performance band of best val Dice: bad" in html
    assert "Peak GPU memory: not measured (device cpu)" in html
    if n_epochs == 1:
        assert "undefined; 1 epoch(s) in the table" in html
    else:
        assert "met (overfitting)" in html or "no overfitting by this rule" in html
        assert "met (still improving); slope +0.2 per epoch over epochs 1-3" in html
    figures = tmp_path / "run" / "figures"
    for name in training_report.FIGURE_NAMES:
        assert (figures / f"{name}.svg").stat().st_size > 0
        with Image.open(figures / f"{name}.png") as image:
            colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 1, f"{name}.png is blank"
