"""The whole pipeline on a tiny generated dataset: every artifact exists and says the right thing."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from lesionflow.artifacts import load_arrays
from lesionflow.config import resolve_config
from lesionflow.keys import build_plan

from .pipeline import snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    config = tiny_config(
        {
            "base": tiny_run(),
            "flip": tiny_run(infer={"tta": ["identity", "hflip", "vflip"]}),
        },
        compare={"baseline": "base"},
    )
    write_config(workdir, config)
    snakemake(workdir)
    keys = build_plan(resolve_config(config), workdir).runs
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
    assert (folder / "training_curves.png").stat().st_size > 0


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


def test_leaderboard_ranks_both_runs_against_the_baseline(pipeline):
    workdir, _ = pipeline
    board = pd.read_csv(workdir / "results/compare/leaderboard.csv")
    assert sorted(board["run"]) == ["base", "flip"]
    base = board.set_index("run").loc["base"]
    assert base["delta_dice_pos_vs_baseline"] == pytest.approx(0.0, nan_ok=True)
    assert {"rank_dice_pos", "mean_rank", "presence_roc_auc", "presence_ap"} <= set(board.columns)


def test_run_views_and_notebooks_exist(pipeline):
    workdir, keys = pipeline
    for name in ("base", "flip"):
        index = json.loads((workdir / f"results/runs/{name}/index.json").read_text())
        assert index["run"] == name and index["keys"] == keys[name]
        html = (workdir / f"results/runs/{name}/analysis.html").read_text()
        assert "Zero-Dice" in html
    assert (workdir / f"logs/train/{keys['base']['train']}.log").exists()


def test_report_zip_holds_every_run(pipeline):
    workdir, _ = pipeline
    snakemake(workdir, "--report", "results/report.zip")
    with zipfile.ZipFile(workdir / "results/report.zip") as archive:
        names = "\n".join(archive.namelist())
    assert "leaderboard.csv" in names and "analysis.html" in names and "split_summary.png" in names
