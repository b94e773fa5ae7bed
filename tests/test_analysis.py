"""The analyse stage: band edges, head/tail selection, rule verdicts, figures, and the notebook."""

import json
import math
import subprocess
import sys

import nbformat
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lesionflow import analysis
from lesionflow.errors import LesionflowError

RULES = {"good_val_dice": 0.7, "overfit_loss_ratio": 1.5}


def per_image_frame() -> pd.DataFrame:
    """Four lesion-positive images, one lesion-free clean (NaN Dice), one lesion-free hit."""
    return pd.DataFrame(
        {
            "image_id": ["0001_1", "0001_2", "0002_1", "0003_1", "0004_1", "0005_1"],
            "subject": ["0001", "0001", "0002", "0003", "0004", "0005"],
            "dice": [0.8123, 0.3, 0.55, 0.0, math.nan, 0.0],
            "iou": [0.68, 0.18, 0.38, 0.0, math.nan, 0.0],
            "precision": [0.9, 0.4, 0.6, 0.0, math.nan, 0.0],
            "recall": [0.75, 0.25, 0.5, 0.0, math.nan, math.nan],
            "pearson": [0.8, 0.3, 0.5, -0.01, math.nan, math.nan],
            "gt_pixels": [16, 12, 9, 4, 0, 0],
            "pred_pixels": [14, 9, 10, 0, 0, 5],
            "presence_score": [0.95, 0.7, 0.8, 0.3, 0.2, 0.9],
            "presence_pred": [True, True, True, False, False, True],
        }
    )


def epochs_frame(train_loss=(0.9, 0.5, 0.3), val_loss=(1.0, 0.7, 0.6)) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "train_dice": [0.2, 0.5, 0.7],
            "val_dice": [0.3, 0.8, 0.6],
            "train_iou": [0.1, 0.35, 0.55],
            "val_iou": [0.2, 0.65, 0.45],
            "train_pearson": [0.2, 0.5, 0.7],
            "val_pearson": [0.3, 0.7, 0.6],
            "lr": [1e-4, 1e-3, 1e-5],
            "seconds": [1.0, 1.0, 1.0],
        }
    )


# ---------------------------------------------------------------- pure functions


def test_dice_band_edges_belong_to_the_upper_band_and_nan_is_undefined():
    assert analysis.dice_band(0.3999) == "bad"
    assert analysis.dice_band(0.4) == "mid"
    assert analysis.dice_band(0.5999) == "mid"
    assert analysis.dice_band(0.6) == "good"
    assert analysis.dice_band(0.45, bands=(0.4, 0.5)) == "mid"
    assert analysis.dice_band(0.5, bands=(0.4, 0.5)) == "good"
    for undefined in (math.nan, np.float32("nan"), None):
        assert analysis.dice_band(undefined) == "undefined"


def test_head_tail_excludes_nan_dice_and_lesion_free_images():
    best, worst = analysis.head_tail(per_image_frame(), n=2)
    assert list(best["image_id"]) == ["0001_1", "0002_1"]
    # 0005_1 has Dice 0 but no reference lesion: it is a false positive, not a worst segmentation.
    assert list(worst["image_id"]) == ["0003_1", "0001_2"]
    everything, _ = analysis.head_tail(per_image_frame(), n=10)
    assert set(everything["image_id"]) == {"0001_1", "0001_2", "0002_1", "0003_1"}


def test_verdicts_state_each_rule_and_the_numbers_it_judged():
    met, overfit = analysis.training_verdicts(epochs_frame(), RULES)
    assert "good performance if best val Dice > 0.7" in met
    assert "met; best val Dice 0.8000 (epoch 2) > 0.7" in met
    assert "overfitting if final val loss / final train loss > 1.5" in overfit
    assert "met; 0.6000 / 0.3000 = 2.00 > 1.5" in overfit

    calm = epochs_frame(train_loss=(0.9, 0.6, 0.5), val_loss=(1.0, 0.7, 0.6))
    rules = {"good_val_dice": 0.9, "overfit_loss_ratio": 1.5, "improving_last_epochs": 2}
    low, fine, improving = analysis.training_verdicts(calm, rules)
    assert "not met; best val Dice 0.8000 (epoch 2) <= 0.9" in low
    assert "not met; 0.6000 / 0.5000 = 1.20 <= 1.5" in fine
    assert "met; best val Dice at epoch 2, last epoch 3" in improving


