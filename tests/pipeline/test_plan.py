"""The plan: what changes a key, and what must not."""

import json
from pathlib import Path

import numpy as np
import pytest
from codebase import REPO_CODE
from PIL import Image
from tiny_data import write_tiny_manifest

from lesionflow.pipeline import plan as plan_module
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.plan import PLAN_ENV, build_plan, plan_from_record, plan_record, shared_plan


def plan_for(runs, tmp_path, **extra):
    return build_plan(resolve_config({"runs": runs, **extra}), tmp_path, REPO_CODE)


def test_tta_change_keeps_train_key_and_changes_infer_key(tmp_path):
    plan = plan_for({"a": {}, "b": {"infer": {"tta": ["identity", "hflip"]}}}, tmp_path)
    a, b = plan.runs["a"], plan.runs["b"]
    assert a["train"] == b["train"]
    for stage in ("infer", "tune", "evaluate", "breakdown", "analyse"):
        assert a[stage] != b[stage], stage


def test_identical_runs_share_every_key_and_one_train_job(tmp_path):
    plan = plan_for({"a": {}, "b": {}}, tmp_path)
    assert plan.runs["a"] == plan.runs["b"]
    assert len(plan.jobs["train"]) == 1


def test_run_name_is_not_part_of_any_key(tmp_path):
    first = plan_for({"old_name": {"train": {"epochs": 3}}}, tmp_path)
    second = plan_for({"new_name": {"train": {"epochs": 3}}}, tmp_path)
    assert first.runs["old_name"] == second.runs["new_name"]


def test_device_workers_and_inference_batch_do_not_change_keys(tmp_path):
    plan = plan_for(
        {
            "a": {},
            "b": {
                "train": {"device": "cpu", "num_workers": 4},
                "infer": {"batch_size": 2, "device": "cpu"},
                "resources": {"threads": 8},
            },
        },
        tmp_path,
    )
    assert plan.runs["a"] == plan.runs["b"]


def test_training_change_changes_every_downstream_key(tmp_path):
    plan = plan_for({"a": {}, "b": {"train": {"epochs": 3}}}, tmp_path)
    a, b = plan.runs["a"], plan.runs["b"]
    assert a["data"] == b["data"] and a["split"] == b["split"]
    assert all(a[s] != b[s] for s in ("train", "infer", "tune", "evaluate", "analyse"))


def test_split_seed_changes_split_and_later_keys_only(tmp_path):
    one = plan_for({"a": {}}, tmp_path)
    two = plan_for({"a": {}}, tmp_path, split={"seed": 1})
    assert one.runs["a"]["data"] == two.runs["a"]["data"]
    assert one.runs["a"]["split"] != two.runs["a"]["split"]
    assert one.runs["a"]["train"] != two.runs["a"]["train"]


def test_an_nnunet_splits_file_enters_the_split_key_by_content_not_by_path(tmp_path):
    folds = [{"train": ["a"], "val": ["b"]}]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    for folder in ("one", "two"):
        (tmp_path / folder / "splits_final.json").write_text(json.dumps(folds))
    here = plan_for({"a": {}}, tmp_path, split={"nnunet_splits": "one/splits_final.json"})
    moved = plan_for({"a": {}}, tmp_path, split={"nnunet_splits": "two/splits_final.json"})
    assert here.runs["a"] == moved.runs["a"]
    (tmp_path / "two" / "splits_final.json").write_text(json.dumps([{"train": ["b"], "val": ["a"]}]))
    edited = plan_for({"a": {}}, tmp_path, split={"nnunet_splits": "two/splits_final.json"})
    assert edited.runs["a"]["data"] == here.runs["a"]["data"]
    assert edited.runs["a"]["split"] != here.runs["a"]["split"]
    # The job reads the file as the config names it, from the working directory where jobs run.
    (job,) = edited.jobs["split"].values()
    assert job.settings["nnunet_splits"] == "two/splits_final.json"


def test_a_missing_nnunet_splits_file_names_the_key(tmp_path):
    with pytest.raises(LesionflowError, match=r"split\.nnunet_splits: file .*gone\.json does not exist"):
        plan_for({"a": {}}, tmp_path, split={"nnunet_splits": "gone.json"})


