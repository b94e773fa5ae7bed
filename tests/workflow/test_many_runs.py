"""Everything a lab compares in one leaderboard, through Snakemake: two seeds of one recipe, a run whose
training fails (listed, not fatal), the nnU-Net export; then the split fixed by that export's
splits_final.json, an external run read from an nnU-Net prediction folder, the seeds' ensemble and a
dual-head run with presence fusion, all ranked together."""

import json
import re
import shutil
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from codebase import REPO_CODE
from nnunet_layout import check_nnunet_raw_dataset

from lesionflow.io.nnunet_predictions import write_nnunet_prediction
from lesionflow.pipeline.artifacts import load_arrays
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import build_plan

from .pipeline import snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow

LEADERBOARD = "results/compare/leaderboard.csv"


def broken_run() -> dict:
    """A run whose training fails: MONAI's UNet refuses an unknown keyword (no schema can know it)."""
    run = tiny_run()
    run["model"] = {**run["model"], "kwargs": {**run["model"]["kwargs"], "not_a_unet_argument": 1}}
    return run


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("many_runs")
    config = tiny_config(
        {"recipe": {**tiny_run(), "seeds": [0, 1]}, "broken": broken_run()},
        compare={"baseline": "recipe", "bootstrap": {"n_resamples": 200}},
        nnunet_export={"dataset_id": 7, "dataset_name": "Tiny"},
    )
    write_config(workdir, config)
    # The leaderboard and the export, not every run's notebooks: test time goes to what is checked.
    export = build_plan(resolve_config(config), workdir, REPO_CODE).nnunet_export
    failed = snakemake(workdir, LEADERBOARD, f"results/nnunet_export/{export}", check=False)
    return workdir, config, failed


def test_a_failed_training_leaves_the_other_runs_ranked_and_itself_listed(many_runs):
    workdir, config, failed = many_runs
    assert failed.returncode != 0
    keys = build_plan(resolve_config(config), workdir, REPO_CODE).runs
    log = f"logs/train/{keys['broken']['train']}.log"
    assert f"run broken: stage train failed; its log: {log}" in failed.stderr
    assert "not_a_unet_argument" in (workdir / log).read_text()
    board = pd.read_csv(workdir / "results/compare/partial/leaderboard.csv").set_index("run")
    # Ranked runs first, the failed one last.
    assert list(board.index[:2]) in (["recipe.seed0", "recipe.seed1"], ["recipe.seed1", "recipe.seed0"])
    assert board.index[-1] == "broken"
    assert (board.loc[["recipe.seed0", "recipe.seed1"], "status"] == "ranked").all()
    assert board.loc["broken", "status"] == "failed" and board.loc["broken", "failed_stage"] == "train"
    assert board.loc["broken", "log"] == log and np.isnan(board.loc["broken", "dice_pos"])
    # The finished leaderboard is not pretended: the compare rule's own table does not exist yet.
    assert not (workdir / "results/compare/leaderboard.csv").exists()
    page = (workdir / "results/compare/partial/leaderboard.html").read_text()
    assert "broken" in page and log in page


def test_seeds_of_a_recipe_form_a_group_whose_sd_is_the_noise_floor(many_runs):
    workdir, _, _ = many_runs
    board = pd.read_csv(workdir / "results/compare/partial/leaderboard.csv").set_index("run")
    seeds = board.loc[["recipe.seed0", "recipe.seed1"]]
    assert list(seeds["group"]) == ["recipe", "recipe"] and sorted(seeds["seed"]) == [0, 1]
    dice = seeds["dice_pos"].to_numpy(dtype=float)
    assert seeds["noise_floor_dice_pos"].to_numpy() == pytest.approx([np.std(dice, ddof=1)] * 2)
    groups = pd.read_csv(workdir / "results/compare/partial/leaderboard_groups.csv").set_index("group")
    assert groups.loc["recipe", "dice_pos_mean"] == pytest.approx(dice.mean())
    assert groups.loc["recipe", "n_runs"] == 2
    # The seeds differ only in train.seed: that is the one setting column of the page.
    page = (workdir / "results/compare/partial/leaderboard.html").read_text()
    assert "train.seed" in page and "model.kwargs.not_a_unet_argument" in page


def test_fixing_the_failed_run_completes_only_its_branch_and_the_leaderboard(many_runs):
    workdir, config, _ = many_runs
    # The user meant a valid keyword: the run keeps settings of its own, so a training of its own.
    meant = tiny_run()
    meant["model"] = {**meant["model"], "kwargs": {**meant["model"]["kwargs"], "dropout": 0.1}}
    fixed = {**config, "runs": {**config["runs"], "broken": meant}}
    write_config(workdir, fixed)
    keys = build_plan(resolve_config(fixed), workdir, REPO_CODE).runs
    before = {run: (workdir / f"results/train/{keys[run]['train']}/model.pt").stat().st_mtime_ns
              for run in ("recipe.seed0", "recipe.seed1")}  # fmt: skip
    rerun = snakemake(workdir, LEADERBOARD)
    executed = Counter(re.findall(r"^\s*(?:local)?rule (\w+):", rerun.stdout + rerun.stderr, re.MULTILINE))
    # The fixed run's own chain and the leaderboard: nothing of the two runs that had finished.
    assert executed["train"] == 1 and executed["tune"] == 1 and executed["evaluate"] == 1
    assert executed["compare"] == 1 and not executed["data"] and not executed["split"]
    for run, mtime in before.items():
        assert (workdir / f"results/train/{keys[run]['train']}/model.pt").stat().st_mtime_ns == mtime
    board = pd.read_csv(workdir / LEADERBOARD).set_index("run")
    assert set(board.index) == {"recipe.seed0", "recipe.seed1", "broken"}
    # The finished leaderboard replaces the partial one.
    assert not (workdir / "results/compare/partial").exists()


