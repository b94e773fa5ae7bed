"""The runs a config expands into: ensembles by member name or recipe, one run per fold (split.folds)."""

import pytest
from codebase import REPO_CODE

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.plan import build_plan


def ensemble(*members) -> dict:
    return {"source": "ensemble", "ensemble": {"members": list(members)}}


def test_a_recipe_with_seeds_stands_for_all_its_seeds():
    runs = {"all": ensemble("unet", "other"), "unet": {"seeds": [0, 1]}, "other": {}}
    config = resolve_config({"runs": runs})
    assert config.runs["all"]["ensemble"]["members"] == ["unet.seed0", "unet.seed1", "other"]


def test_an_ensemble_is_keyed_by_its_members_keys_whatever_their_order_or_its_name(tmp_path):
    runs = {"a": {}, "b": {"train": {"seed": 1}}, "ab": ensemble("a", "b"), "ba": ensemble("b", "a")}
    plan = build_plan(resolve_config({"runs": runs}), tmp_path, REPO_CODE)
    assert plan.runs["ab"] == plan.runs["ba"]
    assert "train" not in plan.runs["ab"] and plan.runs["ab"]["preprocess"] == plan.runs["a"]["preprocess"]
    job = plan.jobs["ensemble"][plan.runs["ab"]["infer"]]
    assert job.settings["ensemble"]["members"] == sorted([plan.runs["a"]["infer"], plan.runs["b"]["infer"]])
    assert list(plan.runs) == list(runs)  # config order, although ensembles are keyed last


def test_retraining_a_member_changes_the_ensembles_key(tmp_path):
    def plan(seed):
        runs = {"a": {}, "b": {"train": {"seed": seed}}, "e": ensemble("a", "b")}
        return build_plan(resolve_config({"runs": runs}), tmp_path, REPO_CODE)

    before, after = plan(1), plan(2)
    assert before.runs["e"]["infer"] != after.runs["e"]["infer"]
    assert before.runs["e"]["evaluate"] != after.runs["e"]["evaluate"]


def test_members_with_other_preprocessing_are_refused_naming_them(tmp_path):
    runs = {"a": {}, "b": {"preprocess": {"max_size": 32}}, "e": ensemble("a", "b")}
    with pytest.raises(LesionflowError, match=r"runs\.e\.ensemble\.members': the runs a, b do not share"):
        build_plan(resolve_config({"runs": runs}), tmp_path, REPO_CODE)


@pytest.mark.parametrize(
    "runs, message",
    [
        ({"a": {}, "e": ensemble("a", "nope")}, "names 'nope', which is neither a run nor a recipe"),
        ({"a": {}, "e": ensemble("a")}, "must name at least two runs"),
        ({"a": {}, "b": {}, "e": ensemble("a", "b"), "f": ensemble("e", "a")}, "names 'e', an ensemble"),
        ({"a": {}, "b": {}, "e": {**ensemble("a", "b"), "preprocess": {"max_size": 8}}}, "runs.e.preprocess"),
    ],
)
def test_bad_ensembles_are_one_line_naming_the_key(runs, message):
    with pytest.raises(LesionflowError, match=message.replace(".", r"\.")):
        resolve_config({"runs": runs})


# --- k-fold runs (split.folds) ---------------------------------------------------------------


def test_folds_make_one_run_per_fold_sharing_split_and_preprocessing(tmp_path):
    config = resolve_config({"runs": {"unet": {"seeds": [0, 1]}, "wide": {}}, "split": {"folds": 3}})
    assert list(config.runs)[:3] == ["unet.seed0.fold0", "unet.seed0.fold1", "unet.seed0.fold2"]
    assert len(config.runs) == 9 and config.groups["unet.seed1.fold2"] == "unet"
    keys = build_plan(config, tmp_path, REPO_CODE).runs
    assert len({keys[run]["preprocess"] for run in keys}) == 1
    assert len({keys[run]["split"] for run in keys}) == 1
    assert len({keys[run]["fold"] for run in keys}) == 3  # one subset table per fold, shared by recipes
    assert keys["wide.fold0"]["train"] != keys["wide.fold1"]["train"]


def test_a_run_without_folds_has_no_fold_stage(tmp_path):
    keys = build_plan(resolve_config({"runs": {"a": {}}}), tmp_path, REPO_CODE).runs["a"]
    assert "fold" not in keys


def test_folds_with_an_external_or_ensemble_run_are_refused_naming_the_key():
    runs = {"a": {}, "b": {"train": {"seed": 1}}, "e": ensemble("a", "b")}
    with pytest.raises(LesionflowError, match="'split.folds' makes one run per fold, but run 'e'"):
        resolve_config({"runs": runs, "split": {"folds": 2}})


def test_an_unknown_member_lists_only_the_runs_an_ensemble_can_name():
    runs = {
        "a": {},
        "unet": {"seeds": [0, 1]},
        "reg": {"task": "regression"},
        "other": ensemble("a", "unet"),
        "e": ensemble("a", "zz"),
    }
    data = {"source": "manifest", "manifest": "m.csv", "score_column": "s"}
    with pytest.raises(LesionflowError) as err:
        resolve_config({"runs": runs, "data": data})
    assert str(err.value) == (
        "config key 'runs.e.ensemble.members' names 'zz', which is neither a run nor a recipe with seeds; "
        "runs it can name: a, unet.seed0, unet.seed1; recipes with seeds: unet"
    )


def test_an_unknown_member_in_a_config_without_candidates_says_so():
    with pytest.raises(LesionflowError, match="names 'zz'.*; the config has no model or external"):
        resolve_config({"runs": {"e": ensemble("zz", "yy")}})


def test_a_fold_count_beyond_the_limit_is_refused_before_expanding():
    # Found by the fuzz tests: split.folds 2**63 - 1 expanded runs until memory ran out.
    # The schema's maximum refuses it first, naming the key; run_expansion's own limit stays behind it.
    with pytest.raises(LesionflowError, match=r"'split.folds': 9223372036854775807 is greater than"):
        resolve_config({"runs": {"a": {}}, "split": {"folds": 2**63 - 1}})
