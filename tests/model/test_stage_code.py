"""Tests of what the model stages' code keys cover: an edit to TTA or to a plot never retrains."""

from codebase import REPO_CODE

from lesionflow.model.checkpoint import _RUN_ONLY_SETTINGS
from lesionflow.pipeline.stages import STAGES


def test_tta_change_does_not_retrain():
    modules = REPO_CODE.stage_modules("train")
    assert "lesionflow.model.train" in modules
    assert "lesionflow.model.tta" not in modules
    assert "lesionflow.model.infer" not in modules


def test_train_stage_code_draws_no_figure():
    # Plot code in training would make a plot edit retrain every model.
    for name in REPO_CODE.stage_modules("train"):
        if not name.startswith("lesionflow.model"):
            continue
        source = REPO_CODE.module_file(name).read_text()
        assert "matplotlib" not in source and "save_figure" not in source, name


def test_infer_still_runs_the_forward_path_it_shares_with_train():
    modules = REPO_CODE.stage_modules("infer")
    assert {"lesionflow.model.networks", "lesionflow.model.tta"} <= set(modules)


def test_the_checkpoint_leaves_out_of_its_fingerprint_what_the_key_leaves_out():
    # Not imported from the registry, which would put the key machinery into training's key.
    assert set(_RUN_ONLY_SETTINGS) == set(STAGES["train"].not_in_key)
