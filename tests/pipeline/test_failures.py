"""After failed jobs: which runs lack test results, and which of their stages failed, from files alone."""

from pathlib import Path

from codebase import REPO_CODE

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.failures import ancestors, expand_pattern, run_failures
from lesionflow.pipeline.plan import build_plan

OUTPUTS = {
    "data": ["results/data/{key}/manifest.csv"],
    "split": ["results/split/{key}/split.csv"],
    "preprocess": ["results/preprocess/{key}/manifest.csv"],
    "train": ["results/train/{key}/model.pt"],
    "infer": ["results/infer/{key}/{subset}.npz"],
    "tune": ["results/tune/{key}/locked.json"],
    "evaluate": ["results/evaluate/{key}/summary.json"],
}
LOGS = {
    "data": ["logs/data/{key}.log"],
    "train": ["logs/train/{key}.log"],
    "infer": ["logs/infer/{key}_{subset}.log"],
    "tune": ["logs/tune/{key}.log"],
}


def touch(workdir: Path, pattern: str, key: str) -> None:
    for path in expand_pattern(pattern, key):
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text("x")


def finish(workdir: Path, keys: dict, stages) -> None:
    for stage in stages:
        for pattern in OUTPUTS[stage]:
            touch(workdir, pattern, keys[stage])


def test_patterns_expand_to_every_subset():
    paths = expand_pattern("logs/infer/{key}_{subset}.log", "abc")
    assert sorted(paths) == ["logs/infer/abc_test.log", "logs/infer/abc_val.log"]


def test_the_ancestors_of_evaluate_are_the_stages_it_needs_in_pipeline_order():
    needed = ["data", "split", "preprocess", "fold", "train", "infer", "tune", "evaluate"]
    assert ancestors("evaluate") == needed


def test_a_run_whose_training_failed_is_named_with_the_train_log(tmp_path):
    config = resolve_config({"runs": {"good": {}, "bad": {"train": {"epochs": 2}}}})
    plan = build_plan(config, tmp_path, REPO_CODE)
    good, bad = plan.runs["good"], plan.runs["bad"]
    finish(tmp_path, good, OUTPUTS)
    finish(tmp_path, bad, ("data", "split", "preprocess"))
    touch(tmp_path, "logs/train/{key}.log", bad["train"])
    failures = run_failures(plan, OUTPUTS, LOGS, tmp_path)
    assert list(failures) == ["bad"]
    assert failures["bad"]["stage"] == "train"
    assert failures["bad"]["log"] == f"logs/train/{bad['train']}.log"
    assert "stage train failed" in failures["bad"]["reason"]


def test_a_half_finished_inference_is_the_failed_stage(tmp_path):
    plan = build_plan(resolve_config({"runs": {"a": {}}}), tmp_path, REPO_CODE)
    keys = plan.runs["a"]
    finish(tmp_path, keys, ("data", "split", "preprocess", "train"))
    (tmp_path / f"results/infer/{keys['infer']}").mkdir(parents=True)
    (tmp_path / f"results/infer/{keys['infer']}/val.npz").write_text("x")
    touch(tmp_path, "logs/infer/{key}_{subset}.log", keys["infer"])
    failure = run_failures(plan, OUTPUTS, LOGS, tmp_path)["a"]
    assert failure["stage"] == "infer" and "test.log" in failure["log"]


def test_a_stage_that_never_started_says_so_without_a_log(tmp_path):
    plan = build_plan(resolve_config({"runs": {"a": {}}}), tmp_path, REPO_CODE)
    failure = run_failures(plan, OUTPUTS, LOGS, tmp_path)["a"]
    assert failure["stage"] == "data" and failure["log"] == ""
    assert "never started" in failure["reason"] and "--keep-going" in failure["reason"]


def test_a_run_with_its_test_summary_has_not_failed_whatever_else_is_missing(tmp_path):
    plan = build_plan(resolve_config({"runs": {"a": {}}}), tmp_path, REPO_CODE)
    finish(tmp_path, plan.runs["a"], ("evaluate",))
    assert run_failures(plan, OUTPUTS, LOGS, tmp_path) == {}
