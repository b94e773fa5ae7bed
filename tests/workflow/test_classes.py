"""The whole pipeline on the built-in photographs with haemorrhages: two lesion classes in one
model, from the data stage to the leaderboard, the reports and the run views."""

import json

import pandas as pd
import pytest
from codebase import REPO_CODE

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.plan import build_plan
from lesionflow.review import cli

from .pipeline import FIGURES, REPO_ROOT, snakemake, tiny_config, tiny_run, write_config

pytestmark = pytest.mark.slow

NAMES = ["exudate", "haemorrhage"]
LABELS = {"classes": {"exudate": 1, "haemorrhage": 2}}


@pytest.fixture(scope="module")
def classes_project(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("classes")
    config = tiny_config({"base": tiny_run(infer={"tta": ["identity", "hflip"]})})
    config["data"]["synthetic"]["haemorrhages"] = True
    config["data"]["labels"] = LABELS
    write_config(workdir, config)
    snakemake(workdir)
    return workdir, build_plan(resolve_config(config), workdir, REPO_CODE).runs


def test_the_leaderboard_ranks_the_macro_mean_and_gives_every_class(classes_project):
    workdir, keys = classes_project
    board = pd.read_csv(workdir / "results/compare/leaderboard.csv").set_index("run")
    assert list(board.index) == ["base"] and board.loc["base", "status"] == "ranked"
    assert (board["ranked_by"] == "macro mean over 2 classes (exudate, haemorrhage)").all()
    for run in board.index:
        summary = json.loads((workdir / f"results/evaluate/{keys[run]['evaluate']}/summary.json").read_text())
        macro = summary["test"]["macro"]
        assert board.loc[run, "dice_pos"] == pytest.approx(macro["dice_pos"], nan_ok=True)
        for name in NAMES:
            section = summary["test"]["classes"][name]
            assert board.loc[run, f"dice_pos_{name}"] == pytest.approx(section["dice_pos"], nan_ok=True)
            assert board.loc[run, f"rank_dice_pos_{name}"] == 1


def test_each_run_is_reported_class_by_class(classes_project):
    workdir, keys = classes_project
    html = (workdir / f"results/analyse/{keys['base']['analyse']}/analysis.html").read_text()
    for name in NAMES:
        assert f"Class: {name}" in html
    assert "macro mean" in html and "Confusion between classes" in html
    figures = workdir / "results/runs/base/figures"
    assert all((figures / f"{name}.png").stat().st_size > 0 for name in FIGURES["analyse"])
    zero = pd.read_csv(workdir / f"results/breakdown/{keys['base']['breakdown']}/zero_dice_summary.csv")
    assert sorted(zero["class"].unique()) == NAMES
    assert "base" in (workdir / "results/compare/compare.html").read_text()


def test_each_classs_locked_masks_are_exported(classes_project):
    workdir, keys = classes_project
    record = json.loads((workdir / f"results/export/{keys['base']['export']}/export.json").read_text())
    classes = {row["class"] for row in record["files"]["test"]}
    assert classes == set(NAMES)
    assert all(row["mask"].endswith(f"_{row['class']}.png") for row in record["files"]["test"])


def test_a_second_invocation_runs_nothing(classes_project):
    workdir, _ = classes_project
    result = snakemake(workdir, "--dry-run")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_the_reviewers_tools_show_the_macro_means_and_verify_every_file(classes_project, capsys):
    workdir, keys = classes_project
    project = ["--directory", str(workdir), "--snakefile", str(REPO_ROOT / "Snakefile")]
    status = cli.main(["runs", "--json", *project, "--configfile", str(workdir / "config.yaml")])
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    summary = json.loads((workdir / f"results/evaluate/{keys['base']['evaluate']}/summary.json").read_text())
    assert status == 0 and rows["base"]["status"] == "done"
    assert rows["base"]["metrics"]["dice_pos"] == pytest.approx(
        summary["test"]["macro"]["dice_pos"], nan_ok=True
    )
    status = cli.main(["verify", *project, "--configfile", str(workdir / "config.yaml")])
    assert status == 0, capsys.readouterr().out
