"""Keys follow exactly the code a stage runs: edit any module, script or notebook and only the
stages that execute it (and what reads their artifacts) get a new key.

What a stage executes is measured, not read from the fingerprint code: a fresh interpreter loads
each stage's entry point and its notebook's imports, and lists the lesionflow modules it loaded.
"""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from codebase import REPO_CODE, REPO_ROOT

from lesionflow.pipeline.config import load_config_file
from lesionflow.pipeline.fingerprints import CodeBase, ModuleSummaries, normalised_code, user_summaries_path
from lesionflow.pipeline.plan import build_plan
from lesionflow.pipeline.stages import KEYED_STAGES, STAGES, downstream, run_stages

# Loads one stage's entry point (its main() stays uncalled) and runs the import statements of
# its notebook, then prints the files of the lesionflow modules that are loaded.
PROBE = r"""
import ast, json, runpy, sys
stages = json.loads(sys.argv[1])
loaded = {}
for stage, (script, notebook) in stages.items():
    for name in [m for m in sys.modules if m == "lesionflow" or m.startswith("lesionflow.")]:
        del sys.modules[name]
    runpy.run_path(script, run_name="__probe__")
    if notebook:
        for cell in json.load(open(notebook))["cells"]:
            if cell["cell_type"] != "code":
                continue
            lines = "".join(cell["source"]).splitlines()
            tree = ast.parse("\n".join(l for l in lines if not l.lstrip().startswith(("%", "!"))))
            imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            exec(compile(ast.Module(body=imports, type_ignores=[]), notebook, "exec"), {})
    loaded[stage] = sorted(
        m.__file__ for n, m in sys.modules.items()
        if (n == "lesionflow" or n.startswith("lesionflow.")) and getattr(m, "__file__", None)
    )
print(json.dumps(loaded))
"""


