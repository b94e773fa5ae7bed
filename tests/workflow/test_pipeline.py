"""The whole pipeline on a tiny generated dataset: every artifact exists and says the right thing."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from codebase import REPO_CODE
from figure_files import not_blank

from lesionflow.pipeline.artifacts import load_arrays
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import build_plan

from .pipeline import FIGURES, snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    config = tiny_config(
        {
            "base": tiny_run(),
            "flip": tiny_run(infer={"tta": ["identity", "hflip", "vflip"]}),
            # Same settings as base, so no extra job but its own view; the tag excludes it.
            "quick": {**tiny_run(), "tags": ["smoke"]},
        },
        compare={"baseline": "base"},
    )
    write_config(workdir, config)
    snakemake(workdir)
    keys = build_plan(resolve_config(config), workdir, REPO_CODE).runs
    return workdir, keys


def test_split_has_no_subject_in_two_splits(pipeline):
    workdir, keys = pipeline
    split = pd.read_csv(workdir / f"results/split/{keys['base']['split']}/split.csv", dtype=str)
    assert set(split["split"]) == {"train", "val", "test"}
    assert split.groupby("subject")["split"].nunique().max() == 1
    summary = pd.read_csv(workdir / f"results/split/{keys['base']['split']}/split_summary.csv")
    assert summary["n"].sum() == 36


def test_training_artifacts_record_one_epoch(pipeline):
    workdir, keys = pipeline
    folder = workdir / f"results/train/{keys['base']['train']}"
    epochs = pd.read_csv(folder / "metrics_by_epoch.csv")
    assert list(epochs["epoch"]) == [1]
    summary = json.loads((folder / "train_summary.json").read_text())
    assert summary["best_epoch"] == 1 and summary["iterations"] >= 1
    # Training draws nothing: plotting code in the train stage would make a plot edit retrain.
    assert not list(folder.glob("*.png"))


def test_probabilities_cover_exactly_their_split(pipeline):
    workdir, keys = pipeline
    split = pd.read_csv(workdir / f"results/split/{keys['base']['split']}/split.csv", dtype=str)
    for subset in ("val", "test"):
        probs = load_arrays(workdir / f"results/infer/{keys['flip']['infer']}/{subset}.npz")
        assert set(probs) == set(split.loc[split["split"] == subset, "image_id"])
        values = np.concatenate([p.ravel() for p in probs.values()]).astype(float)
        assert values.min() >= 0 and values.max() <= 1


def test_locked_settings_come_from_validation(pipeline):
    workdir, keys = pipeline
    locked = json.loads((workdir / f"results/tune/{keys['base']['tune']}/locked.json").read_text())
    assert locked["threshold"] in (0.3, 0.5) and locked["min_lesion_area"] in (0, 4)
    assert locked["chosen_on"] == "validation"


def test_summary_separates_lesion_positive_and_empty_images(pipeline):
    workdir, keys = pipeline
    folder = workdir / f"results/evaluate/{keys['base']['evaluate']}"
    per_image = pd.read_csv(folder / "per_image_test.csv", dtype={"image_id": str, "subject": str})
    summary = json.loads((folder / "summary.json").read_text())["test"]
    positive = per_image["gt_pixels"] > 0
    assert summary["n_images"] == len(per_image)
    assert summary["n_gt_positive"] == int(positive.sum())
    expected = per_image.loc[positive, "dice"].mean()
    assert summary["dice_pos"] == pytest.approx(expected, nan_ok=True)
    both_empty = (per_image["gt_pixels"] == 0) & (per_image["pred_pixels"] == 0)
    assert per_image.loc[both_empty, "dice"].isna().all()
    assert "dice_all_convention" in summary


def test_zero_dice_breakdown_accounts_for_every_zero(pipeline):
    workdir, keys = pipeline
    per_image = pd.read_csv(
        workdir / f"results/evaluate/{keys['base']['evaluate']}/per_image_test.csv"
    )
    breakdown = pd.read_csv(
        workdir / f"results/breakdown/{keys['base']['breakdown']}/zero_dice_summary.csv"
    )
    assert breakdown["count"].sum() == int((per_image["dice"] == 0).sum())
    assert list(breakdown["case"]) == [
        "A_GT_empty_PRED_nonempty",
        "B_GT_nonempty_PRED_empty",
        "C_disjoint",
    ]


def test_leaderboard_ranks_runs_against_the_baseline_and_lists_the_excluded_one(pipeline):
    workdir, _ = pipeline
    board = pd.read_csv(workdir / "results/compare/leaderboard.csv").set_index("run")
    assert sorted(board.index) == ["base", "flip", "quick"]
    assert board.loc["base", "delta_dice_pos_vs_baseline"] == pytest.approx(0.0, nan_ok=True)
    assert {"rank_dice_pos", "mean_rank", "presence_roc_auc", "presence_ap"} <= set(board.columns)
    assert {"paired_delta_dice_pos_ci_low", "wilcoxon_dice_p", "dice_pos_ci_high"} <= set(board.columns)
    assert board.loc["quick", "status"] == "excluded" and "smoke" in board.loc["quick", "status_reason"]
    assert np.isnan(board.loc["quick", "mean_rank"])


def test_run_views_hold_both_notebooks_and_every_figure_not_blank(pipeline):
    workdir, keys = pipeline
    for name in ("base", "flip"):
        view = workdir / f"results/runs/{name}"
        index = json.loads((view / "index.json").read_text())
        assert index["run"] == name and index["keys"] == keys[name]
        assert len(index["dataset_fingerprint"]) == 16
        assert "Zero-Dice" in (view / "analysis.html").read_text()
        assert "Conclusions" in (view / "training_report.html").read_text()
        figures = sorted(p.stem for p in (view / "figures").glob("*.png"))
        assert figures == sorted(FIGURES["analyse"] + FIGURES["training_report"])
        for png in (view / "figures").glob("*.png"):
            assert not_blank(png), png
            assert png.with_suffix(".svg").exists()
    assert (workdir / f"logs/train/{keys['base']['train']}.log").exists()


def test_compare_notebook_names_the_excluded_run_and_why(pipeline):
    workdir, _ = pipeline
    html = (workdir / "results/compare/compare.html").read_text()
    assert "quick" in html and "smoke" in html
    for name in FIGURES["compare_report"]:
        assert not_blank(workdir / f"results/compare/figures/{name}.png")


def test_report_zip_holds_every_runs_items_and_the_leaderboard(pipeline, tmp_path):
    workdir, _ = pipeline
    snakemake(workdir, "--report", "results/report.zip")
    with zipfile.ZipFile(workdir / "results/report.zip") as archive:
        archive.extractall(tmp_path)
        names = archive.namelist()
    def count(filename):
        return sum(name.endswith("/" + filename) for name in names)
    runs = 3
    for filename in ("analysis.html", "training_report.html", "per_image_test.csv", "lesions_test.csv",
                     "zero_dice_summary.csv", "detection_by_size.png", "loss_curves.png"):  # fmt: skip
        assert count(filename) == runs, filename
    for filename in ("leaderboard.csv", "leaderboard.png", "compare.html", "forest.png", "paired_deltas.png"):
        assert count(filename) == 1, filename
    (report,) = [name for name in names if name.split("/")[-1] == "report.html"]
    text = (tmp_path / report).read_text()
    assert "dataset fingerprint" in text
