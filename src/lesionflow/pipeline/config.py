"""Load, validate and resolve a lesionflow config: defaults filled, runs merged with `defaults`.

Never guesses: an unknown, misspelt or ill-typed key is an error that names the key.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lesionflow.pipeline.config_validation import check_plain, key_path, kind_of, validate
from lesionflow.pipeline.errors import LesionflowError, one_line
from lesionflow.pipeline.label_checks import check_labels
from lesionflow.pipeline.run_expansion import expand_folds, expand_seeds, with_members

# Package data, so an installed lesionflow (not only an editable one) finds it; workflow/schemas/
# holds a link to it where Snakemake workflows keep their schemas.
SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
TASKS = ("segmentation", "regression")
# The score column of the built-in loes dataset (data.synthetic.kind loes).
LOES_SCORE_COLUMN = "loes_score"


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated config: the shared data and split sections, and every run fully resolved."""

    data: dict[str, Any]
    split: dict[str, Any]
    runs: dict[str, dict[str, Any]]
    baseline: str
    compare: dict[str, Any] = field(default_factory=dict)
    # Each run's group: the recipe whose `seeds` it was expanded from, else the run itself.
    groups: dict[str, str] = field(default_factory=dict)
    # The nnU-Net export's settings (dataset_id, dataset_name), or None when not asked for.
    nnunet_export: dict[str, Any] | None = None
    # What the reviewer's tools hold results to: versions_in_keys and reproduce's tolerances.
    reproducibility: dict[str, Any] = field(default_factory=dict)


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the JSON schema (written as YAML) that documents and checks every config key."""
    return copy.deepcopy(_parsed_schema(path))


@functools.cache
def _parsed_schema(path: Path) -> dict[str, Any]:
    # Parsing the schema takes PyYAML about 0.2 s, copying it 2 ms: a process reads it once.
    return yaml.safe_load(path.read_text())


def run_section_schema(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema of the run section ``name`` (e.g. ``evaluate``), and the whole schema for its $refs."""
    schema = load_schema()
    return schema["$defs"]["run"]["properties"][name], schema


def complete_run_section(
    name: str, settings: Mapping[str, Any], task: str = "segmentation"
) -> dict[str, Any]:
    """The run section ``name`` of a ``task`` run, every key the user left out filled from the
    schema's defaults, without the keys that only the other task reads.

    The Snakefile resolves whole configs this way; callers that build one section by hand (tests,
    benchmarks) use this so that no module has to restate a default.
    """
    section, schema = run_section_schema(name)
    filled = fill_defaults(dict(settings), section, schema)
    for path, only_for, _ in _task_keys(section, schema):
        found, _value = _lookup(filled, path)
        if only_for and only_for != task and found:
            parent = filled
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
    return filled


def resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$ref`` (a ``#/...`` pointer into ``root``) replaced by the target's keys."""
    ref = schema.get("$ref")
    if not ref:
        return schema
    target = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Return ``instance`` with every missing key that has a schema default filled in."""
    schema = resolve_ref(schema, root)
    if not isinstance(instance, dict) or "properties" not in schema:
        return instance
    filled = dict(instance)
    for key, sub in schema["properties"].items():
        sub = resolve_ref(sub, root)
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        if key in filled:
            filled[key] = fill_defaults(filled[key], sub, root)
    return filled


def _task_keys(schema: dict[str, Any], root: dict[str, Any], path: tuple = ()):
    """Yield (key path, x-task, x-regression-default) of every run key marked with either."""
    schema = resolve_ref(schema, root)
    for key, sub in schema.get("properties", {}).items():
        sub = resolve_ref(sub, root)
        here = path + (key,)
        if "x-task" in sub or "x-regression-default" in sub:
            yield here, sub.get("x-task"), sub.get("x-regression-default")
        yield from _task_keys(sub, root, here)


def _lookup(tree: Mapping[str, Any], path: tuple) -> tuple[bool, Any]:
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return False, None
        tree = tree[key]
    return True, tree


def _check_task_keys(run: Mapping[str, Any], task: str, name: str, root: dict[str, Any]) -> None:
    """Refuse a key the user set (in the run or its defaults) that only the other task reads."""
    for path, only_for, _ in _task_keys(root["$defs"]["run"], root):
        if only_for and only_for != task and _lookup(run, path)[0]:
            raise LesionflowError(
                f"config key '{key_path(('runs', name) + path)}' applies to {only_for} runs only; "
                f"run '{name}' is a {task} run (remove the key, from defaults too if it is set there)"
            )


def _task_defaults(run: Mapping[str, Any], task: str, root: dict[str, Any]) -> dict[str, Any]:
    """The task's own defaults for the keys ``run`` leaves unset, as a nested mapping."""
    seeded: dict[str, Any] = {}
    if task != "regression":
        return seeded
    for path, _, default in _task_keys(root["$defs"]["run"], root):
        if default is not None and not _lookup(run, path)[0]:
            node = seeded
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = copy.deepcopy(default)
    return seeded


def merge_run(defaults: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge a run's overrides onto the defaults.

    Network keyword arguments are replaced, never merged: UNet's `channels` must not leak
    into a run that switches to SegResNet.
    """
    merged = copy.deepcopy(defaults)
    for section, values in override.items():
        if not isinstance(values, dict):
            merged[section] = copy.deepcopy(values)
            continue
        base = merged.setdefault(section, {})
        if section == "model" and "network" in values and values["network"] != base.get("network"):
            base["kwargs"] = {}
        for key, value in values.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "kwargs":
                base[key] = {**base[key], **copy.deepcopy(value)}
            else:
                base[key] = copy.deepcopy(value)
    return merged


def resolve_config(raw: dict[str, Any], schema: dict[str, Any] | None = None) -> ResolvedConfig:
    """Validate a raw config mapping and resolve every run; raises LesionflowError naming the key."""
    schema = schema or load_schema()
    if not isinstance(raw, dict):
        raise LesionflowError(
            f"config: expected a mapping of sections with at least 'runs', got {kind_of(raw)}"
        )
    if not raw:
        raise LesionflowError("config is empty: give a config file with at least a 'runs' section")
    check_plain(raw)
    validate(raw, schema, schema, ())
    config = fill_defaults(raw, schema, schema)
    run_schema = schema["$defs"]["run"]
    given_defaults = raw.get("defaults") or {}

    runs = {}
    for name, override in config["runs"].items():
        given = merge_run(given_defaults, override or {})
        task = given.get("task", run_schema["properties"]["task"]["default"])
        _check_task_keys(given, task, name, schema)
        # A regression run's own defaults (a regressor, MSE, 3D) go under the user's defaults.
        defaults = fill_defaults(
            merge_run(_task_defaults(given, task, schema), given_defaults), run_schema, schema
        )
        run = fill_defaults(merge_run(defaults, override or {}), run_schema, schema)
        validate(run, run_schema, schema, ("runs", name))
        _check_external(name, run, given)
        runs[name] = run
    runs, groups = expand_seeds(runs, config["runs"])
    runs, groups = expand_folds(runs, groups, config["split"]["folds"])
    runs = {name: with_members(name, run, runs, groups) for name, run in runs.items()}

    split = config["split"]
    total = split["train"] + split["val"] + split["test"]
    if abs(total - 1.0) > 1e-6:
        raise LesionflowError(
            f"config keys 'split.train', 'split.val', 'split.test' must sum to 1, got {total:g}"
        )
    data = config["data"]
    if "manifest" in config:
        data = {**data, "source": "manifest", "manifest": config["manifest"]}
    if data["source"] == "manifest" and not data.get("manifest"):
        raise LesionflowError(
            "config key 'data.manifest' is required when 'data.source' is manifest"
        )

    data = _score_settings(data, runs)
    check_labels(data, runs, split, config["nnunet_export"])

    baseline = config["compare"].get("baseline", next(iter(runs)))
    # A seeded recipe as baseline: its first seed, the run the others are paired with.
    baseline = next((run for run, group in groups.items() if group == baseline), baseline)
    if baseline not in runs:
        raise LesionflowError(
            f"config key 'compare.baseline' is {baseline!r}, which is not a run; "
            f"runs are: {', '.join(runs)}"
        )
    compare = {**config["compare"], "baseline": baseline}
    return ResolvedConfig(
        data=data,
        split=split,
        runs=runs,
        baseline=baseline,
        compare=compare,
        groups=groups,
        nnunet_export=config["nnunet_export"],
        reproducibility=config["reproducibility"],
    )


def _check_external(name: str, run: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    """An external or ensemble run asks for no preprocessing (its maps are at each image's original
    size, or its members'); an external run names its predictions."""
    if run.get("source") not in ("external", "ensemble"):
        return
    if given.get("preprocess"):
        raise LesionflowError(
            f"config key 'runs.{name}.preprocess' does not apply to a run with source "
            f"{run['source']} (it trains nothing); remove it, from defaults too"
        )
    if run["source"] == "external" and not run["external"]["predictions"]:
        raise LesionflowError(
            f"config key 'runs.{name}.external.predictions' is required by source external: "
            "the folder of the run's predictions, named by image id"
        )


def _score_settings(data: dict[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The data section with the built-in loes dataset's score column, and regression runs checked
    to have a score to learn."""
    synthetic_kind = data["synthetic"]["kind"] if data["source"] == "synthetic" else None
    if synthetic_kind == "loes" and data["score_column"] is None:
        data = {**data, "score_column": LOES_SCORE_COLUMN}
    regression = [name for name, run in runs.items() if run["task"] == "regression"]
    if regression and data["score_column"] is None:
        raise LesionflowError(
            f"config key 'data.score_column' is required by the regression run '{regression[0]}': "
            "name the manifest column that holds the score (the built-in dataset with scores is "
            "data.synthetic.kind loes)"
        )
    if regression and synthetic_kind in ("fundus", "brain"):
        raise LesionflowError(
            f"config key 'data.synthetic.kind' is {synthetic_kind!r}, which has no scores for the "
            f"regression run '{regression[0]}'; use kind loes or your own manifest"
        )
    return data


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: the keys after it override
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found the key {key!r} twice", key_node.start_mark,
                )  # fmt: skip
            seen.append(key)
        return super().construct_mapping(node, deep)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of sections a YAML config file holds; a file that is missing, unreadable, not
    UTF-8, not YAML (a key given twice included), empty or not a mapping is named in one line."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_bytes().decode("utf-8"), Loader=_ConfigLoader)
    except FileNotFoundError:
        raise LesionflowError(f"config file {path} does not exist") from None
    except OSError as err:
        raise LesionflowError(f"config file {path} cannot be read: {err.strerror or one_line(err)}") from None
    except UnicodeDecodeError as err:
        raise LesionflowError(
            f"config file {path} is not UTF-8 text: byte {err.object[err.start]:#04x} at offset {err.start}"
        ) from None
    except yaml.YAMLError as err:
        raise LesionflowError(f"config file {path} is not valid YAML: {_yaml_problem(err)}") from None
    except RecursionError:
        raise LesionflowError(f"config file {path} nests lists or mappings too deeply to read") from None
    except ValueError as err:  # Python's limit that PyYAML lets through: an integer of 4300 digits
        raise LesionflowError(f"config file {path} cannot be read as YAML: {one_line(err)}") from None
    if raw is None:
        raise LesionflowError(f"config file {path} is empty: give at least a 'runs' section")
    if not isinstance(raw, dict):
        raise LesionflowError(
            f"config file {path}: expected a mapping of sections (runs, data, split, ...), "
            f"got {kind_of(raw)}"
        )
    return raw


def check_config_files(paths: Iterable[str | os.PathLike]) -> None:
    """Read each YAML config file as :func:`read_config_file` does, for what Snakemake, which reads
    ``--configfile`` itself, lets through: a key given twice (it keeps the last). JSON files are
    Snakemake's to read (JSON allows tabs that YAML refuses)."""
    for path in paths:
        if Path(path).suffix.lower() != ".json":
            read_config_file(path)


def load_config_file(path: str | Path) -> ResolvedConfig:
    """Read a YAML config file and resolve it; a file that cannot be read as a config names the file."""
    return resolve_config(read_config_file(path))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """Where and what PyYAML found wrong, in one line: its own message spans several."""
    if isinstance(err, yaml.reader.ReaderError):
        return f"character {err.position + 1} is U+{err.character:04X}: {err.reason}"
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or problem is None:
        return one_line(err)
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    started = f" ({context} at line {context_mark.line + 1})" if context and context_mark else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {one_line(problem)}{started}"
