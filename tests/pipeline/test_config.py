"""Config validation and run resolution."""

import re
from pathlib import Path

import pytest
import yaml

from lesionflow.pipeline.config import load_config_file, load_schema, merge_run, resolve_config
from lesionflow.pipeline.errors import LesionflowError

REPO_CONFIG = "config/config.yaml"


def minimal(**extra):
    return {"runs": {"a": {}}, **extra}


def test_demo_config_resolves_three_runs_with_baseline(repo_root):
    config = load_config_file(repo_root / REPO_CONFIG)
    assert list(config.runs) == ["unet", "unet_flip_tta", "segresnet"]
    assert config.baseline == "unet"
    assert config.runs["unet_flip_tta"]["infer"]["tta"] == ["identity", "hflip", "vflip", "hvflip"]
    assert config.runs["unet_flip_tta"]["train"] == config.runs["unet"]["train"]


def test_defaults_fill_every_section():
    config = resolve_config(minimal())
    run = config.runs["a"]
    assert run["model"]["network"] == "UNet"
    assert run["train"]["epochs"] == 30 and run["train"]["batch_size"] == 8
    assert run["tune"]["thresholds"] == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert config.data["synthetic"]["n_images"] == 240
    assert config.split == {
        "train": 0.6,
        "val": 0.2,
        "test": 0.2,
        "seed": 0,
        "nnunet_splits": None,
        "fold": 0,
        "stratify": "auto",
        "score_bins": [2, 5, 10],
        "folds": None,
    }
    assert run["task"] == "segmentation"


def test_misspelt_key_error_names_the_key_and_suggests_the_right_one():
    with pytest.raises(LesionflowError) as err:
        resolve_config({"runs": {"a": {"train": {"epohcs": 3}}}})
    message = str(err.value)
    assert "runs.a.train.epohcs" in message
    assert "did you mean 'epochs'" in message


def test_unknown_top_level_key_is_an_error():
    with pytest.raises(LesionflowError, match="'datta' is not a known key"):
        resolve_config(minimal(datta={}))


def test_unknown_network_error_names_the_valid_ones():
    with pytest.raises(LesionflowError) as err:
        resolve_config({"runs": {"a": {"model": {"network": "Unet"}}}})
    message = str(err.value)
    assert "runs.a.model.network" in message
    for name in ("UNet", "BasicUNet", "SegResNet", "AttentionUnet", "DynUNet"):
        assert name in message


def test_wrong_type_error_names_key_and_value():
    with pytest.raises(LesionflowError, match=r"runs\.a\.train\.batch_size' must be of type integer"):
        resolve_config({"runs": {"a": {"train": {"batch_size": "16"}}}})


def test_bad_value_in_defaults_names_the_defaults_key():
    with pytest.raises(LesionflowError, match=r"defaults\.train\.epochs"):
        resolve_config(minimal(defaults={"train": {"epochs": 0}}))


def test_split_fractions_must_sum_to_one():
    with pytest.raises(LesionflowError, match="must sum to 1"):
        resolve_config(minimal(split={"train": 0.5, "val": 0.2, "test": 0.2}))


def test_unknown_baseline_names_the_runs():
    with pytest.raises(LesionflowError, match="compare.baseline.*runs are: a"):
        resolve_config(minimal(compare={"baseline": "b"}))


def test_manifest_source_requires_a_manifest_path():
    with pytest.raises(LesionflowError, match="data.manifest"):
        resolve_config(minimal(data={"source": "manifest"}))


def test_bad_run_name_is_rejected():
    with pytest.raises(LesionflowError, match="runs"):
        resolve_config({"runs": {"a b": {}}})


def test_switching_network_does_not_inherit_network_kwargs():
    defaults = {"model": {"network": "UNet", "kwargs": {"channels": [8, 16]}}}
    merged = merge_run(defaults, {"model": {"network": "SegResNet"}})
    assert merged["model"] == {"network": "SegResNet", "kwargs": {}}


