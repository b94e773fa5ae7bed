"""The six incremental-rerun properties, read from Snakemake's dry-run job lists."""

import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from codebase import REPO_CODE
from PIL import Image
from schema_settings import synthetic_settings

from lesionflow.data.synthetic import generate_dataset
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import PLAN_ENV, build_plan, shared_plan

from .pipeline import planned_jobs, snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow

TRAIN_AND_LATER = {"train", "infer", "tune", "evaluate", "breakdown", "analyse", "training_report"}


def planned_after_edit(workdir, code_copy, relative):
    """Jobs a dry run plans once ``relative`` (in the package copy) computes something new."""
    path = code_copy / "src" / "lesionflow" / relative
    original = path.read_text()
    path.write_text(original + "\nedited_by_test = 1\n")
    try:
        return planned_jobs(workdir, repo=code_copy)
    finally:
        path.write_text(original)


def keys_of(workdir, config):
    return build_plan(resolve_config(config), workdir, REPO_CODE).runs


def test_complete_run_leaves_nothing_to_do(finished, code_copy):
    workdir, _ = finished
    jobs, text = planned_jobs(workdir, repo=code_copy)
    assert sum(jobs.values()) == 0, text
    assert "Nothing to be done" in text


def test_tta_change_reruns_inference_onwards_and_no_training(finished, code_copy):
    workdir, config = finished
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["runs"]["tta"]["infer"]["tta"] = ["identity", "vflip"]
    write_config(workdir, changed)
    try:
        jobs, text = planned_jobs(workdir, repo=code_copy)
    finally:
        write_config(workdir, config)
    assert jobs["train"] == 0 and jobs["training_report"] == 0, text
    assert jobs["infer"] == 2 and jobs["tune"] == 1 and jobs["evaluate"] == 1, text
    assert jobs["breakdown"] == 1 and jobs["analyse"] == 1, text
    # Only the changed run is affected.
    assert jobs["run_view"] == 1, text


def test_renaming_a_run_reruns_no_training_inference_tuning_or_evaluation(finished, code_copy):
    workdir, config = finished
    renamed = yaml.safe_load(yaml.safe_dump(config))
    renamed["runs"] = {"renamed": renamed["runs"]["base"], "tta": renamed["runs"]["tta"]}
    write_config(workdir, renamed)
    try:
        jobs, text = planned_jobs(workdir, repo=code_copy)
    finally:
        write_config(workdir, config)
    assert not (TRAIN_AND_LATER & {rule for rule, n in jobs.items() if n}), text
    assert jobs["run_view"] == 1 and jobs["compare"] == 1, text


def test_editing_tta_code_reruns_inference_onwards_and_never_training(finished, code_copy):
    workdir, _ = finished
    jobs, text = planned_after_edit(workdir, code_copy, "model/tta.py")
    assert jobs["train"] == 0 and jobs["training_report"] == 0 and jobs["preprocess"] == 0, text
    assert jobs["infer"] == 4 and jobs["evaluate"] == 2 and jobs["analyse"] == 2, text


def test_editing_a_metric_reruns_evaluation_onwards_and_never_inference(finished, code_copy):
    workdir, _ = finished
    jobs, text = planned_after_edit(workdir, code_copy, "evaluation/metrics.py")
    assert jobs["infer"] == 0 and jobs["train"] == 0, text
    assert jobs["evaluate"] == 2 and jobs["compare"] == 1, text


def test_editing_the_leaderboard_code_reruns_the_leaderboard_and_its_notebook_only(finished, code_copy):
    workdir, _ = finished
    jobs, text = planned_after_edit(workdir, code_copy, "evaluation/leaderboard.py")
    assert jobs["compare"] == 1 and jobs["compare_report"] == 1, text
    assert not {rule for rule, n in jobs.items() if n} - {"compare", "compare_report", "all"}, text


def test_editing_the_run_view_code_rebuilds_the_views_only(finished, code_copy):
    workdir, _ = finished
    jobs, text = planned_after_edit(workdir, code_copy, "reports/views.py")
    assert jobs["run_view"] == 2, text
    assert not {rule for rule, n in jobs.items() if n} - {"run_view", "all"}, text


def test_identical_runs_share_one_training_job(tmp_path):
    write_config(tmp_path, tiny_config({"one": tiny_run(), "two": tiny_run()}))
    jobs, text = planned_jobs(tmp_path)
    assert jobs["train"] == 1 and jobs["evaluate"] == 1, text
    assert jobs["run_view"] == 2, text


