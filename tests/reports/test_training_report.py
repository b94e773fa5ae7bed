"""Tests of lesionflow.reports.training_report: the key-number table beside its rules, peak memory,
the epoch log, and the executed training-report notebook."""

import json

import numpy as np
import pandas as pd
import pytest
from frames import epochs_frame
from parameter_cells import notebook_parameters
from PIL import Image

from lesionflow.pipeline.config import complete_run_section
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.stages import TASKS
from lesionflow.reports import training_report
from lesionflow.reports.notebook import run_notebook

RULES = {"good_val_dice": 0.7, "overfit_loss_ratio": 1.5}
NOTEBOOK_NAME = "training_report.ipynb"
# The figures the notebook saves, as the stage registry declares them.
FIGURE_NAMES = ("loss_curves", "metric_curves", "lr_schedule")
# The notebook's settings as the pipeline injects them: the analyse section, schema defaults filled.
# As a resolved run receives them: the verdict rules of both tasks (a regression run's included).
SETTINGS = {
    "dice_bands": complete_run_section("analyse", {})["dice_bands"],
    "verdict_rules": complete_run_section("analyse", {}, task="regression")["verdict_rules"],
}


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


def write_run(folder, n_epochs: int, steps_per_epoch: int = 4) -> dict:
    """Tiny training-stage artifacts of an n-epoch run; returns the notebook's file parameters."""
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
    parameters = write_run(tmp_path / "run", n_epochs) | SETTINGS
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
    for name in FIGURE_NAMES:
        assert (figures / f"{name}.svg").stat().st_size > 0
        with Image.open(figures / f"{name}.png") as image:
            colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 1, f"{name}.png is blank"


def test_notebook_restates_no_config_default(repo_root):
    # Defaults live only in the config schema; papermill injects every parameter.
    parameters = notebook_parameters(repo_root / "notebooks" / NOTEBOOK_NAME)
    assert {"dice_bands", "verdict_rules"} <= set(parameters)
    assert all(value is None for name, value in parameters.items() if name != "title")


def test_notebook_without_its_settings_names_each_missing_one(repo_root, tmp_path):
    parameters = write_run(tmp_path / "run", 2)
    message = r"training report notebook: parameter\(s\) not set: dice_bands, verdict_rules"
    with pytest.raises(LesionflowError, match=message):
        run_notebook(repo_root / "notebooks" / NOTEBOOK_NAME, parameters, tmp_path / "report", cwd=tmp_path)


# --- regression runs ---------------------------------------------------------------------------


def score_epochs(val_srmse=(1.2, 0.5, 0.7)) -> pd.DataFrame:
    """A regression run's metrics_by_epoch.csv over epochs 1-3 with its spec's columns."""
    n, srmse = len(val_srmse), np.asarray(val_srmse, dtype=float)
    return pd.DataFrame(
        {
            "epoch": np.arange(1, n + 1),
            "train_loss": np.linspace(30.0, 8.0, n),
            "val_loss": np.linspace(35.0, 11.0, n),
            "train_rmse": 4.0 * srmse,
            "val_rmse": 5.0 * srmse,
            "val_srmse": srmse,
            "val_mae": 4.0 * srmse,
            "val_pearson": 1.0 - srmse / 2,
            "lr": 1e-3,
            "seconds": 2.0,
        }
    )


def test_regression_report_shows_the_best_val_srmse_and_its_trend_beside_their_rules():
    summary = {"task": "regression", "best_epoch": 2, "best_val_srmse": 0.5, "epochs_run": 3}
    rules = {**SETTINGS["verdict_rules"], "window": 3}
    table = training_report.training_report(summary, score_epochs(), rules, (0.4, 0.6)).set_index("quantity")
    assert table.loc["best val sRMSE", "value"] == "0.5000 at epoch 2"
    assert table.loc["best val sRMSE", "rule"] == "good performance if best val sRMSE < 0.6"
    # Val sRMSE 1.2, 0.5, 0.7 over epochs 1-3: least-squares slope -0.25 per epoch.
    assert table.loc["trend of val sRMSE", "value"].startswith("slope -0.25 per epoch over epochs 1-3")
    assert table.loc["trend of val sRMSE", "rule"].endswith("< -0.002 per epoch")
    assert not [quantity for quantity in table.index if "Dice" in quantity]
    log = training_report.epoch_log(score_epochs())
    assert log.set_index("epoch").loc[2, "mark"] == "best"


