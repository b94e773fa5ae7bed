"""Bad configs (invalid YAML, not a mapping, each class of schema violation): one line naming the key."""

from __future__ import annotations

import pytest
from reliability.bad_input_files import error_line

from lesionflow.pipeline.config import load_config_file, load_schema, resolve_config


@pytest.mark.parametrize(
    ("text", "what"),
    [
        (
            "runs:\n  a: {model: [\n",
            "line 3, column 1: expected the node content, but found '<stream end>' (while parsing a "
            "flow node at line 3)",
        ),
        ("runs:\n\ta: {}\n", "line 2, column 1: found character '\\t' that cannot start any token"),
        (
            "runs:\n  a: {}\n b: 1\n",
            "line 3, column 2: expected <block end>, but found '<block mapping start>' "
            "(while parsing a block mapping at line 1)",
        ),
    ],
    ids=["unclosed", "tab", "indent"],
)
def test_a_config_that_is_not_valid_yaml_names_the_file_line_and_column(tmp_path, text, what):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert error_line(load_config_file, path) == f"config file {path} is not valid YAML: {what}"


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"runs:\n  a: {}\nruns:\n  b: {}\n", "is not valid YAML: line 3, column 1: found the key 'runs' "
         "twice (while constructing a mapping at line 1)"),
        (b"runs:\n  a: {}\n\xff\xfe: 1\n", "is not UTF-8 text: byte 0xff at offset 14"),
        (b"runs: {a: {}}\x00\n", "is not valid YAML: character 14 is U+0000: special characters are "
         "not allowed"),
        (b"", "is empty: give at least a 'runs' section"),
        (b"# nothing but a comment\n", "is empty: give at least a 'runs' section"),
        (b"runs: " + b"[" * 3000, "nests lists or mappings too deeply to read"),
        (b"runs: {a: {train: {seed: " + b"1" * 5000 + b"}}}\n", "cannot be read as YAML: Exceeds the "
         "limit (4300 digits) for integer string conversion: value has 5000 digits; use "
         "sys.set_int_max_str_digits() to increase the limit"),
    ],
    ids=["duplicate-key", "not-utf8", "nul", "empty", "comment-only", "deep", "huge-integer"],
)  # fmt: skip
def test_a_config_file_that_cannot_be_read_as_a_mapping_names_the_file_and_why(tmp_path, data, what):
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    assert error_line(load_config_file, path) == f"config file {path} {what}"


def test_a_key_given_twice_through_a_merge_key_is_an_override_not_a_duplicate(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("defaults: {train: &base {epochs: 2, seed: 1}}\n"
                    "runs: {a: {train: {<<: *base, epochs: 3}}}\n")  # fmt: skip
    train = load_config_file(path).runs["a"]["train"]
    assert (train["epochs"], train["seed"]) == (3, 1)


def test_a_config_folder_is_named_as_unreadable(tmp_path):
    assert error_line(load_config_file, tmp_path) == f"config file {tmp_path} cannot be read: Is a directory"


def test_a_config_that_is_a_list_says_a_mapping_is_expected(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("- runs\n- data\n")
    assert error_line(load_config_file, path) == (
        f"config file {path}: expected a mapping of sections (runs, data, split, ...), got a list"
    )


def _known_train_keys() -> str:
    return ", ".join(sorted(load_schema()["$defs"]["run"]["properties"]["train"]["properties"]))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"runs": {"a": {"train": {"epohcs": 3}}}},
            "config key 'runs.a.train.epohcs' is not a known key; did you mean 'epochs'? (known keys "
            "there: {train_keys})",
        ),
        (
            {"runs": {"a": {"train": {"batch_size": "16"}}}},
            "config key 'runs.a.train.batch_size' must be of type integer, got '16'",
        ),
        (
            {"runs": {"a": {"train": {"epochs": 0}}}},
            "config key 'runs.a.train.epochs': 0 is less than the minimum of 1",
        ),
        (
            {"runs": {"a": {}}, "split": {"train": 1.5}},
            "config key 'split.train': 1.5 is greater than or equal to the maximum of 1",
        ),
        (
            {"runs": {"a": {}}, "split": {"stratify": "random"}},
            "config key 'split.stratify' is 'random'; valid values: auto, presence, score",
        ),
        (
            {"runs": {"a": {}}, "split": {"train": 0.5, "val": 0.2, "test": 0.2}},
            "config keys 'split.train', 'split.val', 'split.test' must sum to 1, got 0.9",
        ),
        (
            {"runs": {"a": {}}, "compare": {"baseline": "b"}},
            "config key 'compare.baseline' is 'b', which is not a run; runs are: a",
        ),
        (
            {"runs": {"a": {}, "e": {"source": "ensemble", "ensemble": {"members": ["a", "zz"]}}}},
            "config key 'runs.e.ensemble.members' names 'zz', which is neither a run nor a recipe with "
            "seeds; runs it can name: a",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "below-minimum",
        "above-maximum",
        "unknown-enum",
        "fractions",
        "baseline",
        "ensemble-member",
    ],
)
def test_each_class_of_schema_violation_is_one_line_naming_the_key_and_what_is_valid(raw, message):
    assert error_line(resolve_config, raw) == message.replace("{train_keys}", _known_train_keys())
