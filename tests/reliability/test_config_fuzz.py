"""Configs near the schema's edges, generated from the schema itself: each resolves, or fails with a
LesionflowError of one line naming the offending key (or the file), never another exception."""

from __future__ import annotations

import copy
import datetime
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from workflow.pipeline import tiny_config, tiny_run

from lesionflow.pipeline.config import load_config_file, load_schema, resolve_config, resolve_ref
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.settings import RUN_SECTIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema()
# Reproducible in CI: the same examples every run, nothing kept between runs.
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
ENSEMBLE = {"source": "ensemble", "ensemble": {"members": ["a", "seeded"]}}
# Valid configs of every kind: the demo, the tests' tiny one, regression, ensembles and external
# runs, seeds and folds.
BASES = (
    yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text()),
    tiny_config({"a": tiny_run(), "b": tiny_run(infer={"tta": ["identity", "hflip"]})}),
    {"data": {"synthetic": {"kind": "loes"}}, "defaults": {"task": "regression"}, "runs": {"r": {}}},
    tiny_config(
        {"a": {}, "seeded": {"seeds": [0, 1]}, "ens": ENSEMBLE,
         "ext": {"source": "external", "external": {"predictions": "p"}}},
        compare={"baseline": "seeded"},
    ),
    tiny_config({"a": {}, "b": {"seeds": [3, 4]}}, split={"folds": 3}),
)  # fmt: skip
# Values of every kind that YAML (or Snakemake's --config) can give, whatever the key expects.
ANY_KIND = [
    None, {}, [], "", " ", "a b", "ünïcødé ✓", "two\nlines", "x" * 300, 0, -1, 1, 1.5, -0.0, True, False,
    2**63, -(2**63) - 1, 10**30, 1e308, float("nan"), float("inf"), float("-inf"), [None], [[]],
    {"": 1}, {1: 2}, {None: 1}, (1, 2), datetime.date(2024, 1, 2), b"\xff",
]  # fmt: skip
ODD_NAMES = ["", " ", "a b", "ü", "a\n", "a\tb", "-a", ".", "a.seed0", "unet", "UNet", "epohcs", "1"]


def _nodes(node: dict[str, Any], path: tuple) -> list[tuple[tuple, dict[str, Any]]]:
    """Every key below ``node`` (itself included), as (path, its schema)."""
    node = resolve_ref(node, SCHEMA)
    found = [(path, node)]
    for key, sub in node.get("properties", {}).items():
        found += _nodes(sub, path + (key,))
    return found


def _edge_values(node: dict[str, Any]) -> list[Any]:
    """Values at and beyond the edges ``node`` sets: bounds, enums, item kinds, its default."""
    values = list(ANY_KIND)
    for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if bound in node:
            edge = node[bound]
            values += [edge, edge - 1, edge + 1, edge - 1e-9, edge + 1e-9, float(edge)]
    kinds = node.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "integer" in kinds:
        values += [2, 3.0, 2**31, 2**63 - 1, 2**64]
    if "enum" in node:
        values += node["enum"] + [str(v).upper() for v in node["enum"]] + [f" {node['enum'][-1]}"]
    if "items" in node:
        items = resolve_ref(node["items"], SCHEMA)
        item_values = _edge_values({k: v for k, v in items.items() if k != "items"})
        values += [[v] for v in item_values] + [item_values[-3:], [1, 1], [2, 1]]
    if "properties" in node:
        known = list(node["properties"])
        values += [{known[0]: None}, {known[-1]: {}}, {"unknown": 1, known[0]: node.get("default")}]
    if "default" in node:
        values.append(copy.deepcopy(node["default"]))
    return values


RUN_SCHEMA = SCHEMA["$defs"]["run"]
RUN_KEYS = _nodes(RUN_SCHEMA, ())[1:]
# Every key outside runs and defaults, and those two sections whole.
SECTION_KEYS = [
    item for name, sub in SCHEMA["properties"].items() if name not in ("runs", "defaults")
    for item in _nodes(sub, (name,))
] + [(("runs",), SCHEMA["properties"]["runs"]), (("defaults",), RUN_SCHEMA)]  # fmt: skip
EDGES = {id(node): _edge_values(node) for _, node in RUN_KEYS + SECTION_KEYS}


def _set(config: dict, path: tuple, value: Any) -> None:
    """``value`` at ``path`` in ``config``, making the mappings above it; nothing where a key above
    holds something else (an earlier mutation)."""
    node = config
    for key in path[:-1]:
        if not isinstance(node, dict):
            return
        node = node.setdefault(key, {})
    if isinstance(node, dict):
        node[path[-1]] = value