def test_one_run_target_builds_that_branch_only(tmp_path):
    config = tiny_config({"mine": tiny_run(), "other": tiny_run(train={"epochs": 2})})
    write_config(tmp_path, config)
    keys = keys_of(tmp_path, config)
    jobs, text = planned_jobs(tmp_path, "results/runs/mine/index.json")
    assert jobs["train"] == 1 and jobs["analyse"] == 1 and jobs["compare"] == 0, text
    assert keys["mine"]["train"] in text
    assert keys["other"]["train"] not in text


def make_manifest_dataset(folder):
    generate_dataset(folder, **synthetic_settings(n_images=24, image_size=32, seed=5))
    return folder / "manifest.csv"


def test_manifest_data_one_pixel_reruns_downstream_and_touch_reruns_nothing(tmp_path):
    make_manifest_dataset(tmp_path / "mydata")
    config = tiny_config({"r": tiny_run()})
    config["data"] = {"source": "manifest", "manifest": "mydata/manifest.csv"}
    write_config(tmp_path, config)
    target = f"results/split/{keys_of(tmp_path, config)['r']['split']}/split.csv"
    snakemake(tmp_path, target)

    for file in (tmp_path / "mydata").rglob("*"):
        os.utime(file, ns=(2 * 10**18, 2 * 10**18))
    jobs, text = planned_jobs(tmp_path, target)
    assert sum(jobs.values()) == 0, text

    image = sorted((tmp_path / "mydata" / "images").iterdir())[0]
    pixels = np.array(Image.open(image))
    pixels[0, 0, 0] = (int(pixels[0, 0, 0]) + 1) % 256
    Image.fromarray(pixels).save(image)
    jobs, text = planned_jobs(tmp_path)
    assert jobs["data"] == 1 and jobs["split"] == 1 and jobs["train"] == 1, text
    assert jobs["evaluate"] == 1 and jobs["compare"] == 1, text


def test_no_tune_job_reads_a_test_split_file(finished, code_copy):
    workdir, _ = finished
    _, text = planned_jobs(workdir, "--forceall", repo=code_copy)
    blocks = re.split(r"\n(?=\S*rule \w+:)", text)
    tune_blocks = [b for b in blocks if re.match(r"\S*rule tune:", b.strip())]
    assert tune_blocks, text
    for block in tune_blocks:
        inputs = re.search(r"input: (.*)", block).group(1)
        assert "test" not in inputs, block
        assert "val.npz" in inputs


def test_jobs_take_their_keys_from_the_plan_their_snakemake_wrote(tmp_path, monkeypatch):
    # Cluster jobs parse the Snakefile again; with code edited meanwhile they would compute other
    # keys. The plan named in LESIONFLOW_PLAN wins, so here a doctored plan's key must show up.
    config = tiny_config({"r": tiny_run()})
    write_config(tmp_path, config)
    environ: dict[str, str] = {}
    plan = shared_plan(resolve_config(config), tmp_path, environ, REPO_CODE)
    path = Path(environ[PLAN_ENV])
    path.write_text(path.read_text().replace(plan.runs["r"]["train"], "0123456789ab"))
    monkeypatch.setenv(PLAN_ENV, str(path))
    _, text = planned_jobs(tmp_path)
    assert "results/train/0123456789ab/model.pt" in text
    assert plan.runs["r"]["train"] not in text


def test_a_second_config_file_may_plan_in_the_folder_but_not_overwrite_its_leaderboard(
    finished, code_copy, tmp_path
):
    workdir, config = finished
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tiny_config({"base": tiny_run(infer={"tta": ["identity", "vflip"]})})))
    results = sorted(workdir.glob("results/**/*"))
    before = {path: path.stat().st_mtime_ns for path in results if path.is_file()}
    # A dry run writes nothing: it may show what the other config would do.
    jobs, text = planned_jobs(workdir, "--configfile", str(other), repo=code_copy)
    assert jobs["train"] == 0 and jobs["infer"] == 2, text  # it shares the keyed training
    refused = snakemake(workdir, "--configfile", str(other), check=False, repo=code_copy)
    assert refused.returncode != 0
    line = next(x for x in refused.stderr.splitlines() if x.startswith("lesionflow: error:"))
    assert "belong to config.yaml" in line and str(other) in line and "--directory" in line
    assert {path: path.stat().st_mtime_ns for path in before} == before
    assert sorted(workdir.glob("results/**/*")) == results
