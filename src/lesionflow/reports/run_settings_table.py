"""The settings that differ between runs, the HTML leaderboard's columns beside leaderboard.csv.

Must never drop a setting that differs between runs (but IGNORED_SETTINGS), nor import pandas: the
Snakefile computes these for the compare rule's parameters at every parse.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from lesionflow.pipeline.settings import RUN_SECTIONS

if TYPE_CHECKING:
    import pandas as pd

# Settings that never change a run's results, only where and how fast it runs (or, for tags, how
# the leaderboard lists it, which its status column already shows): as columns they would only
# hide the settings that explain a difference.
IGNORED_SETTINGS = (
    "resources.*",
    "tags",
    "infer.device",
    "train.device",
    "train.num_workers",
    "infer.batch_size",
)


def _json_text(value: Any) -> str:
    # sort_keys: two dicts with the same items must read, and compare, the same.
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def flat_settings(run: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved run's settings flattened to dotted keys (``train.learning_rate``,
    ``model.kwargs.channels``).

    Nested mappings are flattened (an empty one leaves no key); lists, and mappings inside lists,
    become compact JSON text so that they compare and display as one value; null becomes the text
    ``null`` so that it differs from a key that is missing. Other scalars are kept as they are.
    """
    flat: dict[str, Any] = {}
    for key, value in run.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{sub}": inner for sub, inner in flat_settings(value).items()})
        elif isinstance(value, list | tuple):
            flat[str(key)] = _json_text(list(value))
        elif value is None:
            flat[str(key)] = "null"
        else:
            flat[str(key)] = value
    return flat


def _comparable(value: Any) -> str:
    # Numbers compare by value (5 and 5.0 are one setting), apart from booleans (True is not 1);
    # NaN equals NaN here.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "NaN" if math.isnan(value) else repr(float(value))
    return _json_text(value)


def _is_ignored(key: str, ignore: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in ignore)


def _differs(key: str, flat: Iterable[Mapping[str, Any]]) -> bool:
    flat = list(flat)
    values = [settings[key] for settings in flat if key in settings]
    return len(values) < len(flat) or len({_comparable(value) for value in values}) > 1


def setting_order(key: str) -> tuple[int, str, str]:
    """Sort key of a dotted setting: top-level keys (``task``) first, then the run sections in the
    config's order (model, preprocess, train, ...), then unknown sections by name; by key within."""
    section, dot, _ = key.partition(".")
    if not dot:
        return (0, "", key)
    if section in RUN_SECTIONS:
        return (1 + RUN_SECTIONS.index(section), "", key)
    return (1 + len(RUN_SECTIONS), section, key)


def differing_settings(
    runs: Mapping[str, Mapping[str, Any]], ignore: Iterable[str] = IGNORED_SETTINGS
) -> dict[str, dict[str, Any]]:
    """The settings whose values are not identical across all ``runs`` (run name -> resolved run),
    as run name -> {dotted key: value}, runs in the given order.

    Every run has the same keys: the dotted keys (see :func:`flat_settings`) that differ, a key
    missing from some runs included (None there), ordered by :func:`setting_order`. Keys matching
    a pattern of ``ignore`` (fnmatch, e.g. ``resources.*``) are left out.
    """
    ignore = tuple(ignore)
    flat = {name: flat_settings(run) for name, run in runs.items()}
    keys = {key for settings in flat.values() for key in settings if not _is_ignored(key, ignore)}
    differing = [key for key in sorted(keys, key=setting_order) if _differs(key, flat.values())]
    return {name: {key: settings.get(key) for key in differing} for name, settings in flat.items()}


def run_groups(table: pd.DataFrame) -> pd.Series:
    """The group of each row: the ``group`` column where given, else (or where empty) the run name."""
    runs = table["run"].astype(str)
    if "group" not in table:
        return runs.rename("group")
    given = table["group"].notna() & (table["group"].astype(str) != "")
    return table["group"].where(given, runs).astype(str).rename("group")
