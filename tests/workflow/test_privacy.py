"""What people share of a project names nothing of this machine, and with analyse.pseudonymise no
patient's image or subject id; the stages before the reports never notice the option."""

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from codebase import REPO_CODE

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.plan import build_plan
from lesionflow.reports.pseudonyms import SALT_VARIABLE, pseudonym

from .pipeline import snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow

# What a report may be read as text for: tables, records, notebooks, pages, vector figures, logs.
TEXT_SUFFIXES = {".csv", ".json", ".html", ".ipynb", ".svg", ".log", ".txt", ".rst", ".js", ".css"}
SALT = "privacy-test-salt-0123456789"
# The built-in dataset's ids: images 0042_1, subjects 0042 (not inside a longer number or word).
IMAGE_ID = re.compile(r"(?<![\w.])\d{4}_\d(?![\w.])")


def _shared_files(workdir: Path) -> dict[str, str]:
    """Every text file under results/runs and results/compare, and the logs of the jobs that
    finished (their provenance record, written last, is there), by path relative to ``workdir``."""
    files = [p for folder in ("results/runs", "results/compare") for p in (workdir / folder).rglob("*")]
    for log in (workdir / "logs").rglob("*.log"):
        stage, key = log.parent.name, log.stem
        if stage in ("runs", "compare") or (workdir / "results" / stage / key / "provenance.json").is_file():
            files.append(log)
    return {
        str(p.relative_to(workdir)): p.read_text(errors="replace")
        for p in files
        if p.is_file() and p.suffix in TEXT_SUFFIXES
    }


def _zip_members(archive: Path) -> dict[str, str]:
    with zipfile.ZipFile(archive) as opened:
        return {
            f"report.zip:{name}": opened.read(name).decode(errors="replace")
            for name in opened.namelist()
            if Path(name).suffix in TEXT_SUFFIXES
        }


def _machine_paths(*folders: Path) -> list[str]:
    """The absolute paths of this machine a shared file must not name: the given folders (as given
    and resolved) and the home folder (unless it is the root, which every path starts with)."""
    paths = {str(folder) for folder in folders} | {str(folder.resolve()) for folder in folders}
    home = os.path.expanduser("~")
    if len(Path(home).parts) > 1:
        paths.add(home)
    return sorted(paths)


def test_reports_logs_and_the_report_zip_name_no_absolute_path_of_this_machine(finished, code_copy, tmp_path):
    workdir, _ = finished
    archive = tmp_path / "report.zip"
    snakemake(workdir, "--report", str(archive), repo=code_copy)
    texts = {**_shared_files(workdir), **_zip_members(archive)}
    assert any(name.endswith("analysis.ipynb") for name in texts)
    assert any(name.startswith("report.zip:") for name in texts)
    paths = _machine_paths(workdir, code_copy)
    offenders = [f"{name} names {path}" for name, text in texts.items() for path in paths if path in text]
    assert offenders == []


def _plan(defaults: dict, tmp_path: Path):
    config = tiny_config({"base": tiny_run(), "tta": tiny_run(infer={"tta": ["identity", "hflip"]})})
    return build_plan(resolve_config({**config, "defaults": defaults}), tmp_path, REPO_CODE)


REPORT_STAGES = {"analyse", "analyse_scores"}


def test_pseudonymising_changes_the_keys_of_the_notebooks_only(tmp_path):
    plain = _plan({}, tmp_path)
    pseudonymised = _plan({"analyse": {"pseudonymise": True}}, tmp_path)
    for run, keys in plain.runs.items():
        changed = {stage for stage, key in keys.items() if pseudonymised.runs[run][stage] != key}
        assert changed == {"analyse"}, run
        job = pseudonymised.job("analyse", pseudonymised.runs[run]["analyse"])
        assert job.settings["analyse"]["pseudonymise"] is True
    for stage, jobs in pseudonymised.jobs.items():
        if stage not in REPORT_STAGES:
            assert all("pseudonymise" not in str(job.settings) for job in jobs.values()), stage


def test_runs_that_differ_in_pseudonymising_are_refused(tmp_path):
    config = tiny_config({"a": tiny_run(), "b": tiny_run(analyse={"pseudonymise": True})})
    with pytest.raises(LesionflowError, match=r"runs.b.analyse.pseudonymise' is true but run 'a' has false"):
        build_plan(resolve_config(config), tmp_path, None)


@pytest.fixture
def pseudonymised(finished, code_copy, tmp_path, monkeypatch):
    """A copy of the finished project with analyse.pseudonymise on, its view of run base and the
    leaderboard's page rebuilt; returns the copy, and what Snakemake printed."""
    workdir, config = finished
    copy = tmp_path / "project"
    shutil.copytree(workdir, copy, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    write_config(copy, {**config, "defaults": {"analyse": {"pseudonymise": True}}})
    monkeypatch.setenv(SALT_VARIABLE, SALT)
    result = snakemake(
        copy, "results/runs/base/index.json", "results/compare/leaderboard.html", repo=code_copy
    )
    return copy, result.stdout + result.stderr


def test_pseudonymised_reports_show_no_original_id_and_the_same_metrics(pseudonymised):
    workdir, output = pseudonymised
    ran = set(re.findall(r"^\s*(?:local)?rule (\w+):", output, flags=re.MULTILINE))
    assert ran <= {"analyse", "run_view", "compare", "compare_report"}, ran
    assert "analyse" in ran and "run_view" in ran
    view = workdir / "results" / "runs" / "base"
    keyed = pd.read_csv(
        workdir / "results" / "evaluate" / _key(view, "evaluate") / "per_image_test.csv", dtype=str
    )
    shown = pd.read_csv(view / "per_image_test.csv", dtype=str)
    assert shown["image_id"].tolist() == [pseudonym(i, SALT, "img-") for i in keyed["image_id"]]
    assert shown["subject"].tolist() == [pseudonym(s, SALT, "sub-") for s in keyed["subject"]]
    assert shown.drop(columns=["image_id", "subject"]).equals(keyed.drop(columns=["image_id", "subject"]))
    subjects = set(keyed["subject"])
    texts = {
        name: text
        for name, text in _shared_files(workdir).items()
        if name.startswith(("results/runs/base/", "results/compare/"))
    }
    assert "results/runs/base/analysis.html" in texts
    offenders = [f"{name}: {match}" for name, text in texts.items() for match in IMAGE_ID.findall(text)]
    offenders += [
        f"{name}: subject {subject}"
        for name, text in texts.items()
        if name.endswith((".csv", ".json"))
        for subject in subjects
        if re.search(rf"(?<![\w.]){subject}(?![\w.])", text)
    ]
    assert offenders == []
    assert pseudonym(keyed["image_id"].iloc[0], SALT, "img-") in texts["results/runs/base/analysis.html"]


def _key(view: Path, stage: str) -> str:
    return json.loads((view / "index.json").read_text())["keys"][stage]
