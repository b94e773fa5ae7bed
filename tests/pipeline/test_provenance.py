"""Provenance records: written last by a finished job, listing every file it wrote with its checksum."""

import hashlib
import json

import pytest
from codebase import REPO_CODE

from lesionflow.pipeline import provenance
from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import PLAN_ENV, build_plan, plan_record
from lesionflow.pipeline.provenance import PACKAGES, record_name, recording

KEY = "0123456789ab"


def _job_folder(tmp_path, stage="tune", key=KEY):
    folder = tmp_path / "results" / stage / key
    folder.mkdir(parents=True)
    return folder


def test_a_finished_job_records_every_file_it_wrote_with_its_checksum(tmp_path, monkeypatch):
    monkeypatch.delenv(PLAN_ENV, raising=False)
    folder = _job_folder(tmp_path)
    with recording(folder):
        (folder / "locked.json").write_text('{"threshold": 0.5}\n')
        (folder / "figures").mkdir()
        (folder / "figures" / "grid.png").write_bytes(b"\x89PNG fake")
        (folder / ".locked.json.abc.tmp").write_text("half")  # a temporary name is never an output
    record = json.loads((folder / "provenance.json").read_text())
    assert record["stage"] == "tune" and record["key"] == KEY
    assert set(record["outputs"]) == {"locked.json", "figures/grid.png"}
    expected = hashlib.blake2b(b'{"threshold": 0.5}\n', digest_size=16).hexdigest()
    assert record["outputs"]["locked.json"] == {"bytes": 19, "blake2b": expected}
    assert set(record["versions"]) == {"python", *PACKAGES}
    assert record["versions"]["torch"] is not None
    assert record["started"] <= record["finished"]
    assert record["host"]["cpus"] >= 1 and record["host"]["device"] == "cpu"
    # Outside a pipeline run there is no plan to take settings from: they are left out, not guessed.
    assert "settings" not in record and "code" not in record


def test_a_failed_job_leaves_no_record_and_removes_an_earlier_one(tmp_path):
    folder = _job_folder(tmp_path)
    (folder / "provenance.json").write_text("{}")
    with pytest.raises(RuntimeError), recording(folder):
        (folder / "locked.json").write_text("{}")
        raise RuntimeError("the job failed")
    assert not (folder / "provenance.json").exists()


def test_each_subset_job_of_a_shared_folder_records_its_own_files(tmp_path):
    folder = _job_folder(tmp_path, stage="infer")
    for subset in ("val", "test"):
        with recording(folder, part=subset):
            for name in (f"{subset}.npz", f"{subset}_tiles.npz", f"{subset}_infer.json"):
                (folder / name).write_text(subset)
    for subset in ("val", "test"):
        record = json.loads((folder / record_name(subset)).read_text())
        assert record["part"] == subset
        assert set(record["outputs"]) == {f"{subset}.npz", f"{subset}_tiles.npz", f"{subset}_infer.json"}


def test_a_job_removes_what_a_killed_attempt_left_half_written_and_only_its_own(tmp_path):
    folder = _job_folder(tmp_path, stage="infer")
    (folder / "figures").mkdir()
    left = [folder / ".val.npz.k3j2.tmp", folder / ".val_presence.csv.x1.tmp"]
    others = [folder / ".test.npz.q9.tmp", folder / "val.npz"]  # the test job's, running beside it
    for path in left + others:
        path.write_text("half")
    with recording(folder, part="val"):
        assert not any(path.exists() for path in left)
        assert all(path.exists() for path in others)
    whole = _job_folder(tmp_path / "other", stage="data")
    (whole / "images").mkdir()
    (whole / "images" / ".0001.png.a1.tmp").write_text("half")
    with recording(whole):
        assert not (whole / "images" / ".0001.png.a1.tmp").exists()


def test_a_folder_without_a_key_gets_no_record(tmp_path):
    folder = tmp_path / "results" / "compare"
    folder.mkdir(parents=True)
    with recording(folder, stage="compare_report"):
        (folder / "compare.html").write_text("<html>")
    assert not list(folder.glob("provenance*"))


def test_a_pipeline_job_records_its_settings_input_keys_and_code_from_the_plan(tmp_path, monkeypatch):
    config = resolve_config({"data": {"source": "synthetic"}, "runs": {"a": {}}})
    plan = build_plan(config, tmp_path, REPO_CODE)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan_record(plan, config)))
    monkeypatch.setenv(PLAN_ENV, str(plan_file))
    key = plan.runs["a"]["tune"]
    folder = _job_folder(tmp_path, key=key)
    with recording(folder):
        (folder / "locked.json").write_text("{}")
    record = json.loads((folder / "provenance.json").read_text())
    job = plan.job("tune", key)
    assert record["settings"] == job.settings
    assert record["inputs"] == job.inputs == {s: plan.runs["a"][s] for s in ("data", "split", "infer")}
    assert record["code"] == plan.code["tune"]


def test_the_git_state_names_the_commit_and_says_whether_tracked_files_differ(repo_root):
    provenance.git_state.cache_clear()
    state = provenance.git_state(repo_root / "src" / "lesionflow")
    if state is None:
        pytest.skip("not a git checkout")
    assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)
