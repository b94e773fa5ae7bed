"""verify, runs and show on a project whose artifacts are small files recorded as jobs record them."""

import json

import pytest
import yaml

from lesionflow.pipeline.plan import PLAN_ENV, plan_record
from lesionflow.pipeline.provenance import package_versions, recording
from lesionflow.pipeline.stages import STAGES
from lesionflow.review import cli
from lesionflow.review.project import load_project
from lesionflow.review.show import show_key, show_run
from lesionflow.review.status import run_status
from lesionflow.review.verify import (
    ADDED,
    CHANGED,
    MISSING,
    NOT_BUILT,
    OTHER_CODE,
    OTHER_VERSIONS,
    verify_runs,
)

CONFIG = {
    "data": {"source": "synthetic"},
    "runs": {"base": {}, "tta": {"infer": {"tta": ["identity", "hflip"]}}},
}


def _build(project, jobs):
    """Write one small file per job (per part) and record it as the job's entry point would."""
    for job in jobs:
        folder = project.workdir / job.folder
        for part in STAGES[job.stage].parts or (None,):
            with recording(folder, stage=job.stage, part=part):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{part or 'out'}.json").write_text(json.dumps({"stage": job.stage}))


@pytest.fixture
def project(tmp_path, monkeypatch, repo_root):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    project = load_project(tmp_path / "config.yaml", tmp_path, repo_root / "Snakefile")
    plan_file = tmp_path / ".lesionflow" / "plan.json"
    plan_file.parent.mkdir(exist_ok=True)
    plan_file.write_text(json.dumps(plan_record(project.plan, project.config)))
    monkeypatch.setenv(PLAN_ENV, str(plan_file))
    _build(project, [project.plan.job(stage, key) for stage, key in project.plan.runs["base"].items()])
    return project


def _kinds(result):
    return {(finding.kind, finding.path) for finding in result.findings}


def test_a_built_branch_verifies_and_one_changed_byte_is_named(project):
    installed = package_versions()
    clean = verify_runs(project, ["base"], installed)
    assert clean.findings == [] and clean.jobs == len(project.plan.runs["base"])
    evaluate = project.workdir / project.plan.job("evaluate", project.plan.runs["base"]["evaluate"]).folder
    text = (evaluate / "out.json").read_text()
    (evaluate / "out.json").write_text(text.replace("e", "E", 1))
    found = verify_runs(project, ["base"], installed)
    relative = (evaluate / "out.json").relative_to(project.workdir).as_posix()
    assert _kinds(found) == {(CHANGED, relative)}


def test_missing_and_added_files_are_named(project):
    tune = project.workdir / f"results/tune/{project.plan.runs['base']['tune']}"
    (tune / "out.json").unlink()
    (tune / "extra.csv").write_text("x")
    folder = tune.relative_to(project.workdir).as_posix()
    assert _kinds(verify_runs(project, ["base"], package_versions())) == {
        (MISSING, f"{folder}/out.json"),
        (ADDED, f"{folder}/extra.csv"),
    }


def test_artifacts_of_other_code_or_other_library_versions_are_flagged(project):
    train = project.workdir / f"results/train/{project.plan.runs['base']['train']}"
    record = json.loads((train / "provenance.json").read_text())
    (train / "provenance.json").write_text(json.dumps({**record, "code": "0" * 32}))
    installed = {**package_versions(), "torch": "9.9.9"}
    found = verify_runs(project, ["base"], installed)
    kinds = {finding.kind for finding in found.findings}
    assert kinds == {OTHER_CODE, OTHER_VERSIONS}
    other_code = [f for f in found.findings if f.kind == OTHER_CODE]
    assert [f.path for f in other_code] == [train.relative_to(project.workdir).as_posix()]
    # Every artifact was made under the torch installed before: each is flagged, naming both versions.
    versions = [f for f in found.findings if f.kind == OTHER_VERSIONS]
    assert len(versions) == found.jobs
    assert all(f"torch {record['versions']['torch']} (now 9.9.9)" in f.detail for f in versions)


def test_a_run_not_built_yet_is_named_artifact_by_artifact(project):
    found = verify_runs(project, ["tta"], package_versions())
    shared = {s for s, k in project.plan.runs["tta"].items() if project.plan.runs["base"].get(s) == k}
    assert {"data", "split", "preprocess", "train"} <= shared
    not_built = {f.path.split("/")[1] for f in found.findings if f.kind == NOT_BUILT}
    assert not_built == set(project.plan.runs["tta"]) - shared


def test_runs_says_done_failed_stale_or_missing(project):
    installed = package_versions()
    assert run_status(project, "base", installed).status == "done"
    tta = project.plan.runs["tta"]
    assert run_status(project, "tta", installed).status == "missing"
    views = project.workdir / "results/runs/tta"
    views.mkdir(parents=True)
    (views / "index.json").write_text(json.dumps({"keys": {**tta, "infer": "0" * 12}}))
    assert run_status(project, "tta", installed).status == "stale"
    logs = project.workdir / "logs/infer"
    logs.mkdir(parents=True)
    (logs / f"{tta['infer']}_val.log").write_text("Traceback ...")
    status = run_status(project, "tta", installed)
    assert status.status == "failed" and status.failed_stages == ["infer"]


def test_show_gives_the_differences_to_the_baseline_and_an_artifacts_record(project):
    text = show_run(project, "tta", package_versions())
    assert 'infer.tta: ["identity"] -> ["identity","hflip"]' in text
    train = project.plan.runs["base"]["train"]
    assert f"train            {train}  done" in text
    record = show_key(project, train[:6])
    assert record.startswith(f"train {train}: done") and "runs: base, tta" in record
    assert '"outputs": "1 files' in record


def test_show_refuses_a_short_or_unknown_key_in_one_line(project, capsys):
    directory = ["--directory", str(project.workdir), "--configfile", str(project.configfile)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["show", "ab", *directory])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "lesionflow: error: key 'ab': give at least 4 characters of it"
    with pytest.raises(SystemExit):
        cli.main(["verify", "nosuchrun", *directory])
    assert "no run named nosuchrun" in capsys.readouterr().err


def test_verify_exits_one_naming_each_problem_and_zero_when_all_match(project, capsys):
    directory = ["--directory", str(project.workdir), "--configfile", str(project.configfile)]
    assert cli.main(["verify", "base", *directory]) == 0
    assert "all 11 artifacts" in capsys.readouterr().out
    assert cli.main(["verify", *directory]) == 1
    output = capsys.readouterr()
    assert "NOT BUILT" in output.out and "problem(s) in" in output.err


@pytest.mark.parametrize("command", ["runs", "show", "verify"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--configfile" in capsys.readouterr().out
