"""Image and subject ids as reports shared outside the lab show them: a stable salted hash.

Must never write the salt, or anything that maps a pseudonym back to its id, into an artifact.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lesionflow.pipeline.errors import LesionflowError

# The salt comes from the environment, never from the config: a config travels with the project
# (and its settings are copied into run views and provenance records), and with a known salt the
# pseudonyms of a small id space (0000 to 9999) are undone by hashing every candidate.
SALT_VARIABLE = "LESIONFLOW_PSEUDONYM_SALT"
# Shorter salts can be guessed along with the ids.
MIN_SALT_LENGTH = 16
# The columns (and JSON keys) that hold an id, and the prefix of each one's pseudonyms.
ID_PREFIXES = {"image_id": "img-", "source_image_id": "img-", "subject": "sub-"}
# 10 hex digits: 2**40 values, so a collision among a dataset's few thousand ids is negligible.
DIGITS = 10


def pseudonym(value: str, salt: str, prefix: str) -> str:
    """``prefix`` and the first DIGITS hex digits of sha256(salt, value): the same for the same id,
    salt and prefix in every stage and every run, so pseudonymised tables still join."""
    digest = hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()
    return f"{prefix}{digest[:DIGITS]}"


@dataclass(frozen=True)
class ReportIds:
    """How a report shows ids: as they are (no salt), or pseudonymised with ``salt``."""

    salt: str | None = None

    @property
    def pseudonymised(self) -> bool:
        """Whether ids are shown as pseudonyms."""
        return self.salt is not None

    def shown(self, value: Any, column: str = "image_id") -> Any:
        """``value`` of the id column ``column`` as the report shows it (missing values stay missing)."""
        if self.salt is None or value is None or value == "" or (isinstance(value, float) and pd.isna(value)):
            return value
        return pseudonym(str(value), self.salt, ID_PREFIXES[column])

    def table(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with every id column (ID_PREFIXES) shown; other columns as they are."""
        if self.salt is None:
            return frame
        columns = [column for column in ID_PREFIXES if column in frame.columns]
        return frame.assign(**{c: frame[c].map(lambda v, c=c: self.shown(v, c)) for c in columns})

    def keyed(self, by_id: Mapping[str, Any]) -> Mapping[str, Any]:
        """``by_id`` (e.g. an npz of maps keyed by image id) looked up by shown ids; read lazily."""
        return by_id if self.salt is None else _ShownKeys(by_id, self)

    def record(self, value: Any) -> Any:
        """A JSON-ready ``value`` with every id shown: the values of id keys (ID_PREFIXES), and, in a
        mapping that holds an id, no file paths (files are named after the patients' ids or files)."""
        if self.salt is None:
            return value
        if isinstance(value, list):
            return [self.record(item) for item in value]
        if not isinstance(value, dict):
            return value
        holds_id = any(key in ID_PREFIXES for key in value)
        shown = {}
        for key, item in value.items():
            if key in ID_PREFIXES:
                shown[key] = (
                    [self.shown(v, key) for v in item] if isinstance(item, list) else self.shown(item, key)
                )
            elif not (holds_id and _names_file(item)):
                shown[key] = self.record(item)
        return shown


class _ShownKeys(Mapping[str, Any]):
    """A mapping keyed by ids, read through the pseudonyms of its keys."""

    def __init__(self, by_id: Mapping[str, Any], ids: ReportIds) -> None:
        self._by_id = by_id
        self._ids = {ids.shown(key): key for key in by_id}

    def __getitem__(self, shown: str) -> Any:
        return self._by_id[self._ids[shown]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def _names_file(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or "\\" in value)


def report_ids(pseudonymise: bool, environ: Mapping[str, str] = os.environ) -> ReportIds:
    """The ids a report shows: pseudonymised with the salt in ``environ[SALT_VARIABLE]`` when
    ``pseudonymise`` (analyse.pseudonymise), else as they are. Raises when the salt is unset or short."""
    if not pseudonymise:
        return ReportIds()
    salt = environ.get(SALT_VARIABLE, "")
    if len(salt) < MIN_SALT_LENGTH:
        problem = "is not set" if not salt else f"has {len(salt)} characters, fewer than {MIN_SALT_LENGTH}"
        raise LesionflowError(
            f"config key 'analyse.pseudonymise' is true but the environment variable {SALT_VARIABLE} "
            f"{problem}: set it to a long random secret, the same for every report that must join, e.g. "
            f"export {SALT_VARIABLE}=$(python -c 'import secrets; print(secrets.token_hex(16))')"
        )
    return ReportIds(salt)