def test_run_override_merges_within_a_section():
    defaults = {"train": {"epochs": 5, "augment": {"flip": True, "rotate90": True}}}
    merged = merge_run(defaults, {"train": {"augment": {"flip": False}}})
    assert merged["train"] == {"epochs": 5, "augment": {"flip": False, "rotate90": True}}


def test_every_schema_key_has_a_description():
    schema = load_schema()
    missing = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, sub in node.get("properties", {}).items():
                if "description" not in sub:
                    missing.append(".".join(path + [key]))
                walk(sub, path + [key])
            for key, sub in node.get("$defs", {}).items():
                walk(sub, path + [key])

    walk(schema, [])
    assert missing == []


def test_invalid_yaml_error_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [unclosed\n")
    with pytest.raises(LesionflowError, match="bad.yaml is not valid YAML"):
        load_config_file(bad)


def test_config_round_trips_through_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"runs": {"x": {"train": {"epochs": 2}}}}))
    assert load_config_file(path).runs["x"]["train"]["epochs"] == 2


# ---------------------------------------------------------------- tasks


def loes(**runs):
    return {"data": {"synthetic": {"kind": "loes"}}, "defaults": {"task": "regression"}, "runs": runs}


def test_a_regression_run_gets_a_regressor_a_regression_loss_and_3d_by_default():
    config = resolve_config(loes(a={}))
    run = config.runs["a"]
    assert run["task"] == "regression"
    assert run["model"]["network"] == "ResNet10" and run["model"]["spatial_dims"] == 3
    assert run["train"]["loss"] == "MSE" and run["train"]["augment"]["rotate90"] is False
    assert run["train"]["sample_weights"] == "none" and run["tune"]["calibration"] == "none"
    assert config.data["score_column"] == "loes_score"


def test_segmentation_defaults_are_untouched_by_the_regression_defaults():
    data = {"source": "manifest", "manifest": "m.csv", "score_column": "s"}
    config = resolve_config({"runs": {"a": {}, "b": {"task": "regression"}}, "data": data})
    assert (
        config.runs["a"]["model"]["network"] == "UNet" and config.runs["a"]["train"]["loss"] == "DiceCE"
    )
    assert config.runs["b"]["model"]["network"] == "ResNet10"


@pytest.mark.parametrize(
    ("run", "key"),
    [
        ({"tune": {"thresholds": [0.5]}}, "runs.a.tune.thresholds"),
        ({"preprocess": {"tile_size": 32}}, "runs.a.preprocess.tile_size"),
        ({"evaluate": {"size_bins": [5]}}, "runs.a.evaluate.size_bins"),
        ({"train": {"positive_oversampling": 0.2}}, "runs.a.train.positive_oversampling"),
        ({"train": {"augment": {"rotate90": True}}}, "runs.a.train.augment.rotate90"),
    ],
)
def test_a_segmentation_setting_in_a_regression_run_is_refused_naming_the_key(run, key):
    with pytest.raises(LesionflowError, match=f"'{key}' applies to segmentation runs only"):
        resolve_config(loes(a=run))


@pytest.mark.parametrize(
    ("run", "key"),
    [
        ({"train": {"sample_weights": "inverse_frequency"}}, "runs.a.train.sample_weights"),
        ({"tune": {"calibration": "linear"}}, "runs.a.tune.calibration"),
        ({"evaluate": {"score_ranges": [0, 10]}}, "runs.a.evaluate.score_ranges"),
        ({"analyse": {"high_score": 5}}, "runs.a.analyse.high_score"),
    ],
)
def test_a_regression_setting_in_a_segmentation_run_is_refused_naming_the_key(run, key):
    with pytest.raises(LesionflowError, match=f"'{key}' applies to regression runs only"):
        resolve_config({"runs": {"a": run}})


