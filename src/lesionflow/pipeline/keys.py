"""Content keys: every artifact's key is the hash of everything that decides it.

A key never depends on a run's name, an absolute path, the time, the device or the number of
workers; what goes into each stage's key is decided in lesionflow.pipeline.plan.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEY_LENGTH = 12


def _canonical(value: Any) -> Any:
    # One spelling per value: 1 and 1.0 must hash alike, dict order must not matter.
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(float(value))
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    raise TypeError(f"cannot put {type(value).__name__} into a content key")


def digest(value: Any, length: int = KEY_LENGTH) -> str:
    """Short blake2b hex digest of the canonical JSON of ``value``."""
    text = json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]