@pytest.fixture(scope="module")
def executed() -> dict[str, set[str]]:
    """Files each stage executes, relative to the repository: script, notebook, modules."""
    stages = {
        name: (
            str(REPO_ROOT / stage.script_path),
            str(REPO_ROOT / stage.notebook_path) if stage.notebook_path else None,
        )
        for name, stage in STAGES.items()
    }
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(stages)],
        capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    package_parent = REPO_CODE.package_root.parent
    files = {}
    for name, modules in json.loads(result.stdout).items():
        stage = STAGES[name]
        files[name] = {f"src/{Path(m).resolve().relative_to(package_parent).as_posix()}" for m in modules}
        files[name].add(stage.script_path)
        if stage.notebook_path:
            files[name].add(stage.notebook_path)
    return files


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """A copy of the package, scripts and notebooks to edit."""
    root = tmp_path_factory.mktemp("code")
    shutil.copytree(REPO_CODE.package_root, root / "src" / "lesionflow",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for folder in ("scripts", "notebooks"):
        shutil.copytree(REPO_ROOT / folder, root / folder)
    return root


def code_of(root: Path) -> CodeBase:
    return CodeBase(root / "src" / "lesionflow", root)


def editable_files(root: Path) -> list[str]:
    found = [p for p in (root / "src" / "lesionflow").rglob("*.py")]
    found += [*(root / "scripts").glob("*.py"), *(root / "notebooks").glob("*.ipynb")]
    return sorted(p.relative_to(root).as_posix() for p in found)


def edited(path: Path) -> str:
    """Change what ``path`` computes (not only its comments); return the original text."""
    original = path.read_text()
    if path.suffix == ".ipynb":
        notebook = json.loads(original)
        notebook["cells"].append(
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": ["edited_by_test = 1\n"]}
        )  # fmt: skip
        path.write_text(json.dumps(notebook))
    else:
        path.write_text(original + "\nedited_by_test = 1\n")
    return original


@pytest.fixture(scope="module")
def changes(copy, executed) -> dict[str, dict]:
    """For every file: which stages' code fingerprints and which plan keys an edit changes."""
    config = load_config_file(REPO_ROOT / "config" / "config.yaml")
    base_plan = build_plan(config, copy, code_of(copy))
    found = {}
    for relative in editable_files(copy):
        path = copy / relative
        original = edited(path)
        try:
            plan = build_plan(config, copy, code_of(copy))
        finally:
            path.write_text(original)
        found[relative] = {
            "code": {s for s in plan.code if plan.code[s] != base_plan.code[s]},
            "keys": {
                run: {s for s in keys if keys[s] != base_plan.runs[run][s]} for run, keys in plan.runs.items()
            },
        }
    return found


def test_the_probe_sees_every_stage_load_its_own_entry_module(executed):
    assert "src/lesionflow/model/train.py" in executed["train"]
    assert "src/lesionflow/model/infer.py" in executed["infer"]
    assert "notebooks/analysis.ipynb" in executed["analyse"]


def test_editing_any_file_changes_the_code_of_exactly_the_stages_that_execute_it(changes, executed):
    assert len(changes) > 40
    for relative, change in changes.items():
        expected = {stage for stage, files in executed.items() if relative in files}
        assert change["code"] == expected, relative


def test_editing_any_file_changes_the_keys_of_those_stages_and_what_reads_them_only(changes, executed):
    for relative, change in changes.items():
        running = {stage for stage, files in executed.items() if relative in files}
        # The demo's runs are segmentation runs of models on one split: a regression stage's code,
        # or the fold, import or ensemble stage's, is not theirs.
        demo = set(run_stages("segmentation", "model", folded=False))
        expected = set().union(*(downstream(s) for s in running & demo)) & demo
        for run, stages in change["keys"].items():
            assert stages == expected, (relative, run)


def test_editing_tta_reruns_inference_onwards_and_never_training(changes):
    keys = changes["src/lesionflow/model/tta.py"]["keys"]
    for stages in keys.values():
        assert "infer" in stages and {"tune", "evaluate", "analyse"} <= stages
        assert not stages & {"data", "split", "preprocess", "train", "training_report"}


def test_editing_a_metric_never_reruns_inference_training_or_tuning(changes):
    for stages in changes["src/lesionflow/evaluation/metrics.py"]["keys"].values():
        assert "evaluate" in stages
        # Tuning counts overlaps (evaluation/overlap.py); surface distances are not its business.
        assert not stages & {"preprocess", "train", "infer", "tune"}


def test_editing_the_epoch_curve_plots_reruns_the_notebooks_that_draw_them(changes):
    code = changes["src/lesionflow/reports/curves.py"]["code"]
    assert {"analyse", "training_report"} <= code
    assert not code & {"train", "infer", "evaluate"}


def test_editing_the_leaderboard_code_reruns_the_leaderboard(changes):
    code = changes["src/lesionflow/evaluation/leaderboard.py"]["code"]
    assert "compare" in code
    assert not code & set(KEYED_STAGES)


def test_the_schema_is_package_data_beside_the_config_module():
    assert (REPO_CODE.package_root / "pipeline" / "config.schema.yaml").is_file()


def test_code_fingerprint_ignores_comments_docstrings_and_layout():
    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    cosmetic = '# a comment\ndef f( x ):\n    """Another doc."""\n\n    return x+1  # why\n'
    behaviour = 'def f(x):\n    """Doc."""\n    return x + 2\n'
    assert normalised_code(base) == normalised_code(cosmetic)
    assert normalised_code(base) != normalised_code(behaviour)


def test_a_comment_or_docstring_edit_changes_no_stage(copy):
    path = copy / "src" / "lesionflow" / "model" / "tta.py"
    before = code_of(copy).fingerprints()
    original = path.read_text()
    try:
        path.write_text('"""Another docstring."""\n# a comment\n' + original.split('"""', 2)[2])
        assert code_of(copy).fingerprints() == before
    finally:
        path.write_text(original)


def test_fingerprints_do_not_depend_on_where_the_code_lives(copy):
    assert code_of(copy).fingerprints() == REPO_CODE.fingerprints()


def test_no_stage_job_reads_the_schema(executed):
    # Jobs receive complete settings from the plan; a job that read the schema would change its
    # behaviour with a schema edit its key does not see.
    for stage, files in executed.items():
        assert "src/lesionflow/pipeline/config.py" not in files, stage


def _names_lesionflow(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "lesionflow" for alias in node.names)
    return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lesionflow"


def _nested_lesionflow_imports(source: str) -> list[int]:
    tree = ast.parse(source)
    top_level = {id(node) for node in tree.body}
    return [n.lineno for n in ast.walk(tree) if _names_lesionflow(n) and id(n) not in top_level]


def library_and_scripts() -> list[Path]:
    return [*REPO_CODE.package_root.rglob("*.py"), *(REPO_ROOT / "scripts").glob("*.py")]


def test_lesionflow_is_imported_only_at_the_top_of_modules_and_scripts():
    # A key follows the imports a file makes; one under `if TYPE_CHECKING` would count without
    # running, and a lazy import hides a dependency from whoever reads the module's head.
    nested = {str(p): ln for p in library_and_scripts() if (ln := _nested_lesionflow_imports(p.read_text()))}
    assert nested == {}


def test_no_relative_imports_which_the_fingerprints_would_not_follow():
    relative = [
        str(path)
        for path in library_and_scripts()
        if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(path.read_text())))
    ]
    assert relative == []


