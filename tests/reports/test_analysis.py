"""Tests of lesionflow.reports.analysis: the summary table, head/tail selection, image groups,
lesion-free images, detection by size, the Dice scatter, and the executed analysis notebook."""

import json
import math

import nbformat
import numpy as np
import pandas as pd
import pytest
from figure_files import not_blank
from frames import epochs_frame
from parameter_cells import notebook_parameters
from PIL import Image
from schema_settings import evaluate_resampler, evaluate_settings

from lesionflow.data.dataset import image_lesion_tables
from lesionflow.data.manifest import read_manifest
from lesionflow.evaluation.breakdown import run_breakdown
from lesionflow.evaluation.evaluate import lesion_matching, score_subset
from lesionflow.evaluation.metrics import CONVENTIONS
from lesionflow.evaluation.summary import summarise
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.stages import figures
from lesionflow.reports import analysis
from lesionflow.reports.labels import format_value
from lesionflow.reports.notebook import run_notebook


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


# ---------------------------------------------------------------- pure functions



def test_head_tail_excludes_nan_dice_and_lesion_free_images():
    best, worst = analysis.head_tail(per_image_frame(), 2)
    assert list(best["image_id"]) == ["0001_1", "0002_1"]
    # 0005_1 has Dice 0 but no reference lesion: it is a false positive, not a worst segmentation.
    assert list(worst["image_id"]) == ["0003_1", "0001_2"]
    everything, _ = analysis.head_tail(per_image_frame(), 10)
    assert set(everything["image_id"]) == {"0001_1", "0001_2", "0002_1", "0003_1"}


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




# ---------------------------------------------------------------- figures


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



# ---------------------------------------------------------------- the executed notebook

# The figures the rule declares, from the stage registry.
FIGURES = tuple(figures("analyse"))


