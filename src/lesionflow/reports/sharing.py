"""Paths as reports shared outside the lab show them: relative to the project's folder.

Must never change a path that lies outside the project: the user configured it so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def shareable_path(path: str | os.PathLike, elsewhere: str | os.PathLike | None = None) -> str:
    """``path`` relative to the current directory (the project's folder, where every job runs) when
    it lies inside it; else ``elsewhere`` when given, else ``path`` as it is."""
    absolute, here = Path(os.path.abspath(path)), Path.cwd()
    if absolute.is_relative_to(here):
        return absolute.relative_to(here).as_posix()
    return str(path) if elsewhere is None else Path(elsewhere).as_posix()


def shareable_record(value: Any) -> Any:
    """A JSON-ready ``value`` with every absolute path inside the project made relative to it."""
    if isinstance(value, dict):
        return {key: shareable_record(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shareable_record(item) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        return shareable_path(value)
    return value
