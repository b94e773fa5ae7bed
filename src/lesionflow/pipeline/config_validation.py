"""A raw config checked against the schema: each problem one line naming its key (its dotted path).

Never fills a default or resolves a run (lesionflow.pipeline.config does): it only says what is wrong.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema

from lesionflow.pipeline.errors import LesionflowError

# Integers beyond 64 bits fit no seed, size or count, and Python will not print one of over 4300 digits.
LARGEST_INTEGER = 2**63 - 1


def key_path(parts: Iterable[Any]) -> str:
    """A config key's dotted path (``runs.a.train.epochs``), on one line whatever its keys hold."""
    return ".".join(_spelt(part) for part in parts) or "<top level>"


def _spelt(part: Any) -> str:
    # A key holding a line break or a tab would split the one-line report; its repr keeps it whole.
    text = str(part)
    return text if text.isprintable() and text else repr(text)


def _shown(value: Any) -> str:
    """``value`` as the report quotes it: its repr, on one line, cut short when long."""
    text = "null" if value is None else repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def check_plain(value: Any, path: tuple = (), within: tuple = ()) -> None:
    """Refuse what YAML can give and no config key takes: a key that is not a string (1:, null:),
    a number that is not finite (.nan, .inf) or beyond 64 bits, a list or mapping inside itself."""
    if isinstance(value, (Mapping, list)):
        if any(value is outer for outer in within):
            raise LesionflowError(f"config key '{key_path(path)}' holds itself (a YAML alias of its anchor)")
        items = value.items() if isinstance(value, Mapping) else enumerate(value)
        for key, item in items:
            if isinstance(value, Mapping) and not isinstance(key, str):
                raise LesionflowError(
                    f"config key '{key_path(path + (key,))}' is {kind_of(key)}, not a name; "
                    "quote it in the YAML"
                )
            check_plain(item, path + (key,), within + (value,))
    elif isinstance(value, float) and not math.isfinite(value):
        raise LesionflowError(f"config key '{key_path(path)}' is {value}; give a finite number")
    elif isinstance(value, int) and abs(value) > LARGEST_INTEGER:
        raise LesionflowError(
            f"config key '{key_path(path)}' is an integer of {value.bit_length()} bits; "
            "the largest taken is 2**63 - 1"
        )


def kind_of(value: Any) -> str:
    """What YAML made of ``value``, in YAML's words: null, a boolean, a number, a string, a list..."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else "a boolean"
    if isinstance(value, (int, float, str)):
        return "a string" if isinstance(value, str) else "a number"
    return f"a {type(value).__name__}"


def _describe(error: jsonschema.ValidationError, prefix: tuple) -> str:
    path = prefix + tuple(error.absolute_path)
    where = key_path(path)
    if "propertyNames" in error.schema_path:
        return (
            f"config key '{key_path(path + (error.instance,))}' is not a valid name: it must match "
            f"{error.validator_value} (letters, digits, _, . and -)"
        )
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        unknown = extra[0] if extra else "?"
        close = difflib.get_close_matches(unknown, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        allowed = ", ".join(known) if known else "none"
        return (
            f"config key '{key_path(path + (unknown,))}' is not a known key{hint} "
            f"(known keys there: {allowed})"
        )
    if error.validator == "enum":
        valid = ", ".join("null" if v is None else str(v) for v in error.validator_value)
        # The task-dependent enums (network, loss, TTA) sit in the run schema's if/then/else.
        task = (
            " for a regression run" if "then" in error.schema_path
            else " for a segmentation run (set task: regression for a regressor)"
            if "else" in error.schema_path else ""
        )
        return f"config key '{where}' is {_shown(error.instance)}; valid values{task}: {valid}"
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"config key '{where}' must be of type {expected}, got {_shown(error.instance)}"
    if error.validator == "required":
        missing = next(key for key in error.validator_value if key not in error.instance)
        return f"config key '{key_path(path + (missing,))}' is required"
    return f"config key '{where}': {error.message}"


def _is_integer(_checker: Any, instance: Any) -> bool:
    # JSON Schema counts 2.0 as an integer; range(2.0) does not, and a key would spell it apart from 2.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _pattern(validator: Any, pattern: str, instance: Any, _schema: Any):
    # Python's `$` also matches before a final line break, JSON Schema's (ECMA 262) at the end only.
    anchored = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    if validator.is_type(instance, "string") and not re.search(anchored, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _enum(_validator: Any, values: list, instance: Any, _schema: Any):
    # Python finds True == 1 and 2.0 == 2; a value must be one of the listed ones as they are spelt.
    if not any(value == instance and type(value) is type(instance) for value in values):
        yield jsonschema.ValidationError(f"{instance!r} is not one of {values!r}")


def _increasing(_validator: Any, wanted: bool, instance: Any, _schema: Any):
    # JSON Schema cannot say "each item above the one before", which cut points and bins must be:
    # the schema marks them x-increasing, so that the config, not a stage hours later, refuses them.
    numbers = isinstance(instance, list) and all(isinstance(v, (int, float)) for v in instance)
    if wanted and numbers and any(b <= a for a, b in zip(instance, instance[1:], strict=False)):
        yield jsonschema.ValidationError(f"{instance!r} is not strictly increasing")


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    validators={"pattern": _pattern, "enum": _enum, "x-increasing": _increasing},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def validate(instance: Any, schema: dict[str, Any], root: dict[str, Any], prefix: tuple = ()) -> None:
    """Check ``instance`` against ``schema`` (its $refs in ``root``); raise a LesionflowError naming
    the deepest offending key, ``prefix`` before the instance's own path."""
    resolver_schema = {**schema, "$defs": root.get("$defs", {})}
    validator = _Validator(resolver_schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        deepest = max(errors, key=lambda e: len(e.absolute_path))
        raise LesionflowError(_describe(deepest, prefix))
