"""Every stage SIGKILLed halfway and rerun gives an uninterrupted run's results, and a half-written
file never passes for an output; a second Snakemake in the same project folder is refused.

The faults come from tests/workflow/faults/sitecustomize.py, put on the jobs' PYTHONPATH: the first
job of each rule dies at its first finished output and Snakemake retries it (--retries 1); the
training job dies on its retry too, so that the first invocation fails and the user's second one
resumes it and finishes the project. The reference is the session's `finished` project (same config,
same code, so the same keys).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lesionflow.pipeline.artifacts import load_arrays, read_json
from lesionflow.pipeline.provenance import is_record, record_name
from lesionflow.pipeline.stages import SEGMENTATION, STAGES, run_stages

from .pipeline import SNAKEMAKE, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

FAULTS = Path(__file__).resolve().parent / "faults"
# Values that are measured, not computed: they differ between any two runs, killed or not; and
# whether training resumed from a checkpoint, which is what a killed run's record must say.
MEASURED = re.compile(r"seconds|_s$|time|started|finished|peak|memory|host|duration|resumed")
# Files whose bytes carry the moment they were made: executed notebooks (checked to have run to the
# end instead), their HTML pages, and SVG figures (matplotlib writes the date into them).
STAMPED = {".ipynb", ".html", ".svg"}


def _rules_run(workdir: Path) -> set[str]:
    """The rules whose jobs made the files of a finished project, from Snakemake's metadata."""
    rules = set()
    for path in (workdir / ".snakemake" / "metadata").iterdir():
        rules.add(json.loads(path.read_text())["rule"])
    return rules


def _stage_of(marker: str) -> str:
    # Markers are named <rule>.<attempt>.json, notebook jobs notebook-<notebook name>.
    rule = marker.split(".")[0]
    if rule.startswith("notebook-"):
        return next(s.name for s in STAGES.values() if s.notebook == rule.removeprefix("notebook-"))
    return next(s.name for s in STAGES.values() if s.script == rule and SEGMENTATION in s.tasks)


def _lock_held(workdir: Path) -> bool:
    locks = workdir / ".snakemake" / "locks"
    return locks.is_dir() and any(locks.iterdir())


def _beside(running: subprocess.Popen, workdir: Path, code: Path) -> dict:
    """A second invocation in the folder, started once ``running`` holds its lock."""
    for _ in range(3000):
        if _lock_held(workdir) or running.poll() is not None:
            break
        time.sleep(0.1)
    assert running.poll() is None, "the invocation ended before a second could be started beside it"
    second = snakemake(workdir, check=False, repo=code)
    return {"second": second, "still_running": running.poll() is None}


def _in_background(workdir: Path, code: Path, log: Path, *args: str) -> subprocess.Popen:
    """Snakemake started as snakemake() runs it, without waiting; its output goes to ``log``."""
    command = [str(SNAKEMAKE), "--snakefile", str(code / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(code / "src"), env.get("PYTHONPATH", "")])
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, finished, code_copy):
    """The `finished` project's config run in a new folder with the first job of every rule killed
    halfway and retried once; the training job is killed on its retry too, so that this first
    invocation fails and a second, as a user would start it, finishes the project."""
    reference, config = finished
    workdir = tmp_path_factory.mktemp("killed")
    markers = tmp_path_factory.mktemp("faults")
    write_config(workdir, config)
    with pytest.MonkeyPatch.context() as patch:
        # Every job of these invocations imports the faults' sitecustomize (snakemake() keeps it on
        # PYTHONPATH after the code copy's package).
        patch.setenv("LESIONFLOW_FAULTS", str(markers))
        patch.setenv("LESIONFLOW_FAULT_TIMES", "train=2")
        patch.setenv("PYTHONPATH", str(FAULTS))
        first = snakemake(workdir, "--retries", "1", check=False, repo=code_copy)
        train = [json.loads((markers / f"train.{n}.json").read_text()) for n in (1, 2)]
        out = workdir / _option(train[0]["argv"], "--out")
        after_first = {
            "killed_final": [(workdir / m["final"]).exists() for m in train],
            "resume": (out / "resume" / "checkpoint.pt").is_file(),
            "record": (out / record_name()).exists(),
        }
        log = markers.parent / f"{markers.name}-rerun.log"
        with _in_background(workdir, code_copy, log, "--retries", "1") as rerun:
            beside = _beside(rerun, workdir, code_copy)
            rerun.wait()
    return SimpleNamespace(
        workdir=workdir, code=code_copy, reference=reference, markers=markers, first=first,
        rerun=rerun, rerun_log=log.read_text(), after_first=after_first, train_out=out, **beside,
    )  # fmt: skip


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _markers(killed) -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(killed.markers.glob("*.json"))}


def test_every_rule_of_the_chain_was_killed_halfway(killed):
    ran = _rules_run(killed.reference) - {"all"}
    # The stages of a model's segmentation run, and those across runs (leaderboard, notebook, views).
    across = {s.name for s in STAGES.values() if s.scope == "across_runs" and SEGMENTATION in s.tasks}
    assert set(run_stages(SEGMENTATION, "model", folded=False)) | across == ran
    markers = _markers(killed)
    assert {_stage_of(name) for name in markers} == ran
    for name, marker in markers.items():
        final = Path(marker["final"]).name
        # Killed after an output became final and before the job could record that it finished.
        assert not is_record(Path(final)), name
        assert not any(is_record(Path(left)) for left in marker["left"]), (name, marker["left"])
    # Notebooks die inside their kernel, mid-execution: the executed notebook was still a temporary file.
    notebooks = {name: m for name, m in markers.items() if name.startswith("notebook-")}
    assert notebooks and all(m["in_kernel"] for m in notebooks.values())
    # Had papermill written straight to the output, the half-executed notebook would be listed here.
    for marker in notebooks.values():
        stem = Path(_option(marker["argv"], "--notebook")).stem
        assert not {f"{stem}.ipynb", f"{stem}.html"} & set(marker["left"]), marker["left"]


