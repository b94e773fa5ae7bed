"""The whole pipeline on tiny generated Loes-scored volumes: regression runs from data to leaderboard."""

import json
import re

import pandas as pd
import pytest
import yaml
from codebase import REPO_CODE

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import build_plan

from .pipeline import FIGURES, planned_jobs, snakemake, tiny_run, write_config

pytestmark = pytest.mark.slow


def tiny_regression_run(**overrides) -> dict:
    """Two epochs of a narrow ResNet10 on head-cropped 24-voxel volumes."""
    run = {
        "task": "regression",
        "model": {"network": "ResNet10", "kwargs": {"widen_factor": 0.25}},
        "preprocess": {"crop_field_of_view": True, "normalise": "percentile"},
        "train": {
            "epochs": 2, "batch_size": 4, "patch_size": [24, 24, 24], "early_stopping_patience": None,
        },
        "evaluate": {"bootstrap": {"n_resamples": 200}},
        "resources": {"threads": 1},
    }
    for section, values in overrides.items():
        run[section] = {**run.get(section, {}), **values} if isinstance(values, dict) else values
    return run


def regression_config(**runs) -> dict:
    return {
        "data": {
            "source": "synthetic",
            "synthetic": {"kind": "loes", "n_images": 24, "image_size": 32, "seed": 1},
            "score_range": [0, 34],
        },
        "split": {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 0},
        "runs": runs,
        "compare": {"bootstrap": {"n_resamples": 200}},
    }


# A segmentation run on the same volumes: one config, two tasks, two leaderboards.
SEGMENTATION_RUN = tiny_run(
    model={"spatial_dims": 3},
    preprocess={"crop_field_of_view": True, "normalise": "percentile"},
    train={"batch_size": 4, "patch_size": [16, 16, 8]},
    tune={"connectivity": 3},
)
REGRESSION_RUNS = {
    "resnet": tiny_regression_run(),
    "mirror_calibrated": tiny_regression_run(
        infer={"tta": ["identity", "flip0", "flip012"]}, tune={"calibration": "linear"}
    ),
}
RUNS = {**REGRESSION_RUNS, "unet3d": SEGMENTATION_RUN}
# A run that trains with other sample weights: planned beside RUNS, never run (its own training
# would add a minute to the suite and test nothing the plan does not show).
WEIGHTED = tiny_regression_run(train={"sample_weights": "inverse_frequency"})


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("regression")
    config = regression_config(**RUNS)
    write_config(workdir, config)
    snakemake(workdir)
    keys = build_plan(resolve_config(config), workdir, REPO_CODE).runs
    return workdir, keys


def test_the_data_carry_scores_and_the_split_balances_score_bins(regression):
    workdir, keys = regression
    manifest = pd.read_csv(workdir / f"results/data/{keys['resnet']['data']}/manifest.csv")
    assert manifest["score"].between(0, 34).all() and (manifest["score"] == manifest["loes_score"]).all()
    split = pd.read_csv(workdir / f"results/split/{keys['resnet']['split']}/split.csv", dtype=str)
    assert split.groupby("subject")["split"].nunique().max() == 1
    assert {"score", "score_bin"} <= set(split.columns)
    summary = pd.read_csv(workdir / f"results/split/{keys['resnet']['split']}/split_summary.csv")
    assert {"score_mean", "score_max", "n_<2", "n_>=10"} <= set(summary.columns)


def test_tta_and_calibration_reuse_the_training_and_weighting_retrains(regression):
    workdir, _ = regression
    keys = build_plan(resolve_config(regression_config(**RUNS, weighted=WEIGHTED)), workdir, REPO_CODE).runs
    assert keys["mirror_calibrated"]["train"] == keys["resnet"]["train"] != keys["weighted"]["train"]
    assert keys["mirror_calibrated"]["infer_scores"] != keys["resnet"]["infer_scores"]


def test_scores_are_predicted_for_val_and_test_with_every_tta_transform(regression):
    workdir, keys = regression
    folder = workdir / f"results/infer_scores/{keys['mirror_calibrated']['infer_scores']}"
    split = pd.read_csv(workdir / f"results/split/{keys['resnet']['split']}/split.csv", dtype=str)
    for subset in ("val", "test"):
        scores = pd.read_csv(folder / f"{subset}_scores.csv", dtype={"image_id": str})
        assert set(scores["image_id"]) == set(split.loc[split["split"] == subset, "image_id"])
        per_transform = scores[["prediction_identity", "prediction_flip0", "prediction_flip012"]]
        assert scores["prediction"].to_numpy() == pytest.approx(per_transform.mean(axis=1).to_numpy())


