"""Tests of lesionflow.reports.notebook: executing a parameterised notebook, failures, the entry point."""

import subprocess
import sys

import nbformat
import pytest

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.notebook import run_notebook


def _notebook(path, *sources):
    cells = [nbformat.v4.new_code_cell("answer = None", metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(source) for source in sources]
    kernel = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=kernel), path)
    return path


def test_notebook_outputs_are_named_after_it_and_the_html_hides_code(tmp_path):
    path = _notebook(tmp_path / "report.ipynb", "secret_code = 1\nprint(f'answer is {answer}')")
    outputs = run_notebook(path, {"answer": 42}, tmp_path / "out", cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.ipynb"]
    html = outputs["html"].read_text()
    assert "answer is 42" in html and "secret_code" not in html
    assert "secret_code" in outputs["ipynb"].read_text()  # the code stays in the notebook


def test_executed_notebook_names_no_absolute_path_of_this_machine(tmp_path, monkeypatch):
    project, workflow = tmp_path / "project", tmp_path / "workflow" / "notebooks"
    project.mkdir()
    workflow.mkdir(parents=True)
    path = _notebook(workflow / "report.ipynb", "print(answer)")
    monkeypatch.chdir(project)
    outputs = run_notebook(path, {"answer": 42}, "results/report", cwd=project)
    record = nbformat.read(outputs["ipynb"], as_version=4).metadata.papermill
    assert record.input_path == "notebooks/report.ipynb"
    assert record.output_path == "results/report/report.ipynb"
    assert str(tmp_path) not in outputs["ipynb"].read_text()


def test_failing_notebook_names_the_cell_error_and_leaves_no_html(tmp_path):
    path = _notebook(tmp_path / "broken.ipynb", "raise ValueError(f'boom {answer}')")
    out = tmp_path / "out"
    (out).mkdir()
    (out / "broken.html").write_text("an older, stale report")
    with pytest.raises(LesionflowError, match=r"broken.ipynb failed at cell .*ValueError: boom 42"):
        run_notebook(path, {"answer": 42}, out, cwd=tmp_path)
    assert not (out / "broken.html").exists()
    assert not (out / "broken.ipynb").exists()
    assert (out / "broken.failed.ipynb").exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_missing_notebook_is_named(tmp_path):
    with pytest.raises(LesionflowError, match=r"notebook .*nowhere.ipynb does not exist"):
        run_notebook(tmp_path / "nowhere.ipynb", {}, tmp_path / "out")


def test_entry_point_reports_bad_parameters_in_one_line(repo_root, tmp_path):
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "notebook.py"), "--notebook", "x.ipynb",
         "--parameters", "{not json", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("lesionflow: error: --parameters: not valid JSON")


def test_entry_point_finds_a_named_notebook_in_the_workflows_notebooks_folder(repo_root, tmp_path):
    result = subprocess.run(
        [sys.executable, str(repo_root / "scripts" / "notebook.py"), "--notebook", "no_such_report",
         "--parameters", "{}", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    expected = repo_root / "notebooks" / "no_such_report.ipynb"
    assert result.stderr.strip() == f"lesionflow: error: notebook {expected} does not exist"
