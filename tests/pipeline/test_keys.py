"""Content keys: what changes a key, and what must not."""

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.keys import (
    PLAN_ENV,
    FileHashCache,
    build_plan,
    code_fingerprint,
    digest,
    manifest_fingerprint,
    module_closure,
    normalised_code,
    plan_from_record,
    plan_record,
    shared_plan,
)


def plan_for(runs, tmp_path, **extra):
    return build_plan(resolve_config({"runs": runs, **extra}), tmp_path)


def test_digest_ignores_dict_order_and_int_float_spelling():
    assert digest({"a": 1, "b": [1, 2.0]}) == digest({"b": [1.0, 2], "a": 1.0})
    assert digest({"a": 1}) != digest({"a": 2})
    assert len(digest({})) == 12


def test_code_fingerprint_ignores_comments_docstrings_and_layout():
    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    cosmetic = '# a comment\ndef f( x ):\n    """Another doc."""\n\n    return x+1  # why\n'
    behaviour = 'def f(x):\n    """Doc."""\n    return x + 2\n'
    assert normalised_code(base) == normalised_code(cosmetic)
    assert normalised_code(base) != normalised_code(behaviour)


def test_stage_code_follows_lesionflow_imports():
    closure = module_closure("lesionflow.pipeline.keys")
    assert "lesionflow.pipeline.config" in closure and "lesionflow.pipeline.artifacts" in closure
    assert len(code_fingerprint("train")) == 32


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


def write_tiny_manifest(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["image,mask,subject"]
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(folder / f"img{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"mask{i}.png")
        rows.append(f"img{i}.png,mask{i}.png,s{i}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def test_manifest_fingerprint_follows_content_not_mtime(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    cache = FileHashCache(tmp_path / "cache.json")
    before = manifest_fingerprint(manifest, cache)
    for file in manifest.parent.iterdir():
        os.utime(file, ns=(1, 10**18))
    assert manifest_fingerprint(manifest, FileHashCache(tmp_path / "cache.json")) == before

    pixels = np.array(Image.open(manifest.parent / "img1.png"))
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(manifest.parent / "img1.png")
    assert manifest_fingerprint(manifest, FileHashCache(tmp_path / "cache.json")) != before


def test_moving_a_manifest_dataset_keeps_its_fingerprint(tmp_path):
    first = manifest_fingerprint(write_tiny_manifest(tmp_path / "a"), FileHashCache(tmp_path / "c"))
    second = manifest_fingerprint(
        write_tiny_manifest(tmp_path / "b"), FileHashCache(tmp_path / "c")
    )
    assert first == second


def test_hash_cache_only_rehashes_changed_files(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    cache = FileHashCache(tmp_path / "cache.json")
    manifest_fingerprint(manifest, cache)
    reloaded = FileHashCache(tmp_path / "cache.json")
    manifest_fingerprint(manifest, reloaded)
    assert reloaded.dirty is False and len(reloaded.entries) == 6


def test_a_missing_file_is_fingerprinted_so_the_data_stage_can_report_every_one(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    complete = manifest_fingerprint(manifest, FileHashCache(tmp_path / "c"))
    (manifest.parent / "mask2.png").unlink()
    # No error while planning: the manifest check of the data job lists all missing files.
    missing = manifest_fingerprint(manifest, FileHashCache(tmp_path / "c"))
    assert missing != complete


def test_manifest_source_key_changes_with_one_pixel(tmp_path):
    manifest = write_tiny_manifest(tmp_path / "data")
    config = {"runs": {"a": {}}, "data": {"source": "manifest", "manifest": "data/manifest.csv"}}
    before = build_plan(resolve_config(config), tmp_path).runs["a"]
    pixels = np.array(Image.open(manifest.parent / "img0.png"))
    pixels[3, 3, 1] += 1
    Image.fromarray(pixels).save(manifest.parent / "img0.png")
    after = build_plan(resolve_config(config), tmp_path).runs["a"]
    assert all(before[stage] != after[stage] for stage in before)


def test_plan_survives_its_json_record():
    config = resolve_config({"runs": {"a": {}, "b": {"infer": {"tta": ["identity", "hflip"]}}}})
    plan = build_plan(config, ".")
    again = plan_from_record(json.loads(json.dumps(plan_record(plan, config))))
    assert again.runs == plan.runs and again.baseline == plan.baseline
    key = plan.runs["b"]["infer"]
    assert again.job("infer", key) == plan.job("infer", key)


def test_a_job_reuses_the_plan_its_snakemake_wrote_even_after_a_code_change(tmp_path):
    config = resolve_config({"runs": {"a": {}}})
    environ: dict[str, str] = {}
    first = shared_plan(config, tmp_path, environ)
    assert Path(environ[PLAN_ENV]).is_file()
    # Doctor the stored plan as if the code had changed since: a job must still see the run's keys.
    record = json.loads(Path(environ[PLAN_ENV]).read_text())
    record["runs"]["a"]["train"] = "0123456789ab"
    Path(environ[PLAN_ENV]).write_text(json.dumps(record))
    assert shared_plan(config, tmp_path, environ).runs["a"]["train"] == "0123456789ab"
    assert first.runs["a"]["train"] != "0123456789ab"


def test_a_plan_made_from_another_config_is_not_reused(tmp_path):
    environ: dict[str, str] = {}
    shared_plan(resolve_config({"runs": {"a": {}}}), tmp_path, environ)
    other = resolve_config({"runs": {"a": {"train": {"epochs": 3}}}})
    assert shared_plan(other, tmp_path, environ).runs == build_plan(other, tmp_path).runs