def test_calibration_is_fitted_on_validation_and_applied_to_test(regression):
    workdir, keys = regression
    calibration = json.loads(
        (workdir / f"results/calibrate/{keys['mirror_calibrated']['calibrate']}/calibration.json").read_text()
    )
    assert calibration["method"] == "linear" and calibration["fitted_on"] == "val"
    folder = workdir / f"results/evaluate_scores/{keys['mirror_calibrated']['evaluate_scores']}"
    test = pd.read_csv(folder / "per_case_test.csv")
    expected = calibration["intercept"] + calibration["slope"] * test["predicted_raw"]
    assert test["predicted"].to_numpy() == pytest.approx(expected.to_numpy())
    assert test["residual"].to_numpy() == pytest.approx((test["predicted"] - test["true"]).to_numpy())


def test_no_calibrate_job_reads_a_test_split_file(regression):
    workdir, _ = regression
    _, text = planned_jobs(workdir, "--forceall")
    blocks = re.split(r"\n(?=\S*rule \w+:)", text)
    calibrate_blocks = [b for b in blocks if re.match(r"\S*rule calibrate:", b.strip())]
    assert len(calibrate_blocks) == len(REGRESSION_RUNS), text
    for block in calibrate_blocks:
        inputs = re.search(r"input: (.*)", block).group(1)
        assert "test" not in inputs and "val_scores.csv" in inputs, block


def test_each_task_is_ranked_in_its_own_leaderboard_against_its_own_baseline(regression):
    workdir, keys = regression
    board = pd.read_csv(workdir / "results/compare/leaderboard_regression.csv")
    assert set(board["run"]) == set(REGRESSION_RUNS)
    columns = {"srmse", "pearson_r", "pearson_p", "spearman_p", "mae", "mean_rank", "delta_srmse"}
    assert columns <= set(board.columns)
    assert board.loc[board["run"] == "resnet", "delta_srmse"].item() == 0
    # The config's baseline is a regression run; the segmentation table takes its first run.
    segmentation = pd.read_csv(workdir / "results/compare/leaderboard.csv")
    assert segmentation["run"].tolist() == ["unet3d"] and segmentation["is_baseline"].all()
    assert "evaluate" in keys["unet3d"] and "evaluate_scores" not in keys["unet3d"]
    assert (workdir / "results/runs/unet3d/analysis.html").is_file()
    assert (workdir / "results/compare/compare.html").stat().st_size > 0


def test_run_views_hold_the_regression_notebook_training_report_and_figures(regression):
    workdir, _ = regression
    for name in REGRESSION_RUNS:
        view = workdir / "results/runs" / name
        assert (view / "regression.html").stat().st_size > 0
        assert (view / "training_report.html").stat().st_size > 0
        for figure in FIGURES["analyse_scores"] + FIGURES["training_report"]:
            assert (view / "figures" / f"{figure}.png").stat().st_size > 0, figure
        index = json.loads((view / "index.json").read_text())
        assert index["settings"]["task"] == "regression"
    summary = json.loads((workdir / "results/runs/resnet/summary.json").read_text())
    assert summary["task"] == "regression" and summary["test"]["overall"]["n"] > 0


def test_changing_only_tta_or_calibration_reruns_nothing_of_training(regression):
    workdir, _ = regression
    edited = tiny_regression_run(infer={"tta": ["identity", "flip1"]}, tune={"calibration": "linear"})
    config = regression_config(**{**RUNS, "resnet": edited})
    (workdir / "edited.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs, text = planned_jobs(workdir, "--configfile", str(workdir / "edited.yaml"))
    assert jobs["train"] == 0 and jobs["preprocess"] == 0, text
    assert jobs["infer_scores"] == 2 and jobs["calibrate"] == 1 and jobs["evaluate_scores"] == 1, text


def test_a_run_differing_only_in_its_loss_weighting_trains_its_own_model(regression):
    workdir, _ = regression
    edited = tiny_regression_run(train={"sample_weights": "inverse_frequency", "weight_bins": [1, 4]})
    config = regression_config(**RUNS, weighted=edited)
    (workdir / "reweighted.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs, text = planned_jobs(workdir, "--configfile", str(workdir / "reweighted.yaml"))
    assert jobs["train"] == 1 and jobs["training_report"] == 1 and jobs["infer_scores"] == 2, text