@st.composite
def mutation(draw, config: dict) -> None:
    """One change of ``config`` near the schema's edges: a key set, deleted or misspelt, a run
    renamed or an ensemble added."""
    runs = list(config.get("runs") or {}) if isinstance(config.get("runs"), dict) else []
    kind = draw(st.sampled_from(["set"] * 6 + ["delete", "unknown", "rename", "ensemble"]))
    if kind in ("set", "delete", "unknown"):
        where = draw(st.sampled_from(["run", "section"]))
        if where == "run" and runs:
            path, node = draw(st.sampled_from(RUN_KEYS))
            path = (*draw(st.sampled_from([("defaults",), *(("runs", r) for r in runs)])), *path)
        else:
            path, node = draw(st.sampled_from(SECTION_KEYS))
        if kind == "set":
            value = draw(st.one_of(st.sampled_from(EDGES[id(node)]), st.text(max_size=4), st.integers()))
            _set(config, path, copy.deepcopy(value))
        elif kind == "delete":
            parent = config
            for key in path[:-1]:
                parent = parent.get(key) if isinstance(parent, dict) else None
            if isinstance(parent, dict):
                parent.pop(path[-1], None)
        else:
            name = draw(st.one_of(st.sampled_from(ODD_NAMES), st.text(max_size=6)))
            _set(config, path[:-1] + (name,), draw(st.sampled_from(ANY_KIND)))
    elif kind == "rename" and runs:
        old = draw(st.sampled_from(runs))
        new = draw(st.one_of(st.sampled_from(ODD_NAMES), st.text(max_size=6)))
        config["runs"] = {new if name == old else name: run for name, run in config["runs"].items()}
    elif kind == "ensemble" and runs:
        name = draw(st.sampled_from(["e", *runs]))
        members = draw(st.lists(st.sampled_from([*runs, "e", "nope", "unet"]), max_size=3))
        config["runs"][name] = {"source": "ensemble", "ensemble": {"members": members}}


@st.composite
def edge_configs(draw) -> dict:
    """A valid base config with one or two keys changed."""
    config = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 2))):
        draw(mutation(config))
    return config


def assert_one_line_naming_a_key(message: str, config: Any) -> None:
    assert message.splitlines() == [message] and message.strip() == message, message
    # A key is spelt as its repr when empty or holding a line break or a tab (one line whatever it holds).
    spelt = {str(key) if str(key).isprintable() and str(key) else repr(str(key)) for key in config}
    tops = set(SCHEMA["properties"]) | spelt
    assert any(re.match(rf"config keys? '{re.escape(top)}[.']", message) for top in tops), (
        f"names no key of the config's sections: {message}"
    )


@FUZZ
@given(edge_configs())
def test_a_config_near_the_schemas_edges_resolves_or_fails_in_one_line_naming_the_key(config):
    try:
        resolved = resolve_config(config, SCHEMA)
    except LesionflowError as err:
        assert_one_line_naming_a_key(str(err), config)
        return
    assert resolved.baseline in resolved.runs
    for run in resolved.runs.values():
        assert all(isinstance(run[section], dict) for section in RUN_SECTIONS)


def _text_edits():
    """Edits of a config's YAML text: a tab, a line twice, a cut, a stray token, a byte not UTF-8."""
    position = st.integers(0, 10_000)
    tokens = st.sampled_from(
        ["\t", ":", "- ", "[", "{", "}", "&a ", "*a", "!!python/object:os.system ", "'", '"', "\x00",
         "%", "? ", "<<: *a\n", "\ufeff", "\u2028", "é", "#", "\n  ", ": :"]
    )  # fmt: skip
    return st.one_of(
        st.tuples(st.just("insert"), position, tokens),
        st.tuples(st.just("twice"), position, st.just("")),
        st.tuples(st.just("cut"), position, st.just("")),
        st.tuples(st.just("byte"), position, st.sampled_from(["\xff", "\xfe", "\xc3", "\x80"])),
    )


WHOLE_FILES = [
    b"", b"# only a comment\n", b"- runs\n- data\n", b"just a string\n", b"42\n", b"null\n",
    b"---\nruns: {a: {}}\n---\nruns: {b: {}}\n", b"runs: &x {a: *x}\n", b"runs: " + b"[" * 3000,
    b"runs: {a: {train: {seed: " + b"1" * 5000 + b"}}}\n", b"\xef\xbb\xbfruns: {a: {}}\n",
    b"runs: {a: {}}\nruns: {b: {}}\n", b"runs:\n  a: {}\n  a: {train: {epochs: 2}}\n",
    b"\xff\xfe r\x00u\x00n\x00s\x00", b"runs: {a: {}}\n\x00", b"runs: {1: {}, null: {}}\n",
    b"runs: {a: {train: {epochs: .nan, seed: 2024-01-02}}}\n", b"runs: {a: !!binary aGVsbG8=}\n",
]  # fmt: skip


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-yaml")


def _edited(text: str, edits: list[tuple[str, int, str]]) -> bytes:
    data = text.encode()
    for kind, position, token in edits:
        at = position % (len(data) + 1)
        if kind == "twice":
            lines = data.splitlines(keepends=True)
            line = at % max(len(lines), 1)
            data = b"".join(lines[: line + 1] + lines[line:])
        elif kind == "cut":
            data = data[:at]
        else:
            data = data[:at] + (token.encode("latin-1") if kind == "byte" else token.encode()) + data[at:]
    return data


@settings(FUZZ, max_examples=150)  # each reads a file and parses YAML: ten times slower
@given(
    st.one_of(
        st.tuples(st.sampled_from(BASES), st.lists(_text_edits(), min_size=1, max_size=2)),
        st.sampled_from(WHOLE_FILES),
    )
)
def test_a_config_file_of_odd_text_resolves_or_fails_in_one_line_naming_the_file_or_key(folder, case):
    data = case if isinstance(case, bytes) else _edited(yaml.safe_dump(case[0], sort_keys=False), case[1])
    path = folder / "config.yaml"
    path.write_bytes(data)
    try:
        resolved = load_config_file(path)
    except LesionflowError as err:
        message = str(err)
        assert message.splitlines() == [message], message
        assert message.startswith(f"config file {path}") or re.match(r"config keys? '", message), message
        return
    assert resolved.runs and resolved.baseline in resolved.runs