def test_verdicts_without_finite_val_dice_say_undefined():
    frame = epochs_frame().assign(val_dice=math.nan)
    (verdict,) = analysis.training_verdicts(frame, {"good_val_dice": 0.7})
    assert "undefined" in verdict


def test_unknown_or_non_numeric_rule_is_a_user_error():
    with pytest.raises(LesionflowError, match="verdict_rules.good_dice: unknown rule"):
        analysis.training_verdicts(epochs_frame(), {"good_dice": 0.7})
    with pytest.raises(LesionflowError, match="expected a number"):
        analysis.training_verdicts(epochs_frame(), {"good_val_dice": "high"})


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
    table = analysis.training_report(summary, epochs_frame(), RULES).set_index("quantity")
    assert table.loc["total training time", "value"] == "90.0 s (1.5 min)"
    assert table.loc["iterations", "value"] == "120"
    assert table.loc["epochs run", "value"] == "3 (stopped early)"
    assert table.loc["best val Dice (lesion-positive images)", "value"] == "0.8000 at epoch 2"
    assert table.loc["best val Dice (lesion-positive images)", "rule"].endswith("> 0.7")
    assert table.loc["peak GPU memory", "value"] == "not measured (device cpu)"
    assert table.loc["peak RSS", "value"] == "512 MB"
    # A key absent from train_summary.json is shown as missing, never invented.
    partial = analysis.training_report({}, epochs_frame(), {}).set_index("quantity")
    assert partial.loc["iterations", "value"] == "missing"
    assert partial.loc["final train loss", "value"] == "0.3000"


def test_summary_table_shows_undefined_with_n_and_missing_keys():
    section = {
        "n_images": 6,
        "n_gt_positive": 4,
        "n_gt_empty": 2,
        "dice_pos": 0.4321,
        "dice_pos_n": 4,
        "dice_all": 0.5,
        "dice_all_convention": "empty vs empty counts as 1",
        "false_positive_rate_empty": 0.5,
        "presence_roc_auc": None,
    }
    table = analysis.summary_table(section).set_index("metric")
    assert table.loc["Dice, lesion-positive images", "value"] == "0.4321"
    assert table.loc["Dice, lesion-positive images", "n"] == "4"
    assert table.loc["lesion presence ROC-AUC", "value"] == "undefined (n=6)"
    assert table.loc["lesion presence average precision", "value"] == "missing"
    assert table.loc["Dice, all images", "note"] == "convention: empty vs empty counts as 1"


def test_lesion_free_report_counts_false_positives():
    counts, listed = analysis.lesion_free_report(per_image_frame())
    assert list(counts["value"]) == ["2", "1", "0.5000"]
    assert list(listed["image_id"]) == ["0005_1"]


def test_split_table_adds_total_and_overlap_finds_shared_subjects():
    summary = pd.DataFrame(
        {"split": ["test", "train", "val"], "n": [2, 6, 2], "lesion_positive": [1, 3, 2]}
    )
    table = analysis.split_table(summary)
    assert list(table["split"]) == ["train", "val", "test", "all"]
    assert table.iloc[-1][["n", "lesion_positive", "lesion_free"]].tolist() == [10, 6, 4]
    assert table.iloc[-1]["lesion_rate"] == pytest.approx(0.6)
    split = pd.DataFrame(
        {
            "image_id": ["a", "b", "c"],
            "subject": ["s1", "s1", "s2"],
            "split": ["train", "val", "test"],
        }
    )
    overlap = analysis.subject_overlap(split).set_index("splits")
    assert overlap.loc["train / val", "shared_subjects"] == 1
    assert overlap.loc["train / test", "shared_subjects"] == 0


