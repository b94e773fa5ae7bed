"""Tests of what the model stages' code keys cover: an edit to TTA or to a plot never retrains."""

import ast
from pathlib import Path

import pytest
from codebase import REPO_CODE

import lesionflow.model

MODEL_FILES = sorted(Path(lesionflow.model.__file__).parent.glob("*.py"))


def test_tta_change_does_not_retrain():
    modules = REPO_CODE.stage_modules("train")
    assert "lesionflow.model.train" in modules
    assert "lesionflow.model.tta" not in modules
    assert "lesionflow.model.infer" not in modules


def test_train_stage_code_draws_no_figure():
    # Plot code in training would make a plot edit retrain every model.
    for name in REPO_CODE.stage_modules("train"):
        if not name.startswith("lesionflow.model"):
            continue
        source = REPO_CODE.module_file(name).read_text()
        assert "matplotlib" not in source and "save_figure" not in source, name


def test_infer_still_runs_the_forward_path_it_shares_with_train():
    modules = REPO_CODE.stage_modules("infer")
    assert {"lesionflow.model.networks", "lesionflow.model.tta"} <= set(modules)


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    return [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.name for p in MODEL_FILES])
def test_model_modules_import_lesionflow_only_at_top_level(path):
    # Code keys follow top-level imports; an import inside a function would escape them.
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    nested = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        and id(node) not in top_level
        and any(name.split(".")[0] == "lesionflow" for name in _imported(node))
    ]
    assert nested == [], f"{path.name}: lesionflow imported inside a function at line(s) {nested}"
