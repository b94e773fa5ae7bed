"""k-fold cross-validation through Snakemake: one preprocessing for every fold, each fold tuned on its
own validation fold, the folds ranked and pooled out of fold, the test set held out."""

import re

import pandas as pd
import pytest
from codebase import REPO_CODE

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import build_plan

from .pipeline import snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("folds")
    config = tiny_config({"unet": tiny_run()}, compare={"bootstrap": {"n_resamples": 200}})
    config["split"]["folds"] = 2
    write_config(workdir, config)
    # The leaderboards only: the folds' notebooks are the analysis notebook's own tests' business.
    result = snakemake(workdir, "results/compare/leaderboard.csv")
    return workdir, build_plan(resolve_config(config), workdir, REPO_CODE).runs, result


def test_the_folds_share_one_preprocessing_and_train_one_model_each(folds):
    _, keys, result = folds
    log = result.stdout + result.stderr
    assert len(re.findall(r"rule preprocess:", log)) == 1
    assert len(re.findall(r"rule train:", log)) == 2
    assert keys["unet.fold0"]["preprocess"] == keys["unet.fold1"]["preprocess"]


def test_each_fold_is_validated_on_its_own_fold_and_tested_on_the_same_held_out_images(folds):
    workdir, keys, _ = folds
    tables = {
        run: pd.read_csv(workdir / f"results/fold/{keys[run]['fold']}/split.csv", dtype={"image_id": str})
        for run in ("unet.fold0", "unet.fold1")
    }
    val = {run: set(t.loc[t["split"] == "val", "image_id"]) for run, t in tables.items()}
    test = {run: set(t.loc[t["split"] == "test", "image_id"]) for run, t in tables.items()}
    assert not val["unet.fold0"] & val["unet.fold1"]
    assert test["unet.fold0"] == test["unet.fold1"] and not test["unet.fold0"] & val["unet.fold0"]
    development = set(tables["unet.fold0"].loc[tables["unet.fold0"]["split"] != "test", "image_id"])
    assert val["unet.fold0"] | val["unet.fold1"] == development
    for run in tables:
        per_image = pd.read_csv(workdir / f"results/evaluate/{keys[run]['evaluate']}/per_image_val.csv",
                                dtype={"image_id": str})  # fmt: skip
        assert set(per_image["image_id"]) == val[run]


def test_the_leaderboard_ranks_each_fold_and_pools_them_out_of_fold(folds):
    workdir, keys, _ = folds
    board = pd.read_csv(workdir / "results/compare/leaderboard.csv").set_index("run")
    assert sorted(board.index) == ["unet.fold0", "unet.fold1"] and set(board["group"]) == {"unet"}
    pooled = pd.read_csv(workdir / "results/compare/leaderboard_folds.csv").set_index("group")
    split = pd.read_csv(workdir / f"results/split/{keys['unet.fold0']['split']}/split.csv")
    assert pooled.loc["unet", "n_folds"] == 2
    assert pooled.loc["unet", "n_images"] == (split["split"] != "test").sum()
    assert 0 <= pooled.loc["unet", "oof_dice_pos"] <= 1
    assert pooled.loc["unet", "oof_dice_pos_ci_low"] <= pooled.loc["unet", "oof_dice_pos"]