def test_a_copy_of_the_package_outside_the_checkout_plans_the_same_keys(copy, tmp_path):
    # As an installed (not editable) package would: nothing may be read from the source tree.
    probe = (
        "import json, sys, lesionflow\n"
        "from lesionflow.pipeline.config import load_config_file\n"
        "from lesionflow.pipeline.fingerprints import CodeBase\n"
        "from lesionflow.pipeline.plan import build_plan\n"
        "assert lesionflow.__file__.startswith(sys.argv[1]), lesionflow.__file__\n"
        "plan = build_plan(load_config_file(sys.argv[2]), sys.argv[3], CodeBase.installed(sys.argv[1]))\n"
        "print(json.dumps(plan.runs))\n"
    )
    config = REPO_ROOT / "config" / "config.yaml"
    result = subprocess.run(
        [sys.executable, "-c", probe, str(copy), str(config), str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(copy / "src"), "PATH": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = build_plan(load_config_file(config), tmp_path, REPO_CODE).runs
    assert json.loads(result.stdout) == expected


def test_module_summaries_are_kept_between_plannings_and_an_edited_module_is_parsed_again(copy, tmp_path):
    cache = tmp_path / "module-summaries.json"
    first = CodeBase(copy / "src" / "lesionflow", copy, ModuleSummaries(cache))
    before = first.fingerprints()
    assert cache.is_file() and not first.summaries.dirty
    second = CodeBase(copy / "src" / "lesionflow", copy, ModuleSummaries(cache))
    assert second.fingerprints() == before
    assert not second.summaries.dirty  # every module's summary came from the file
    path = copy / "src" / "lesionflow" / "evaluation" / "metrics.py"
    original = edited(path)
    try:
        third = CodeBase(copy / "src" / "lesionflow", copy, ModuleSummaries(cache))
        after = third.fingerprints()
    finally:
        path.write_text(original)
    # The edited module was parsed again and its old summary dropped: the cache holds files as they are.
    assert len(third.summaries.entries) == len(second.summaries.entries)
    tokens = [token for token in third.summaries.entries if token.startswith(f"{path.resolve()}|")]
    assert len(tokens) == 1 and tokens[0] not in second.summaries.entries
    assert after["evaluate"] != before["evaluate"] and after["train"] == before["train"]


def test_module_summaries_live_in_the_users_cache_folder_unless_one_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("LESIONFLOW_CACHE_DIR", str(tmp_path / "mine"))
    assert user_summaries_path() == tmp_path / "mine" / "module-summaries.json"
    monkeypatch.delenv("LESIONFLOW_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_summaries_path() == tmp_path / "xdg" / "lesionflow" / "module-summaries.json"