def test_a_setting_inherited_from_defaults_is_refused_for_the_other_task():
    raw = {
        "data": {"source": "manifest", "manifest": "m.csv", "score_column": "s"},
        "defaults": {"tune": {"thresholds": [0.5]}},
        "runs": {"seg": {}, "reg": {"task": "regression"}},
    }
    with pytest.raises(LesionflowError, match="'runs.reg.tune.thresholds'.*from defaults too"):
        resolve_config(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            loes(a={"model": {"network": "UNet"}}),
            "'runs.a.model.network' is 'UNet'; valid values for a regression run",
        ),
        (
            loes(a={"train": {"loss": "DiceCE"}}),
            "'runs.a.train.loss' is 'DiceCE'; valid values for a regression run",
        ),
        (loes(a={"infer": {"tta": ["identity", "rot90"]}}), "'runs.a.infer.tta.1' is 'rot90'"),
        ({"runs": {"a": {"model": {"network": "ResNet18"}}}}, "set task: regression for a regressor"),
        ({"runs": {"a": {"train": {"loss": "MSE"}}}}, "'runs.a.train.loss' is 'MSE'"),
    ],
)
def test_networks_losses_and_tta_that_do_not_fit_the_task_are_refused(raw, message):
    with pytest.raises(LesionflowError, match=re.escape(message)):
        resolve_config(raw)


def test_a_regression_run_needs_a_score_column_and_a_dataset_with_scores():
    with pytest.raises(
        LesionflowError, match="'data.score_column' is required by the regression run 'a'"
    ):
        resolve_config(
            {"runs": {"a": {"task": "regression"}}, "data": {"source": "manifest", "manifest": "m.csv"}}
        )
    with pytest.raises(LesionflowError, match="'data.synthetic.kind' is 'brain', which has no scores"):
        resolve_config(
            {
                "runs": {"a": {"task": "regression"}},
                "data": {"synthetic": {"kind": "brain"}, "score_column": "s"},
            }
        )