def test_run_task_is_read_from_train_summary_and_defaults_to_segmentation(tmp_path):
    assert training_report.run_task({}, "train_summary.json") == "segmentation"
    assert training_report.run_task({"task": "regression"}, "train_summary.json") == "regression"
    with pytest.raises(LesionflowError, match="run/train_summary.json: task 'ranking' is not one of"):
        training_report.run_task({"task": "ranking"}, "run/train_summary.json")


def test_epoch_table_is_checked_against_the_run_task(tmp_path):
    path = tmp_path / "metrics_by_epoch.csv"
    score_epochs().to_csv(path, index=False)
    assert training_report.read_epoch_table(path, "regression")["val_srmse"].tolist() == [1.2, 0.5, 0.7]
    with pytest.raises(LesionflowError, match="metrics_by_epoch table with column\\(s\\) val_dice"):
        training_report.read_epoch_table(path, "segmentation")
    score_epochs().drop(columns="val_mae").to_csv(path, index=False)
    missing = "regression run's metrics_by_epoch table with column\\(s\\) val_mae"
    with pytest.raises(LesionflowError, match=missing):
        training_report.read_epoch_table(path, "regression")
    score_epochs().assign(val_dice=0.5).to_csv(path, index=False)
    with pytest.raises(LesionflowError, match="has a val_dice column"):
        training_report.read_epoch_table(path, "regression")


def write_score_run(folder, val_srmse) -> dict:
    """Tiny training-stage artifacts of a regression run; returns the notebook's file parameters."""
    parameters = write_run(folder, len(val_srmse))
    epochs = score_epochs(val_srmse)
    epochs.to_csv(folder / "metrics_by_epoch.csv", index=False)
    best = int(epochs.loc[epochs["val_srmse"].idxmin(), "epoch"])
    summary = json.loads((folder / "train_summary.json").read_text())
    summary = {key: value for key, value in summary.items() if key != "best_val_dice_pos"}
    summary |= {"task": "regression", "best_epoch": best, "best_val_srmse": float(min(val_srmse))}
    (folder / "train_summary.json").write_text(json.dumps(summary))
    return parameters


def test_notebook_of_a_regression_run_judges_srmse_and_writes_its_figures(repo_root, tmp_path):
    parameters = write_score_run(tmp_path / "run", (1.4, 0.9, 0.5)) | SETTINGS
    parameters["title"] = "regression run"
    notebook = repo_root / "notebooks" / NOTEBOOK_NAME
    outputs = run_notebook(notebook, parameters, tmp_path / "report", cwd=tmp_path)
    html = outputs["html"].read_text(encoding="utf-8")
    assert "Task: <strong>regression</strong>" in html
    assert "met (good); best val sRMSE 0.5000 (epoch 3) &lt; 0.6." in html
    assert "met (still improving); slope -0.45 per epoch over epochs 1-3 (3 epochs) &lt; -0.002" in html
    assert "best val Dice" not in html
    figures = tmp_path / "run" / "figures"
    for name in FIGURE_NAMES:
        assert (figures / f"{name}.svg").stat().st_size > 0
        with Image.open(figures / f"{name}.png") as image:
            colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 1, f"{name}.png is blank"


def test_report_knows_the_tasks_of_the_stage_registry():
    assert training_report.TASKS == TASKS


def test_formatted_epoch_log_shows_pixel_fractions_in_percent():
    fractions = [0.0, 0.00004, float("nan")]
    frame = epochs_frame().assign(val_predicted_fraction=fractions, val_images_with_prediction=0)
    shown = training_report.formatted_epoch_log(training_report.epoch_log(frame))
    assert list(shown["val_predicted_fraction"]) == ["0%", "0.004%", "missing"]
    assert list(shown["val_images_with_prediction"]) == [0, 0, 0]