def test_manifest_source_key_changes_with_one_pixel(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    config = {"runs": {"a": {}}, "data": {"source": "manifest", "manifest": "data/manifest.csv"}}
    before = build_plan(resolve_config(config), tmp_path, REPO_CODE).runs["a"]
    pixels = np.array(Image.open(manifest.parent / "img0.png"))
    pixels[3, 3, 1] += 1
    Image.fromarray(pixels).save(manifest.parent / "img0.png")
    after = build_plan(resolve_config(config), tmp_path, REPO_CODE).runs["a"]
    assert all(before[stage] != after[stage] for stage in before)


def test_plan_survives_its_json_record():
    config = resolve_config({"runs": {"a": {}, "b": {"infer": {"tta": ["identity", "hflip"]}}}})
    plan = build_plan(config, ".", REPO_CODE)
    again = plan_from_record(json.loads(json.dumps(plan_record(plan, config))))
    assert again.runs == plan.runs and again.baseline == plan.baseline
    key = plan.runs["b"]["infer"]
    assert again.job("infer", key) == plan.job("infer", key)


def test_a_job_reuses_the_plan_its_snakemake_wrote_even_after_a_code_change(tmp_path):
    config = resolve_config({"runs": {"a": {}}})
    environ: dict[str, str] = {}
    first = shared_plan(config, tmp_path, environ, REPO_CODE)
    assert Path(environ[PLAN_ENV]).is_file()
    # Doctor the stored plan as if the code had changed since: a job must still see the run's keys.
    record = json.loads(Path(environ[PLAN_ENV]).read_text())
    record["runs"]["a"]["train"] = "0123456789ab"
    Path(environ[PLAN_ENV]).write_text(json.dumps(record))
    assert shared_plan(config, tmp_path, environ, REPO_CODE).runs["a"]["train"] == "0123456789ab"
    assert first.runs["a"]["train"] != "0123456789ab"


def test_a_plan_made_from_another_config_is_not_reused(tmp_path):
    environ: dict[str, str] = {}
    shared_plan(resolve_config({"runs": {"a": {}}}), tmp_path, environ, REPO_CODE)
    other = resolve_config({"runs": {"a": {"train": {"epochs": 3}}}})
    reused = shared_plan(other, tmp_path, environ, REPO_CODE)
    assert reused.runs == build_plan(other, tmp_path, REPO_CODE).runs


# ---------------------------------------------------------------- regression runs


def loes_plan(runs, tmp_path):
    raw = {"data": {"synthetic": {"kind": "loes"}}, "defaults": {"task": "regression"}, "runs": runs}
    return build_plan(resolve_config(raw), tmp_path, REPO_CODE)


def test_a_regression_run_has_the_score_stages_and_none_of_the_mask_stages(tmp_path):
    keys = loes_plan({"a": {}}, tmp_path).runs["a"]
    assert set(keys) == {
        "data",
        "split",
        "preprocess",
        "train",
        "infer_scores",
        "calibrate",
        "evaluate_scores",
        "analyse_scores",
        "training_report",
    }


def test_changing_the_loss_weighting_retrains_a_regression_run(tmp_path):
    plan = loes_plan({"a": {}, "b": {"train": {"sample_weights": "inverse_frequency"}}}, tmp_path)
    a, b = plan.runs["a"], plan.runs["b"]
    assert a["preprocess"] == b["preprocess"]
    assert all(a[s] != b[s] for s in ("train", "infer_scores", "calibrate", "evaluate_scores"))


def test_changing_only_tta_or_calibration_never_retrains_a_regression_run(tmp_path):
    plan = loes_plan(
        {
            "a": {},
            "tta": {"infer": {"tta": ["identity", "flip0"]}},
            "calibrated": {"tune": {"calibration": "linear"}},
        },
        tmp_path,
    )
    a, tta, calibrated = (plan.runs[n] for n in ("a", "tta", "calibrated"))
    assert a["train"] == tta["train"] == calibrated["train"]
    assert len(plan.jobs["train"]) == 1
    assert a["infer_scores"] != tta["infer_scores"]
    assert a["infer_scores"] == calibrated["infer_scores"]
    assert a["calibrate"] != calibrated["calibrate"] and a["evaluate_scores"] != calibrated["evaluate_scores"]


def test_segmentation_and_regression_runs_share_the_data_and_split(tmp_path):
    raw = {
        "data": {"synthetic": {"kind": "loes"}},
        "runs": {"seg": {"model": {"spatial_dims": 3}}, "reg": {"task": "regression"}},
    }
    plan = build_plan(resolve_config(raw), tmp_path, REPO_CODE)
    seg, reg = plan.runs["seg"], plan.runs["reg"]
    assert seg["data"] == reg["data"] and seg["split"] == reg["split"]
    assert "evaluate" in seg and "evaluate" not in reg
    assert plan.baseline_of("evaluate") == "seg" and plan.baseline_of("evaluate_scores") == "reg"


def test_library_versions_enter_the_keys_of_training_and_inference_only_when_asked(tmp_path, monkeypatch):
    asked = {"reproducibility": {"versions_in_keys": True}}
    default = plan_for({"a": {}}, tmp_path).runs["a"]
    assert plan_for({"a": {}}, tmp_path, reproducibility={"versions_in_keys": False}).runs["a"] == default
    with_versions = plan_for({"a": {}}, tmp_path, **asked).runs["a"]
    for stage in ("data", "split", "preprocess"):
        assert with_versions[stage] == default[stage], stage
    for stage in ("train", "infer", "tune", "evaluate", "training_report"):
        assert with_versions[stage] != default[stage], stage
    installed = plan_module.package_versions()
    monkeypatch.setattr(plan_module, "package_versions", lambda: {**installed, "monai": "0.0.1"})
    upgraded = plan_for({"a": {}}, tmp_path, **asked).runs["a"]
    assert upgraded["preprocess"] == with_versions["preprocess"]
    assert upgraded["train"] != with_versions["train"] and upgraded["infer"] != with_versions["infer"]
    monkeypatch.setattr(plan_module, "package_versions", lambda: {**installed, "pandas": "0.0.1"})
    assert plan_for({"a": {}}, tmp_path, **asked).runs["a"] == with_versions  # not one of torch, MONAI, numpy


def test_jobs_receive_the_paths_the_config_gives_not_resolved_ones(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    relative = manifest.relative_to(tmp_path).as_posix()
    plan = plan_for({"a": {}}, tmp_path, data={"source": "manifest", "manifest": f"./{relative}"})
    assert plan.job("data", plan.runs["a"]["data"]).settings["manifest"] == relative


def test_a_binary_dataset_keeps_the_data_settings_it_had_before_lesion_classes(tmp_path):
    plain = plan_for({"a": {}}, tmp_path)
    explicit = plan_for({"a": {}}, tmp_path, data={"labels": None, "synthetic": {"haemorrhages": False}})
    assert plain.runs == explicit.runs
    settings = plain.job("data", plain.runs["a"]["data"]).settings
    # The keys a data job received before data.labels and data.synthetic.haemorrhages existed.
    assert set(settings) == {"source", "synthetic", "score_column", "score_range", "invalid_scores"}
    assert set(settings["synthetic"]) == {"kind", "n_images", "image_size", "lesion_free_fraction", "seed"}


def test_lesion_classes_enter_the_data_key_and_everything_after_it(tmp_path):
    data = {"synthetic": {"kind": "loes", "n_images": 12}}
    runs = {"a": {"task": "regression"}}
    binary = plan_for(runs, tmp_path, data=data)
    classes = plan_for(runs, tmp_path, data={**data, "labels": {"classes": {"lesion": 1, "other": 2}}})
    for stage, key in binary.runs["a"].items():
        assert classes.runs["a"][stage] != key, stage
    assert classes.job("data", classes.runs["a"]["data"]).settings["labels"] == {
        "classes": {"lesion": 1, "other": 2}
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"synthetic": {"haemorrhages": True}},
            r"'data.synthetic.haemorrhages' writes label maps .*set data.labels.classes",
        ),
        (
            {"synthetic": {"kind": "brain", "haemorrhages": True}, "labels": {"classes": {"a": 1, "b": 2}}},
            r"'data.synthetic.haemorrhages' applies to kind fundus, not 'brain'",
        ),
        (
            {"labels": {"classes": {"Exudate": 1}}},
            r"'data.labels.classes.Exudate': a class name is lower-case",
        ),
    ],
)
def test_lesion_class_settings_that_cannot_work_are_refused_naming_the_key(tmp_path, data, message):
    with pytest.raises(LesionflowError, match=message):
        plan_for({"a": {}}, tmp_path, data=data)


