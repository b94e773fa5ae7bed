"""The stage registry is the one list of stages: rules, scripts, notebooks and docs agree with it."""

import re

from codebase import REPO_ROOT

from lesionflow.pipeline.stages import KEYED_STAGES, NOTEBOOK_STAGES, STAGES, downstream, stage_table


def rule_names() -> set[str]:
    text = "\n".join(p.read_text() for p in (REPO_ROOT / "workflow" / "rules").glob("*.smk"))
    return set(re.findall(r"^rule (\w+):", text, flags=re.MULTILINE))


def test_every_rule_is_a_registered_stage_and_every_stage_has_a_rule():
    assert rule_names() == set(STAGES)


def test_each_stage_has_a_rule_file_of_its_own_included_in_pipeline_order():
    rules = REPO_ROOT / "workflow" / "rules"
    assert {p.stem for p in rules.glob("*.smk")} == set(STAGES) | {"common"}
    for name in STAGES:
        assert re.findall(r"^rule (\w+):", (rules / f"{name}.smk").read_text(), re.MULTILINE) == [name]
    snakefile = (REPO_ROOT / "Snakefile").read_text()
    included = re.findall(r'^include: "workflow/rules/(\w+)\.smk"', snakefile, re.MULTILINE)
    assert included == ["common", *STAGES]


def test_every_stage_has_its_entry_point_and_notebook():
    for stage in STAGES.values():
        assert (REPO_ROOT / stage.script_path).is_file(), stage.name
        if stage.notebook_path:
            assert (REPO_ROOT / stage.notebook_path).is_file(), stage.name


def test_stages_read_only_stages_listed_before_them():
    order = list(STAGES)
    for stage in STAGES.values():
        for upstream in stage.reads:
            assert order.index(upstream) < order.index(stage.name), (stage.name, upstream)


def test_keyed_stages_never_read_across_run_stages():
    for name in KEYED_STAGES:
        assert set(STAGES[name].reads) <= set(KEYED_STAGES), name


def test_notebook_stages_save_figures():
    assert set(NOTEBOOK_STAGES) == {"analyse", "analyse_scores", "training_report", "compare_report"}
    assert all(STAGES[name].figures for name in NOTEBOOK_STAGES)


def test_downstream_of_inference_excludes_training():
    below = downstream("infer")
    assert {"infer", "tune", "evaluate", "breakdown", "analyse", "compare", "run_view"} <= below
    assert not below & {"data", "split", "preprocess", "train", "training_report"}


def test_the_architecture_doc_shows_the_registry_table():
    assert stage_table() in (REPO_ROOT / "docs" / "architecture.md").read_text()


def test_the_architecture_doc_tree_names_every_module():
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text()
    package = REPO_ROOT / "src" / "lesionflow"
    modules = [p for p in package.rglob("*.py") if p.name != "__init__.py"]
    missing = [str(p.relative_to(package)) for p in modules if p.name not in doc]
    assert missing == []
