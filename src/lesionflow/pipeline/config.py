"""Load, validate and resolve a lesionflow config: defaults filled, runs merged with `defaults`.

Never guesses: an unknown, misspelt or ill-typed key is an error that names the key.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from lesionflow.pipeline.errors import LesionflowError

# Package data, so an installed lesionflow (not only an editable one) finds it; workflow/schemas/
# holds a link to it where Snakemake workflows keep their schemas.
SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
RUN_SECTIONS = ("model", "preprocess", "train", "infer", "tune", "evaluate", "analyse", "resources")


@dataclass(frozen=True)
class ResolvedConfig:
    """A validated config: the shared data and split sections, and every run fully resolved."""

    data: dict[str, Any]
    split: dict[str, Any]
    runs: dict[str, dict[str, Any]]
    baseline: str
    compare: dict[str, Any] = field(default_factory=dict)


def load_schema(path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the JSON schema (written as YAML) that documents and checks every config key."""
    return yaml.safe_load(path.read_text())


def run_section_schema(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema of the run section ``name`` (e.g. ``evaluate``), and the whole schema for its $refs."""
    schema = load_schema()
    return schema["$defs"]["run"]["properties"][name], schema


def complete_run_section(name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The run section ``name`` with every key the user left out filled from the schema's defaults.

    The Snakefile resolves whole configs this way; callers that build one section by hand (tests,
    benchmarks) use this so that no module has to restate a default.
    """
    section, schema = run_section_schema(name)
    return fill_defaults(dict(settings), section, schema)


def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _describe(error: jsonschema.ValidationError, prefix: tuple) -> str:
    path = prefix + tuple(error.absolute_path)
    where = _key_path(path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        unknown = extra[0] if extra else "?"
        close = difflib.get_close_matches(unknown, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        allowed = ", ".join(known) if known else "none"
        return (
            f"config key '{_key_path(path + (unknown,))}' is not a known key{hint} "
            f"(known keys there: {allowed})"
        )
    if error.validator == "enum":
        valid = ", ".join(str(v) for v in error.validator_value)
        return f"config key '{where}' is {error.instance!r}; valid values: {valid}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"config key '{where}' must be of type {expected}, got {error.instance!r}"
    if error.validator == "required":
        return f"config key '{where}': {error.message}"
    return f"config key '{where}': {error.message}"


def _validate(instance: Any, schema: dict[str, Any], root: dict[str, Any], prefix: tuple) -> None:
    resolver_schema = {**schema, "$defs": root.get("$defs", {})}
    validator = jsonschema.Draft202012Validator(resolver_schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        deepest = max(errors, key=lambda e: len(e.absolute_path))
        raise LesionflowError(_describe(deepest, prefix))


def _resolve_ref(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not ref:
        return schema
    target = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Return ``instance`` with every missing key that has a schema default filled in."""
    schema = _resolve_ref(schema, root)
    if not isinstance(instance, dict) or "properties" not in schema:
        return instance
    filled = dict(instance)
    for key, sub in schema["properties"].items():
        sub = _resolve_ref(sub, root)
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        if key in filled:
            filled[key] = fill_defaults(filled[key], sub, root)
    return filled


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
    if not isinstance(raw, dict) or not raw:
        raise LesionflowError("config is empty: give a config file with at least a 'runs' section")
    _validate(raw, schema, schema, ())
    config = fill_defaults(raw, schema, schema)
    run_schema = schema["$defs"]["run"]
    defaults = fill_defaults(config.get("defaults", {}), run_schema, schema)

    runs = {}
    for name, override in config["runs"].items():
        run = fill_defaults(merge_run(defaults, override or {}), run_schema, schema)
        _validate(run, run_schema, schema, ("runs", name))
        runs[name] = run

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

    baseline = config["compare"].get("baseline", next(iter(runs)))
    if baseline not in runs:
        raise LesionflowError(
            f"config key 'compare.baseline' is '{baseline}', which is not a run; "
            f"runs are: {', '.join(runs)}"
        )
    compare = {**config["compare"], "baseline": baseline}
    return ResolvedConfig(data=data, split=split, runs=runs, baseline=baseline, compare=compare)


def load_config_file(path: str | Path) -> ResolvedConfig:
    """Read a YAML config file and resolve it; a YAML syntax error names the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LesionflowError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise LesionflowError(f"config file {path} is not valid YAML: {err}") from None
    return resolve_config(raw or {})