def test_the_nnunet_export_is_a_valid_raw_dataset_with_lesionflows_split(many_runs):
    workdir, config, _ = many_runs
    plan = build_plan(resolve_config(config), workdir, REPO_CODE)
    folder = workdir / f"results/nnunet_export/{plan.nnunet_export}/Dataset007_Tiny"
    assert check_nnunet_raw_dataset(folder) == []
    split = pd.read_csv(workdir / f"results/split/{plan.runs['broken']['split']}/split.csv", dtype=str)
    folds = json.loads((folder / "splits_final.json").read_text())
    assert len(folds) == 1
    for subset in ("train", "val"):
        assert sorted(folds[0][subset]) == sorted(split.loc[split["split"] == subset, "image_id"])
    tests = sorted(split.loc[split["split"] == "test", "image_id"])
    assert sorted(p.name.removesuffix("_0000.png") for p in (folder / "imagesTs").iterdir()) == tests


@pytest.fixture(scope="module")
def with_external(many_runs):
    """The config without the failed run, its split fixed by the splits_final.json of its own nnU-Net
    export, with an external run (the val and test predictions of recipe.seed0 written as an nnU-Net
    prediction folder: PNG label maps + npz probabilities), an ensemble and a dual-head run."""
    workdir, config, _ = many_runs
    plan = build_plan(resolve_config(config), workdir, REPO_CODE)
    keys = plan.runs["recipe.seed0"]
    drawn = {
        "split": pd.read_csv(workdir / f"results/split/{keys['split']}/split.csv", dtype=str),
        "summary": json.loads((workdir / f"results/evaluate/{keys['evaluate']}/summary.json").read_text()),
    }
    exported = workdir / f"results/nnunet_export/{plan.nnunet_export}/Dataset007_Tiny/splits_final.json"
    shutil.copy(exported, workdir / "splits_final.json")
    folder = workdir / "nnunet_predictions"
    folder.mkdir()
    for subset in ("val", "test"):
        for case, probability in load_arrays(workdir / f"results/infer/{keys['infer']}/{subset}.npz").items():
            write_nnunet_prediction(folder, case, probability.astype(np.float32), 0.5, 2)
    # The same tuning grid as the recipe's: then the round trip must give the same numbers.
    tune = config["runs"]["recipe"]["tune"]
    external = {"source": "external", "external": {"predictions": "nnunet_predictions"}, "tune": tune}
    both = {"source": "ensemble", "ensemble": {"members": ["recipe"]}}  # the recipe's two seeds
    dual = tiny_run(model={"presence_head": True})  # segmentation and an image-level classifier
    runs = {"recipe": config["runs"]["recipe"], "nnunet": external, "both": both, "dual": dual}
    config = {**config, "runs": runs}
    config["compare"] = {**config["compare"], "baseline": "nnunet"}
    config["split"] = {**config["split"], "nnunet_splits": "splits_final.json"}
    write_config(workdir, config)
    views = ("results/runs/nnunet/index.json", "results/runs/both/index.json")
    return workdir, config, snakemake(workdir, LEADERBOARD, *views), drawn