def write_tiny_run(folder) -> dict:
    """Every artifact the analysis notebook reads, made by the real stage functions on eight
    24x24 images (lesion found, missed, false positive, correct empty); returns its parameters."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    rng = np.random.default_rng(1)
    locked = {"threshold": 0.5, "min_lesion_area": 0, "presence_threshold": 0.5,
              "presence_score": "max_probability", "connectivity": 1}  # fmt: skip
    ids, subjects, probs, masks = [], [], {}, {}
    for index in range(8):
        image_id, mask = f"000{index // 2}_{index % 2 + 1}", np.zeros((24, 24), dtype=bool)
        prob = np.full((24, 24), 0.05, dtype=np.float32)
        if index < 5:  # a lesion, found by a shifted prediction (missed for image 4)
            mask[4 : 6 + index, 5 : 9 + index] = True
            prob[np.roll(mask, index % 2, axis=1)] = 0.9 if index != 4 else 0.3
        elif index == 5:  # a false positive on a lesion-free image
            prob[15:18, 15:19] = 0.95
        pixels = (rng.random((24, 24, 3)) * 120).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{image_id}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{image_id}.png")
        ids.append(image_id)
        subjects.append(image_id[:4])
        probs[image_id], masks[image_id] = prob, mask
    np.savez_compressed(folder / "test.npz", **{k: v.astype(np.float16) for k, v in probs.items()})
    pd.DataFrame(
        {"image": [f"images/{i}.png" for i in ids], "mask": [f"masks/{i}.png" for i in ids],
         "subject": subjects, "image_id": ids}
    ).to_csv(folder / "manifest.csv", index=False)  # fmt: skip
    pd.DataFrame(
        {"image_id": ids, "subject": subjects, "split": "test",
         "lesion_positive": [m.any() for m in masks.values()]}
    ).to_csv(folder / "split.csv", index=False)  # fmt: skip
    data_images, data_lesions = image_lesion_tables(read_manifest(folder / "manifest.csv"))
    data_images.to_csv(folder / "images.csv", index=False)
    data_lesions.to_csv(folder / "data_lesions.csv", index=False)
    settings = evaluate_settings()
    per_image, lesions = score_subset(
        probs, masks, dict(zip(ids, subjects, strict=True)), locked,
        lesion_matching(settings, locked), settings["size_bins"],
    )
    per_image.to_csv(folder / "per_image_test.csv", index=False)
    per_image.to_csv(folder / "per_image_val.csv", index=False)
    lesions.to_csv(folder / "lesions_test.csv", index=False)
    resampler = evaluate_resampler(subjects, n_resamples=200)
    section = summarise(per_image, lesions, resampler, settings["size_bins"])
    run_breakdown(folder / "per_image_test.csv", folder)
    (folder / "summary.json").write_text(
        json.dumps({"val": section, "test": section, "locked": locked, "conventions": CONVENTIONS})
    )
    (folder / "summary_tiles.json").write_text(
        json.dumps({"level": "tile", "resolution": "preprocessed (scale 0.5)", "test": section})
    )
    (folder / "locked.json").write_text(json.dumps(locked))
    epochs_frame().to_csv(folder / "metrics_by_epoch.csv", index=False)
    pd.DataFrame(
        {"split": ["train", "val", "test"], "n": [10, 4, 8], "lesion_positive": [6, 3, 5]}
    ).to_csv(folder / "split_summary.csv", index=False)
    (folder / "train_summary.json").write_text(json.dumps({"best_epoch": 2, "device": "cpu"}))
    files = ["per_image_val.csv", "per_image_test.csv", "lesions_test.csv", "summary.json",
             "summary_tiles.json", "metrics_by_epoch.csv", "train_summary.json", "zero_dice_images.csv",
             "zero_dice_summary.csv", "split_summary.csv", "manifest.csv", "split.csv"]  # fmt: skip
    parameters = {name.split(".")[0]: str(folder / name) for name in files}
    parameters.update(
        data_images=str(folder / "images.csv"),
        data_lesions=str(folder / "data_lesions.csv"),
        title="Tiny run",
        source="model",
        predictions_record=None,
        probs_test=str(folder / "test.npz"),
        locked=str(folder / "locked.json"),
        figures_dir=str(folder / "figures"),
        dice_bands=[0.4, 0.6],
        n_examples=2,
        pseudonymise=False,
    )
    return parameters


def test_notebook_writes_html_with_every_section_and_every_figure(repo_root, tmp_path):
    parameters = write_tiny_run(tmp_path / "run")
    out = tmp_path / "analyse"
    run_notebook(repo_root / "notebooks" / "analysis.ipynb", parameters, out, cwd=tmp_path)
    html = (out / "analysis.html").read_text()
    for section in ("1 Summary", "2 Split", "Data", "3 Training curves", "4 Image groups", "5 Per-image Dice",
                    "6 Lesion-free images", "7 Zero-Dice breakdown", "8 Lesion-wise detection",
                    "9 Best and worst cases"):  # fmt: skip
        assert section in html
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]
    assert "Tiny run" in html
    assert format_value(summary["dice_pos"]) in html
    assert "gt_empty_pred_pos" in html and "lesion-wise F1" in html
    assert "def show(" not in html  # code hidden in the HTML; it stays in the .ipynb
    assert "per tile" in html and "preprocessed (scale 0.5)" in html
    executed = nbformat.read(out / "analysis.ipynb", as_version=4)
    assert all(o.get("output_type") != "error" for c in executed.cells for o in c.get("outputs", []))
    for name in FIGURES:
        png = tmp_path / "run" / "figures" / f"{name}.png"
        assert not_blank(png), name  # not a blank image
        assert (png.with_suffix(".svg")).stat().st_size > 0


def test_false_positive_examples_are_lesion_free_images_with_the_largest_prediction():
    frame = per_image_frame()
    chosen = analysis.false_positive_images(frame, 3)
    assert chosen["image_id"].tolist() == ["0005_1"]
    assert (chosen["gt_pixels"] == 0).all() and (chosen["pred_pixels"] > 0).all()



def test_detection_plot_and_table_keep_undefined_bins_undefined():
    section = {"detection_by_size": [
        {"size_bin": "<50", "rate": 0.5, "rate_ci_low": 0.2, "rate_ci_high": 0.8, "n_lesions": 6},
        {"size_bin": ">=50", "rate": None, "rate_ci_low": None, "rate_ci_high": None, "n_lesions": 0},
    ]}  # fmt: skip
    table = analysis.detection_table(section)
    assert table["detection rate"].tolist() == ["0.5000", "undefined (n=0)"]
    ax = analysis.plot_detection_by_size(section).get_axes()[0]
    assert [t.get_text() for t in ax.texts] == ["n=6", "n=0\nundefined"]


def test_image_groups_table_counts_every_group_even_when_empty():
    frame = per_image_frame().assign(group=["gt_pos_pred_pos"] * 3 + ["gt_pos_pred_empty"] * 2 + ["x"])
    table = analysis.image_groups_table(frame).set_index("group")
    assert table.loc["gt_pos_pred_pos", "images"] == 3
    assert table.loc["gt_empty_pred_empty", "images"] == 0


def test_summary_table_shows_each_metric_with_its_own_n_and_interval():
    section = {"lesion_f1": 0.5, "lesion_f1_n": 7, "lesion_f1_ci_low": 0.25, "lesion_f1_ci_high": None}
    table = analysis.summary_table(section).set_index("metric")
    assert table.loc["lesion-wise F1", "value"] == "0.5000"
    assert table.loc["lesion-wise F1", "n"] == "7"
    assert table.loc["lesion-wise F1", "interval"] == "[0.250, undefined]"
    assert table.loc["HD95 (mm, or pixels for pictures), lesion-positive images", "interval"] == ""


def test_notebook_restates_no_config_default(repo_root):
    # Defaults live only in the config schema; papermill injects every parameter.
    parameters = notebook_parameters(repo_root / "notebooks" / "analysis.ipynb")
    assert {"dice_bands", "n_examples"} <= set(parameters)
    assert all(value is None for name, value in parameters.items() if name != "title")


def test_notebook_without_its_settings_names_each_missing_one(repo_root, tmp_path):
    parameters = write_tiny_run(tmp_path / "run")
    del parameters["dice_bands"], parameters["n_examples"]
    message = r"analysis notebook: parameter\(s\) not set: dice_bands, n_examples"
    with pytest.raises(LesionflowError, match=message):
        run_notebook(repo_root / "notebooks" / "analysis.ipynb", parameters, tmp_path / "out", cwd=tmp_path)