# ------------------------------------------------ found by tests/reliability/test_config_fuzz.py


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            minimal(split={"folds": 2.0}),  # was a TypeError from range(2.0)
            "config key 'split.folds' must be of type integer or null, got 2.0",
        ),
        (
            {"runs": {"a": {"train": {"epochs": 2.0}}}},  # resolved, to fail in training
            "config key 'runs.a.train.epochs' must be of type integer, got 2.0",
        ),
        (
            {"runs": {"a": {"model": {"spatial_dims": 2.0}}}},
            "config key 'runs.a.model.spatial_dims' is 2.0; valid values: 2, 3",
        ),
        (
            {"runs": {"a": {"tune": {"connectivity": True}}}},  # True == 1 to Python
            "config key 'runs.a.tune.connectivity' is True; valid values: 1, 2, 3",
        ),
        (
            {"runs": {"a": {"train": {"learning_rate": float("nan")}}}},  # NaN passes every bound
            "config key 'runs.a.train.learning_rate' is nan; give a finite number",
        ),
        (
            minimal(split={"train": float("nan")}),  # and the fractions' sum check
            "config key 'split.train' is nan; give a finite number",
        ),
        (
            {"runs": {"a": {"evaluate": {"size_bins": [float("inf")]}}}},
            "config key 'runs.a.evaluate.size_bins.0' is inf; give a finite number",
        ),
        (
            {"runs": {"a": {"train": {"seed": 10**5000}}}},  # was a ValueError printing the message
            "config key 'runs.a.train.seed' is an integer of 16610 bits; the largest taken is 2**63 - 1",
        ),
        (
            {"runs": {"a": {"train": {1: 3}}}},  # was a TypeError from difflib
            "config key 'runs.a.train.1' is a number, not a name; quote it in the YAML",
        ),
        (
            {"runs": {1: {}}},  # resolved, a run named by a number
            "config key 'runs.1' is a number, not a name; quote it in the YAML",
        ),
        (
            {None: {}, "runs": {"a": {}}},  # was a TypeError from sorting the key
            "config key 'None' is null, not a name; quote it in the YAML",
        ),
        (
            {"runs": {"a": {"model": {"kwargs": {True: 2}}}}},  # resolved, to fail in MONAI
            "config key 'runs.a.model.kwargs.True' is a boolean, not a name; quote it in the YAML",
        ),
        (
            {"runs": {"a": {}, 1: {"train": {"epochs": 0}}}},  # was a TypeError from sorting errors
            "config key 'runs.1' is a number, not a name; quote it in the YAML",
        ),
        (
            {"runs": {"a\n": {}}},  # resolved: Python's `$` matches before a final line break
            "config key 'runs.'a\\n'' is not a valid name: it must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ "
            "(letters, digits, _, . and -)",
        ),
        (
            {"runs": {"a b": {}}},
            "config key 'runs.a b' is not a valid name: it must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$ "
            "(letters, digits, _, . and -)",
        ),
        (
            {"runs": {"a": {"train": {"x\ny": 3}}}},  # was a message of two lines
            "config key 'runs.a.train.'x\\ny'' is not a known key (known keys there: augment, batch_dice, "
            "batch_size, device, early_stopping_patience, epochs, learning_rate, loss, num_workers, "
            "patch_size, positive_oversampling, presence_loss_weight, sample_weights, scheduler, seed, "
            "weight_bins, weight_decay)",
        ),
        (
            {"": None, "runs": {"a": {}}},  # was named '<top level>'
            "config key '''' is not a known key (known keys there: compare, data, defaults, manifest, "
            "nnunet_export, reproducibility, runs, split)",
        ),
        ({"data": {}}, "config key 'runs' is required"),
        (
            {"runs": {"a": {"train": {"batch_size": "x" * 200}}}},
            f"config key 'runs.a.train.batch_size' must be of type integer, got '{'x' * 76}...",
        ),
        (
            minimal(compare={"baseline": "\r"}),  # was a message of two lines
            "config key 'compare.baseline' is '\\r', which is not a run; runs are: a",
        ),
        (
            minimal(data={"mask_channel": 7}),
            "config key 'data.mask_channel' is 7; valid values: null, 0, 1, 2",
        ),
    ],
)
def test_a_value_yaml_can_give_but_no_key_takes_is_one_line_naming_the_key(raw, message):
    with pytest.raises(LesionflowError) as err:
        resolve_config(raw)
    assert str(err.value) == message


def test_a_list_or_mapping_inside_itself_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("runs: {a: {tags: &t [x, *t]}}\n")  # was a RecursionError
    with pytest.raises(LesionflowError, match=re.escape("config key 'runs.a.tags.1' holds itself")):
        load_config_file(path)


def test_a_key_the_schema_marks_x_increasing_must_increase():
    schema = load_schema()
    schema["properties"]["split"]["properties"]["score_bins"]["x-increasing"] = True
    with pytest.raises(LesionflowError) as err:
        resolve_config(minimal(split={"score_bins": [2, 10, 5]}), schema)
    assert str(err.value) == "config key 'split.score_bins': [2, 10, 5] is not strictly increasing"
    assert resolve_config(minimal(split={"score_bins": [2, 5, 10]}), schema).split["score_bins"] == [2, 5, 10]


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("evaluate", "size_bins", [500, 50]),
        ("train", "weight_bins", [2, 2, 5]),
        ("train", "seed", 2**32),
        ("train", "seed", -1),
    ],
)
def test_cut_points_that_do_not_increase_and_seeds_numpy_refuses_are_refused(section, key, value):
    config = minimal(defaults={section: {key: value}})
    with pytest.raises(LesionflowError, match=rf"config key 'defaults\.{section}\.{key}'"):
        resolve_config(config)


def test_folds_beyond_a_hundred_are_refused_by_the_config():
    with pytest.raises(LesionflowError, match=r"config key 'split\.folds'"):
        resolve_config(minimal(split={"train": 0.6, "val": 0.2, "test": 0.2, "folds": 101}))


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_example_config_resolves(path):
    config = load_config_file(path)
    assert config.runs and config.baseline in config.runs