def test_an_nnunet_prediction_folder_is_evaluated_by_the_same_code_with_the_same_result(with_external):
    workdir, config, _, drawn = with_external
    keys = build_plan(resolve_config(config), workdir, REPO_CODE).runs
    assert "train" not in keys["nnunet"]
    # The splits_final.json fixes the split: the same subsets as the drawn split it was exported from.
    fixed = pd.read_csv(workdir / f"results/split/{keys['nnunet']['split']}/split.csv", dtype=str)
    pairs = fixed.set_index("image_id")["split"].sort_index()
    assert pairs.equals(drawn["split"].set_index("image_id")["split"].sort_index())
    evaluated = workdir / f"results/evaluate/{keys['nnunet']['evaluate']}/summary.json"
    summary = json.loads(evaluated.read_text())
    # Round trip: lesionflow's own maps through nnU-Net's file format give the same test numbers.
    for metric in ("dice_pos", "iou_pos", "presence_roc_auc", "presence_ap", "lesion_f1"):
        assert summary["test"][metric] == pytest.approx(drawn["summary"]["test"][metric])
    record = json.loads((workdir / f"results/infer/{keys['nnunet']['infer']}/test_infer.json").read_text())
    assert record["kind"] == "probabilities" and record["source"] == "external"
    board = pd.read_csv(workdir / "results/compare/leaderboard.csv").set_index("run")
    assert sorted(board.index) == ["both", "dual", "nnunet", "recipe.seed0", "recipe.seed1"]
    assert board.loc["nnunet", "predictions"] == "external (probabilities)"
    assert board.loc["both", "predictions"] == "ensemble (mean of 2 runs)"
    assert bool(board.loc["nnunet", "is_baseline"]) and board.loc["nnunet", "status"] == "ranked"
    # A run is ranked when it predicted a lesion pixel on the test split. An ensemble of two
    # one-epoch models may predict none; the leaderboard then lists it as failed, saying why.
    for run in board.index:
        per_image = pd.read_csv(workdir / f"results/evaluate/{keys[run]['evaluate']}/per_image_test.csv")
        predicted = per_image["pred_pixels"].sum() > 0
        assert board.loc[run, "status"] == ("ranked" if predicted else "failed"), board.loc[run]
        if not predicted:
            assert board.loc[run, "status_reason"].startswith("no lesion predicted on any of")
    # Every row carries its intervals.
    assert board[["dice_pos_ci_low", "dice_pos_ci_high"]].notna().all().all()
    analysis = (workdir / f"results/analyse/{keys['nnunet']['analyse']}/analysis.html").read_text()
    assert "nnunet_predictions" in analysis
    assert not (workdir / "results/compare/partial").exists()
    assert (workdir / "results/runs/nnunet/index.json").is_file()


def test_an_ensemble_averages_its_members_maps_and_is_tuned_and_evaluated_like_a_run(with_external):
    workdir, config, *_ = with_external
    keys = build_plan(resolve_config(config), workdir, REPO_CODE).runs
    maps = {
        run: load_arrays(workdir / f"results/infer/{keys[run]['infer']}/val.npz")
        for run in ("both", "recipe.seed0", "recipe.seed1")
    }
    for image_id, mean in maps["both"].items():
        members = [maps[run][image_id].astype(np.float32) for run in ("recipe.seed0", "recipe.seed1")]
        assert np.allclose(mean, np.mean(members, axis=0), atol=1e-3)
    locked = json.loads((workdir / f"results/tune/{keys['both']['tune']}/locked.json").read_text())
    assert locked["chosen_on"] == "validation"
    analysis = (workdir / f"results/analyse/{keys['both']['analyse']}/analysis.html").read_text()
    assert "Ensemble" in analysis


def test_a_dual_head_runs_presence_is_fused_with_a_gamma_locked_on_validation(with_external):
    workdir, config, *_ = with_external
    keys = build_plan(resolve_config(config), workdir, REPO_CODE).runs["dual"]
    fusion = json.loads((workdir / f"results/tune/{keys['tune']}/fusion.json").read_text())
    assert fusion["chosen_on"] == "validation" and "area_scale" in fusion
    epochs = pd.read_csv(workdir / f"results/train/{keys['train']}/metrics_by_epoch.csv")
    assert {"presence_loss", "val_presence_roc_auc"} <= set(epochs.columns)
    presence = pd.read_csv(workdir / f"results/infer/{keys['infer']}/test_presence.csv")
    assert presence["presence_probability"].between(0, 1).all()
    summary = json.loads((workdir / f"results/evaluate/{keys['evaluate']}/summary.json").read_text())
    sources = summary["test"]["presence_by_source"]
    assert {"max_probability", "lesion_area", "classifier", "fused"} <= set(sources)
    assert summary["test"]["presence_roc_auc"] == pytest.approx(sources["fused"]["roc_auc"], nan_ok=True)


def test_replacing_one_prediction_reruns_only_the_external_runs_evaluation(with_external):
    workdir, config, *_ = with_external
    before = build_plan(resolve_config(config), workdir, REPO_CODE).runs
    case = sorted((workdir / "nnunet_predictions").glob("*.npz"))[0]
    with np.load(case) as data:
        probabilities = data["probabilities"]
    np.savez_compressed(case, probabilities=probabilities[::-1].copy())  # lesion and background swapped
    after = build_plan(resolve_config(config), workdir, REPO_CODE).runs
    assert after["nnunet"]["infer"] != before["nnunet"]["infer"]
    assert after["nnunet"]["evaluate"] != before["nnunet"]["evaluate"]
    assert after["recipe.seed0"] == before["recipe.seed0"]


def test_missing_predictions_are_listed_all_at_once_and_fail_that_run_only(with_external):
    workdir, config, *_ = with_external
    removed = sorted((workdir / "nnunet_predictions").glob("*.png"))[:2]
    for path in removed:
        path.unlink()
        path.with_suffix(".npz").unlink()
    result = snakemake(workdir, LEADERBOARD, check=False)
    assert result.returncode != 0
    board = pd.read_csv(workdir / "results/compare/partial/leaderboard.csv").set_index("run")
    assert board.loc["nnunet", "status"] == "failed" and board.loc["nnunet", "failed_stage"] == "infer"
    log = "".join(path.read_text() for path in workdir.glob("logs/infer/*.log"))
    for path in removed:
        assert f"no prediction file for image id {path.stem!r}" in log