def test_epoch_log_keeps_every_kth_best_and_last_epoch():
    frame = pd.DataFrame({"epoch": range(1, 51), "train_loss": 1.0, "val_loss": 1.0})
    frame["val_dice"] = np.where(frame["epoch"] == 14, 0.9, 0.1)
    log = analysis.epoch_log(frame, max_rows=10)
    assert log.attrs["every"] == 5
    assert list(log["epoch"]) == [1, 6, 11, 14, 16, 21, 26, 31, 36, 41, 46, 50]
    assert log.set_index("epoch").loc[14, "mark"] == "best"
    assert log.set_index("epoch").loc[50, "mark"] == "last"


def test_read_table_names_the_file_and_missing_column(tmp_path):
    path = tmp_path / "per_image_test.csv"
    pd.DataFrame({"image_id": ["0042_1"], "dice": [0.5]}).to_csv(path, index=False)
    with pytest.raises(LesionflowError, match="per_image_test.csv.*gt_pixels, pred_pixels"):
        analysis.read_table(path, "per_image")
    pd.DataFrame(
        {"image_id": ["0042"], "dice": [0.5], "gt_pixels": [1], "pred_pixels": [1]}
    ).to_csv(path, index=False)
    assert analysis.read_table(path, "per_image")["image_id"].tolist() == ["0042"]


# ---------------------------------------------------------------- figures


def test_epoch_curves_have_one_panel_per_metric_with_train_val_and_best_epoch():
    fig = analysis.plot_epoch_curves(epochs_frame(), bands=(0.4, 0.6))
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["loss", "dice", "iou", "pearson"]
    for ax in axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["train", "val", "best epoch 2"]
    # Three shaded quality bands on the Dice and IoU panels only.
    assert [len(ax.patches) for ax in axes] == [0, 3, 3, 0]


def test_lr_figure_plots_lr_and_loss_per_step():
    steps = pd.DataFrame({"step": range(6), "epoch": [1] * 3 + [2] * 3, "lr": 1e-3, "loss": 0.5})
    fig = analysis.plot_lr(steps)
    assert [len(ax.get_lines()) for ax in fig.get_axes()] == [1, 1]
    assert len(analysis.plot_lr(steps.drop(columns="loss")).get_axes()) == 1


def test_dice_scatter_colours_positive_images_by_band_and_counts_lesion_free_hits():
    fig = analysis.plot_dice_per_image(per_image_frame(), bands=(0.4, 0.5), title="Test")
    (ax,) = fig.get_axes()
    sizes = [len(c.get_offsets()) for c in ax.collections]
    assert sizes == [2, 0, 2]  # bad: 0.3, 0.0; mid: none; good: 0.55, 0.8123
    assert "4 lesion-positive images" in ax.get_title()
    assert "false positive: 1 of 2" in ax.get_title()
    assert len(ax.get_lines()) == 2  # the two band edges
    # No image is plotted at Dice 1 (lesion-free images are never scored as perfect).
    assert (
        max(float(c.get_offsets()[:, 1].max()) for c in ax.collections if len(c.get_offsets())) < 1
    )


def test_example_grid_has_four_panels_per_image():
    rng = np.random.default_rng(0)
    images = [rng.random((3, 16, 16), dtype=np.float32), rng.random((1, 16, 16), dtype=np.float32)]
    masks = [np.zeros((16, 16), bool), np.eye(16, dtype=bool)]
    probs = [rng.random((16, 16), dtype=np.float32) for _ in range(2)]
    fig = analysis.plot_examples(["a", "b"], images, masks, probs, masks, titles=["A", "B"])
    axes = fig.get_axes()
    assert len(axes) == 8
    assert [len(ax.get_images()) for ax in axes[:4]] == [1, 2, 1, 2]
    assert axes[4].get_ylabel() == "B"


