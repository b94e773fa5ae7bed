"""`seeds` on a run: one keyed training per seed, sharing everything before training, grouped."""

import pytest
from codebase import REPO_CODE

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.plan import build_plan


def test_seeds_expand_a_run_into_one_run_per_seed_in_config_order():
    config = resolve_config({"runs": {"first": {}, "unet": {"seeds": [3, 0, 7]}, "last": {}}})
    assert list(config.runs) == ["first", "unet.seed3", "unet.seed0", "unet.seed7", "last"]
    assert [config.runs[f"unet.seed{s}"]["train"]["seed"] for s in (3, 0, 7)] == [3, 0, 7]
    assert config.groups == {
        "first": "first", "unet.seed3": "unet", "unet.seed0": "unet", "unet.seed7": "unet", "last": "last"
    }  # fmt: skip
    assert all("seeds" not in run for run in config.runs.values())


def test_each_seed_trains_once_and_shares_data_split_and_preprocessing(tmp_path):
    config = resolve_config({"runs": {"unet": {"seeds": [0, 1]}}})
    keys = build_plan(config, tmp_path, REPO_CODE).runs
    first, second = keys["unet.seed0"], keys["unet.seed1"]
    assert {first[s] == second[s] for s in ("data", "split", "preprocess")} == {True}
    assert first["train"] != second["train"] and first["evaluate"] != second["evaluate"]


def test_a_seed_run_is_the_same_job_as_a_run_with_that_train_seed(tmp_path):
    config = resolve_config({"runs": {"unet": {"seeds": [0, 4]}, "plain": {"train": {"seed": 4}}}})
    keys = build_plan(config, tmp_path, REPO_CODE).runs
    assert keys["unet.seed4"] == keys["plain"]


def test_seeds_in_defaults_expand_every_run():
    config = resolve_config({"defaults": {"seeds": [0, 1]}, "runs": {"a": {}, "b": {}}})
    assert list(config.runs) == ["a.seed0", "a.seed1", "b.seed0", "b.seed1"]


def test_a_seeded_recipe_named_as_baseline_is_compared_through_its_first_seed():
    config = resolve_config({"runs": {"a": {}, "unet": {"seeds": [2, 5]}}, "compare": {"baseline": "unet"}})
    assert config.baseline == "unet.seed2" and config.compare["baseline"] == "unet.seed2"


@pytest.mark.parametrize(
    "runs, message",
    [
        ({"a": {"seeds": [0], "train": {"seed": 1}}}, "'runs.a.seeds' and 'runs.a.train.seed' are both set"),
        ({"a": {"seeds": [0]}, "a.seed0": {}}, "makes a run named 'a.seed0', which is already a run"),
        ({"a": {"seeds": []}}, "runs.a.seeds"),
        ({"a": {"seeds": [1, 1]}}, "runs.a.seeds"),
        ({"a": {"seeds": 3}}, "runs.a.seeds"),
    ],
)
def test_bad_seeds_are_one_line_naming_the_key(runs, message):
    with pytest.raises(LesionflowError, match=message.replace(".", r"\.").replace("(", r"\(")):
        resolve_config({"runs": runs})
