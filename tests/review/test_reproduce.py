"""reproduce's comparison: every metric of a summary beside the reproduction's, within tolerances."""

import json
import math
import shutil

import pytest
import yaml

from lesionflow.pipeline.config import resolve_config
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.review import cli, reproduce
from lesionflow.review.project import load_project
from lesionflow.review.reproduce import compare_metrics, metric_values, reproduction_config, with_overrides

TOLERANCES = resolve_config({"runs": {"a": {}}}).reproducibility["tolerances"]


def _summary(dice_pos=0.8, lesion_f1=0.5, hd95=None):
    metrics = {"dice_pos": dice_pos, "lesion_f1": lesion_f1, "hd95_pos": hd95}
    subset = {"n_images": 9, "lesion_tp": 4}
    for name, value in metrics.items():
        subset.update({name: value, f"{name}_n": 6, f"{name}_ci_low": 0.0, f"{name}_ci_high": 1.0})
    return {"level": "image", "val": subset, "test": json.loads(json.dumps(subset))}


def test_metrics_are_the_values_given_with_an_interval_counts_are_not():
    values = metric_values(_summary())
    assert set(values) == {f"{s}.{m}" for s in ("val", "test") for m in ("dice_pos", "lesion_f1", "hd95_pos")}
    assert values["test.hd95_pos"] is None  # undefined stays undefined, never 0


def test_regression_metrics_are_named_by_their_range():
    summary = {
        "test": {
            "overall": {"n": 9, "mae": 1.5, "mae_ci_low": 1.0, "mae_ci_high": 2.0},
            "by_range": [{"range": "[0, 2)", "n": 4, "mae": 0.5, "mae_ci_low": 0.1, "mae_ci_high": 0.9}],
        }
    }
    assert metric_values(summary) == {"test.overall.mae": 1.5, "test.by_range[[0, 2)].mae": 0.5}


def test_a_metric_within_absolute_plus_relative_tolerance_holds_and_one_beyond_does_not():
    # default: 0.02 + 0.02 * |original|; for dice_pos 0.8 that allows 0.036.
    rows = {r.metric: r for r in compare_metrics(_summary(0.8), _summary(0.8 + 0.035), TOLERANCES)}
    assert rows["test.dice_pos"].holds and math.isclose(rows["test.dice_pos"].allowed, 0.036)
    rows = {r.metric: r for r in compare_metrics(_summary(0.8), _summary(0.8 + 0.037), TOLERANCES)}
    assert not rows["test.dice_pos"].holds and rows["test.lesion_f1"].holds


def test_undefined_in_both_holds_and_undefined_in_one_does_not():
    rows = {r.metric: r for r in compare_metrics(_summary(), _summary(), TOLERANCES)}
    assert rows["test.hd95_pos"].holds and rows["test.hd95_pos"].difference is None
    rows = {r.metric: r for r in compare_metrics(_summary(), _summary(hd95=3.0), TOLERANCES)}
    assert not rows["test.hd95_pos"].holds


def test_a_metric_tolerance_from_the_config_or_the_command_line_applies_to_that_metric_only():
    config = resolve_config(
        {
            "runs": {"a": {}},
            "reproducibility": {"tolerances": {"lesion_f1": {"absolute": 0.0, "relative": 0.0}}},
        }
    )
    tolerances = config.reproducibility["tolerances"]
    rows = {
        r.metric: r for r in compare_metrics(_summary(lesion_f1=0.5), _summary(lesion_f1=0.501), tolerances)
    }
    assert not rows["test.lesion_f1"].holds and rows["test.dice_pos"].allowed > 0
    overridden = with_overrides(TOLERANCES, ["dice_pos=0"])
    assert overridden["dice_pos"] == {"absolute": 0.0, "relative": 0.0}
    with pytest.raises(LesionflowError, match=r"--tolerance 'dice_pos=-1': expected METRIC=ABSOLUTE"):
        with_overrides(TOLERANCES, ["dice_pos=-1"])


def test_the_reproductions_config_names_the_same_files_from_anywhere(tmp_path, repo_root):
    config = {
        "data": {"source": "manifest", "manifest": "data/manifest.csv"},
        "split": {"nnunet_splits": "splits_final.json"},
        "runs": {"a": {}, "b": {"source": "external", "external": {"predictions": "preds"}}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    project = type("P", (), {"configfile": tmp_path / "config.yaml", "workdir": tmp_path})()
    moved = reproduction_config(project)
    assert moved["data"]["manifest"] == str(tmp_path / "data" / "manifest.csv")
    assert moved["split"]["nnunet_splits"] == str(tmp_path / "splits_final.json")
    assert moved["runs"]["b"]["external"]["predictions"] == str(tmp_path / "preds")
    assert moved["runs"]["a"] == {}


def test_a_zero_tolerance_on_a_metric_that_moved_fails_and_names_it(tmp_path, repo_root, monkeypatch, capsys):
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"data": {"source": "synthetic"}, "runs": {"unet": {}}})
    )
    project = load_project(tmp_path / "config.yaml", tmp_path, repo_root / "Snakefile")
    target = reproduce.evaluation_summary(project, "unet")
    (tmp_path / target).parent.mkdir(parents=True)
    (tmp_path / target).write_text(json.dumps(_summary(dice_pos=0.959)))

    def rebuilt_elsewhere(project, out, target, cores):
        # Stands in for the Snakemake run: the other machine's kernels moved dice_pos by 0.012.
        (out / target).parent.mkdir(parents=True)
        (out / target).write_text(json.dumps(_summary(dice_pos=0.947)))

    monkeypatch.setattr(cli, "rebuild", rebuilt_elsewhere)
    args = ["reproduce", "unet", "--directory", str(tmp_path), "--snakefile", str(repo_root / "Snakefile")]
    assert cli.main(args) == 0  # within the default tolerance
    output = capsys.readouterr().out
    assert "test.dice_pos" in output and "-0.012" in output and "within their tolerances" in output
    shutil.rmtree(tmp_path / "reproduce")
    assert cli.main([*args, "--tolerance", "dice_pos=0"]) == 1
    output = capsys.readouterr()
    moved = [line.split() for line in output.out.splitlines() if line.endswith("OUTSIDE")]
    assert [row[0] for row in moved] == ["val.dice_pos", "test.dice_pos"]
    assert moved[1][1:5] == ["0.959", "0.947", "-0.012", "0"]
    assert "2 metric(s) outside their tolerance: val.dice_pos, test.dice_pos" in output.err


def test_reproduce_refuses_a_run_without_results_and_a_folder_with_results(tmp_path, repo_root, capsys):
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"data": {"source": "synthetic"}, "runs": {"unet": {}}})
    )
    args = ["reproduce", "unet", "--directory", str(tmp_path), "--snakefile", str(repo_root / "Snakefile")]
    with pytest.raises(SystemExit):
        cli.main(args)
    assert "run unet has no results/evaluate/" in capsys.readouterr().err
    project = load_project(tmp_path / "config.yaml", tmp_path, repo_root / "Snakefile")
    (tmp_path / "again" / "results").mkdir(parents=True)
    with pytest.raises(LesionflowError, match="already holds results/"):
        reproduce.prepare_folder(project, tmp_path / "again")