HAEMORRHAGES = {"synthetic": {"haemorrhages": True}, "labels": {"classes": {"exudate": 1, "haemorrhage": 2}}}


@pytest.mark.parametrize(
    ("runs", "extra", "message"),
    [
        (
            {"a": {"model": {"presence_head": True}}},
            {},
            r"'runs.a.model.presence_head': a presence head is for one",
        ),
        ({"a": {"source": "external", "external": {"predictions": "p"}}}, {}, r"'runs.a.source' is external"),
        ({"a": {}}, {"split": {"folds": 3}}, r"'split.folds': k-fold runs of several lesion classes"),
        (
            {"a": {}},
            {"nnunet_export": {"dataset_id": 501}},
            r"'nnunet_export': exporting several lesion classes",
        ),
    ],
)
def test_what_runs_of_several_classes_cannot_do_yet_is_refused_naming_the_key(tmp_path, runs, extra, message):
    with pytest.raises(LesionflowError, match=message):
        plan_for(runs, tmp_path, data=HAEMORRHAGES, **extra)


def test_a_segmentation_run_of_several_classes_is_planned_through_every_stage(tmp_path):
    plan = plan_for({"a": {}}, tmp_path, data=HAEMORRHAGES)
    assert {"data", "split", "preprocess", "train", "infer", "tune", "evaluate", "analyse"} <= set(
        plan.runs["a"]
    )