# ---------------------------------------------------------------- running notebooks


def write_tiny_run(folder) -> dict:
    """Every artifact the analysis notebook reads, for six 16x16 images; returns its parameters."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = per_image_frame()
    rng = np.random.default_rng(1)
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    probs = {}
    for index, row in frame.iterrows():
        mask = np.zeros((16, 16), dtype=bool)
        side = int(math.isqrt(int(row["gt_pixels"])))
        mask[2 : 2 + side, 3 : 3 + side] = True
        pixels = (rng.random((16, 16, 3)) * 120).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{row['image_id']}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(
            folder / "masks" / f"{row['image_id']}.png"
        )
        prob = np.where(np.roll(mask, index % 3, axis=1), 0.9, 0.05).astype(np.float16)
        if row["image_id"] == "0005_1":
            prob[10:12, 10:13] = 0.95  # the false positive on a lesion-free image
        probs[row["image_id"]] = prob
    np.savez_compressed(folder / "test.npz", **probs)
    pd.DataFrame(
        {
            "image": [f"images/{i}.png" for i in frame["image_id"]],
            "mask": [f"masks/{i}.png" for i in frame["image_id"]],
            "subject": frame["subject"],
            "image_id": frame["image_id"],
        }
    ).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "subject": frame["subject"],
            "split": "test",
            "lesion_positive": frame["gt_pixels"] > 0,
        }
    ).to_csv(folder / "split.csv", index=False)
    frame.to_csv(folder / "per_image_test.csv", index=False)
    frame.to_csv(folder / "per_image_val.csv", index=False)
    epochs_frame().to_csv(folder / "metrics_by_epoch.csv", index=False)
    pd.DataFrame(
        {
            "step": range(6),
            "epoch": [1, 1, 2, 2, 3, 3],
            "lr": np.linspace(1e-4, 1e-3, 6),
            "loss": 0.5,
        }
    ).to_csv(folder / "lr_by_step.csv", index=False)
    pd.DataFrame(
        {"split": ["train", "val", "test"], "n": [10, 4, 6], "lesion_positive": [6, 3, 4]}
    ).assign(lesion_rate=lambda f: f["lesion_positive"] / f["n"]).to_csv(
        folder / "split_summary.csv", index=False
    )
    pd.DataFrame(
        {
            "case": ["A_GT_empty_PRED_nonempty", "B_GT_nonempty_PRED_empty", "C_disjoint"],
            "count": [1, 1, 0],
            "percent_of_zero_dice": [50.0, 50.0, 0.0],
            "percent_of_images": [16.7, 16.7, 0.0],
        }
    ).to_csv(folder / "zero_dice_summary.csv", index=False)
    pd.DataFrame(
        {
            "image_id": ["0005_1", "0003_1"],
            "case": ["A_GT_empty_PRED_nonempty", "B_GT_nonempty_PRED_empty"],
            "gt_pixels": [0, 4],
            "pred_pixels": [5, 0],
        }
    ).to_csv(folder / "zero_dice_images.csv", index=False)
    section = {
        "n_images": 6,
        "n_gt_positive": 4,
        "n_gt_empty": 2,
        "dice_pos": 0.4321,
        "dice_pos_n": 4,
        "iou_pos": 0.31,
        "dice_all": 0.6,
        "dice_all_convention": "empty reference and empty prediction count as Dice 1",
        "false_positive_rate_empty": 0.5,
        "presence_roc_auc": 0.875,
        "presence_ap": None,
    }
    locked = {
        "threshold": 0.5,
        "min_lesion_area": 0,
        "presence_threshold": 0.5,
        "presence_score": "max_probability",
        "connectivity": 1,
    }
    (folder / "summary.json").write_text(
        json.dumps({"val": section, "test": section, "locked": locked, "conventions": {}})
    )
    (folder / "locked.json").write_text(json.dumps(locked))
    (folder / "train_summary.json").write_text(
        json.dumps(
            {
                "iterations": 6,
                "wall_time_s": 12.5,
                "best_epoch": 2,
                "best_val_dice_pos": 0.8,
                "final_train_loss": 0.3,
                "final_val_loss": 0.6,
                "epochs_run": 3,
                "stopped_early": False,
                "peak_gpu_memory_mb": None,
                "peak_rss_mb": 300.0,
                "device": "cpu",
            }
        )
    )
    files = ["per_image_val.csv", "per_image_test.csv", "summary.json", "metrics_by_epoch.csv",
             "lr_by_step.csv", "train_summary.json", "zero_dice_images.csv",
             "zero_dice_summary.csv", "split_summary.csv", "manifest.csv", "split.csv"]  # fmt: skip
    parameters = {name.split(".")[0]: str(folder / name) for name in files}
    parameters.update(
        title="Tiny run",
        probs_test=str(folder / "test.npz"),
        locked=str(folder / "locked.json"),
        dice_bands=[0.4, 0.6],
        n_examples=2,
        verdict_rules=RULES,
    )
    return parameters


def test_notebook_writes_html_with_every_section(repo_root, tmp_path):
    pytest.importorskip("lesionflow.dataset")
    pytest.importorskip("lesionflow.postprocess")
    parameters = write_tiny_run(tmp_path / "run")
    out = tmp_path / "analyse"
    analysis.run_analyse(repo_root / "notebooks" / "analysis.ipynb", parameters, out, cwd=tmp_path)
    html = (out / "analysis.html").read_text()
    for section in (
        "1 Run summary",
        "2 Training report",
        "3 Split",
        "4 Per-image test metrics",
        "5 Lesion-free images",
        "6 Zero-Dice breakdown",
        "7 Error analysis panels",
    ):
        assert section in html
    assert "Tiny run" in html
    assert "0.4321" in html  # test dice_pos from the fixture summary.json
    assert "undefined (n=6)" in html  # presence_ap is null in the fixture
    assert "0.6000 / 0.3000 = 2.00 &gt; 1.5" in html  # the overfitting verdict
    executed = nbformat.read(out / "analysis.ipynb", as_version=4)
    assert all(
        o.get("output_type") != "error" for c in executed.cells for o in c.get("outputs", [])
    )
    assert sorted(p.name for p in out.iterdir()) == ["analysis.html", "analysis.ipynb"]


def test_failing_notebook_names_the_cell_error_and_leaves_no_html(tmp_path):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("answer = None", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("raise ValueError(f'boom {answer}')"),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebook, path)
    out = tmp_path / "out"
    with pytest.raises(LesionflowError, match=r"broken.ipynb failed at cell .*ValueError: boom 42"):
        analysis.run_analyse(path, {"answer": 42}, out, cwd=tmp_path)
    assert not (out / "analysis.html").exists()
    assert not (out / "analysis.ipynb").exists()
    assert (out / "analysis.failed.ipynb").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_entry_point_reports_bad_parameters_in_one_line(repo_root, tmp_path):
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "analyse.py"), "--notebook", "x.ipynb",
         "--parameters", "{not json", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("lesionflow: error: --parameters: not valid JSON")


def test_summary_table_shows_each_metric_with_its_own_n_and_interval():
    section = {"lesion_f1": 0.5, "lesion_f1_n": 7, "lesion_f1_ci_low": 0.25, "lesion_f1_ci_high": None}
    table = analysis.summary_table(section).set_index("metric")
    assert table.loc["lesion-wise F1", "value"] == "0.5000"
    assert table.loc["lesion-wise F1", "n"] == "7"
    assert table.loc["lesion-wise F1", "interval"] == "[0.250, undefined]"
    assert table.loc["HD95 (pixels), lesion-positive images", "interval"] == ""
