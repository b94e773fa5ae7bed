"""The reviewer's tools on a finished pipeline: a moved project reruns nothing and verifies, a changed
byte is named, a run reproduces within tolerances, gc finds exactly what no run uses, and an
exported run's bundle predicts the pipeline's locked masks."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lesionflow.io.readers import read_mask
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.fingerprints import CodeBase
from lesionflow.pipeline.plan import build_plan
from lesionflow.review import cli

from .pipeline import planned_jobs, write_config

pytestmark = pytest.mark.slow

# One line of `lesionflow gc`: kind, size and unit, path.
GC_LINE = re.compile(r"^(artifact|log|plan|run view)\s+\S+ \S+\s+(\S+)$")


def lesionflow(capsys, workdir, code_copy, *args, config="config.yaml"):
    """Run one lesionflow command in-process on the project in ``workdir`` with its ``config``;
    (exit status, stdout, stderr)."""
    project = ["--directory", str(workdir), "--snakefile", str(code_copy / "Snakefile")]
    try:
        status = cli.main([*args, *project, "--configfile", str(workdir / config)])
    except SystemExit as exit_info:
        status = exit_info.code
    output = capsys.readouterr()
    return status, output.out, output.err


def keys_of(workdir, config, code_copy):
    return build_plan(resolve_config(config), workdir, CodeBase.installed(code_copy)).runs


@pytest.fixture(scope="module")
def moved(finished, tmp_path_factory):
    """The finished project copied, results, logs and Snakemake's records included, to another path
    (modification times kept, as cp -a and rsync -a do)."""
    workdir, config = finished
    destination = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(workdir, destination, symlinks=True)
    return destination, config


def test_a_moved_project_reruns_nothing_and_verifies(moved, code_copy, capsys):
    workdir, _ = moved
    jobs, text = planned_jobs(workdir, repo=code_copy)
    assert sum(jobs.values()) == 0, text
    status, out, _ = lesionflow(capsys, workdir, code_copy, "verify")
    assert status == 0, out
    assert "all 17 artifacts" in out and "match their provenance records" in out


def test_runs_lists_both_runs_done_with_their_keys_and_metrics(moved, code_copy, capsys):
    workdir, config = moved
    status, out, _ = lesionflow(capsys, workdir, code_copy, "runs", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    keys = keys_of(workdir, config, code_copy)
    assert status == 0 and set(rows) == {"base", "tta"}
    for name, row in rows.items():
        assert row["status"] == "done" and row["built"] == row["jobs"] == 11
        assert row["keys"] == keys[name]
        summary = json.loads(
            (workdir / f"results/evaluate/{keys[name]['evaluate']}/summary.json").read_text()
        )
        assert row["metrics"]["dice_pos"] == summary["test"]["dice_pos"]


def test_one_edited_byte_is_named_by_verify(moved, code_copy, capsys):
    workdir, config = moved
    table = (
        workdir
        / f"results/evaluate/{keys_of(workdir, config, code_copy)['tta']['evaluate']}/per_image_test.csv"
    )
    original = table.read_bytes()
    table.write_bytes(original[:20] + bytes([original[20] ^ 1]) + original[21:])
    try:
        status, out, err = lesionflow(capsys, workdir, code_copy, "verify")
    finally:
        table.write_bytes(original)
    assert status == 1
    relative = table.relative_to(workdir).as_posix()
    assert out.splitlines() == [f"CHANGED         {relative}: its bytes differ from those its record lists"]
    assert "1 problem(s) in 17 artifacts" in err


def test_reproduce_rebuilds_the_branch_elsewhere_and_every_metric_holds(moved, code_copy, capsys, tmp_path):
    workdir, config = moved
    again = tmp_path / "again"
    status, out, err = lesionflow(
        capsys, workdir, code_copy, "reproduce", "base", "--out", str(again), "--cores", "2"
    )
    assert status == 0, out + err
    # Only the run's branch up to its evaluation: no notebook, nothing of the other run.
    built = {path.parent.name for path in (again / "results").glob("*/*")}
    assert built == {"data", "split", "preprocess", "train", "infer", "tune", "evaluate"}
    assert not (again / f"results/infer/{keys_of(workdir, config, code_copy)['tta']['infer']}").exists()
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("metric "))
    assert lines[header].split() == ["metric", "original", "reproduced", "difference", "tolerance", "verdict"]
    rows = [line.split() for line in lines[header + 1 :] if line.startswith(("val.", "test."))]
    assert {row[0] for row in rows} >= {"test.dice_pos", "test.lesion_f1", "test.presence_roc_auc"}
    assert all(row[-1] == "ok" for row in rows)
    assert "within their tolerances" in out


def test_gc_after_renaming_a_run_and_changing_its_tta_lists_exactly_what_no_run_uses(
    moved, code_copy, capsys
):
    workdir, config = moved
    changed = yaml.safe_load(yaml.safe_dump(config))
    changed["runs"] = {"base": changed["runs"]["base"], "flipped": changed["runs"]["tta"]}
    changed["runs"]["flipped"]["infer"]["tta"] = ["identity", "vflip"]
    (workdir / "changed.yaml").write_text(yaml.safe_dump(changed))
    old, new = keys_of(workdir, config, code_copy), keys_of(workdir, changed, code_copy)
    used = {f"results/{stage}/{key}" for keys in new.values() for stage, key in keys.items()}
    expected = {f"results/{stage}/{key}" for stage, key in old["tta"].items()} - used
    stages = {"infer", "tune", "evaluate", "export", "breakdown", "analyse"}
    assert {path.split("/")[1] for path in expected} == stages

    status, out, _ = lesionflow(capsys, workdir, code_copy, "gc", config="changed.yaml")
    listed = [GC_LINE.match(line).groups() for line in out.splitlines()[:-1]]
    assert status == 0 and "--yes deletes them" in out
    assert {path for kind, path in listed if kind == "artifact"} == expected
    assert {path for kind, path in listed if kind == "run view"} == {"results/runs/tta"}
    assert {path.split("/")[0] for kind, path in listed if kind in ("log", "plan")} == {"logs", ".lesionflow"}

    status, out, _ = lesionflow(capsys, workdir, code_copy, "gc", "--yes", config="changed.yaml")
    assert status == 0 and "freed" in out
    assert not any((workdir / path).exists() for path in expected)
    # All the changed config uses is still there: only the changed run's inference onwards reruns.
    write_config(workdir, changed)
    jobs, text = planned_jobs(workdir, repo=code_copy)
    assert jobs["train"] == 0 and jobs["preprocess"] == 0, text
    assert jobs["infer"] == 2 and jobs["evaluate"] == 1, text


def test_an_exported_runs_predict_gives_the_pipelines_locked_masks(finished, code_copy, capsys, tmp_path):
    workdir, config = finished
    bundle = tmp_path / "bundle"
    status, _, err = lesionflow(capsys, workdir, code_copy, "export", "tta", str(bundle))
    assert status == 0, err
    keys = keys_of(workdir, config, code_copy)["tta"]
    record = json.loads((bundle / "bundle.json").read_text())
    assert record["infer"]["tta"] == ["identity", "hflip"]
    records = {path.name for path in (bundle / "provenance").iterdir()}
    assert records == {f"{stage}.json" for stage in set(keys) - {"infer"}} | {
        "infer_val.json",
        "infer_test.json",
    }
    export = json.loads((workdir / f"results/export/{keys['export']}/export.json").read_text())
    sources = [item["source"] for item in export["files"]["test"]]
    masks = tmp_path / "masks"
    subprocess.run([sys.executable, str(bundle / "predict.py"), *sources, "--out", str(masks)], check=True)
    exported = sorted((workdir / f"results/export/{keys['export']}/test/masks").iterdir())
    assert len(exported) == len(sources) > 0
    for expected in exported:
        predicted = read_mask(masks / expected.name).array
        assert np.array_equal(predicted, read_mask(expected).array), expected.name