def test_a_second_snakemake_in_the_folder_is_refused_while_the_first_runs(killed):
    assert killed.still_running
    assert killed.second.returncode == 1
    assert "Directory cannot be locked" in killed.second.stderr, killed.second.stderr[-2000:]
    # Refused before any job: the first one's results are checked against the reference below.
    assert "Finished jobid" not in killed.second.stderr + killed.second.stdout


def test_a_training_killed_twice_failed_the_first_invocation_and_left_only_its_checkpoint(killed):
    assert killed.first.returncode == 1
    assert "Error in rule train" in killed.first.stderr, killed.first.stderr[-2000:]
    # Snakemake removed what each killed attempt had made final (except the checkpoint, no output
    # of the rule): nothing half-done passes for a trained model, and no record says it finished.
    finals = [json.loads((killed.markers / f"train.{n}.json").read_text())["final"] for n in (1, 2)]
    assert Path(finals[0]).name == "checkpoint.pt" and Path(finals[1]).name != "checkpoint.pt"
    assert killed.after_first["killed_final"] == [True, False]
    assert killed.after_first["resume"] and not killed.after_first["record"]
    # The rerun resumed from it (the weights equal the uninterrupted run's: see the results test)
    # and removed it once the model was written.
    assert not (killed.train_out / "resume").exists()


def test_the_rerun_finishes_and_leaves_nothing_to_do(killed):
    assert killed.rerun.returncode == 0, killed.rerun_log[-3000:]
    jobs, text = planned_jobs(killed.workdir, repo=killed.code)
    assert sum(jobs.values()) == 0, text


def _finished_files(root: Path) -> set[str]:
    # Dot-names are the temporary files of atomic writes: what a killed write leaves, never an output.
    return {
        p.relative_to(root).as_posix()
        for p in (root / "results").rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _without_measured(value):
    if isinstance(value, dict):
        return {k: _without_measured(v) for k, v in value.items() if not MEASURED.search(k)}
    if isinstance(value, list):
        return [_without_measured(v) for v in value]
    return value


def _text(path: Path, root: Path) -> str:
    # Some records name files by absolute path (export.json): the project folder differs, not them.
    return path.read_text().replace(str(root), "<project>")


def _assert_same(path: Path, reference: Path, roots: tuple[Path, Path]) -> None:
    suffix = path.suffix
    pairs = list(zip((path, reference), roots, strict=True))
    if suffix == ".csv":
        frames = [pd.read_csv(io.StringIO(_text(p, root))) for p, root in pairs]
        frames = [f.drop(columns=[c for c in f.columns if MEASURED.search(c)]) for f in frames]
        pd.testing.assert_frame_equal(*frames)
    elif suffix == ".json":
        values = [json.loads(_text(p, root)) for p, root in pairs]
        assert _without_measured(values[0]) == _without_measured(values[1]), path
    elif suffix == ".npz":
        arrays, expected = load_arrays(path), load_arrays(reference)
        assert sorted(arrays) == sorted(expected), path
        for name in expected:
            np.testing.assert_array_equal(arrays[name], expected[name])
    elif suffix == ".pt":
        state, expected = (torch.load(p, map_location="cpu", weights_only=False) for p in (path, reference))
        _assert_same_state(state, expected, path.name)
    elif suffix == ".ipynb":
        _assert_executed_to_the_end(path)
    elif suffix not in STAMPED:
        assert path.read_bytes() == reference.read_bytes(), path


def _assert_same_state(value, expected, where: str) -> None:
    # A checkpoint: weights bitwise, settings equal, measured values (seconds) left out.
    if isinstance(expected, torch.Tensor):
        assert torch.equal(value, expected), where
    elif isinstance(expected, dict):
        kept = [k for k in expected if not MEASURED.search(str(k))]
        assert sorted(map(str, value)) == sorted(map(str, expected)), where
        for key in kept:
            _assert_same_state(value[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list | tuple):
        assert len(value) == len(expected), where
        for at, (one, other) in enumerate(zip(value, expected, strict=True)):
            _assert_same_state(one, other, f"{where}/{at}")
    else:
        assert value == expected or (value != value and expected != expected), where


def _assert_executed_to_the_end(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    statuses = {cell["metadata"].get("papermill", {}).get("status") for cell in code}
    assert statuses == {"completed"}, (notebook, statuses)


def test_results_equal_an_uninterrupted_run(killed):
    files = _finished_files(killed.workdir)
    assert files == _finished_files(killed.reference)
    for relative in sorted(files):
        if not is_record(Path(relative)):
            _assert_same(
                killed.workdir / relative, killed.reference / relative, (killed.workdir, killed.reference)
            )


def test_the_retried_jobs_recorded_that_they_finished_with_the_file_they_had_died_after(killed):
    for name, marker in _markers(killed).items():
        out = killed.workdir / _option(marker["argv"], "--out")
        if not re.fullmatch(r"[0-9a-f]{12}", out.name):
            continue  # the leaderboard's and the run views' folders have no records
        record = read_json(out / record_name(_option(marker["argv"], "--subset")))
        final = (killed.workdir / marker["final"]).resolve().relative_to(out.resolve()).as_posix()
        # The training checkpoint is no output: removed once the model is written.
        assert final in record["outputs"] or final == "resume/checkpoint.pt", (name, final)
