"""The one check a stage makes of the settings it receives: the section is there and complete.

Never fills a default: defaults live only in the config schema, and every job receives complete
settings from the plan (code that builds a section by hand uses config.complete_run_section).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lesionflow.pipeline.errors import LesionflowError

# The sections of a run, in the config's order (jobs read them here, never from the schema).
RUN_SECTIONS = ("model", "preprocess", "train", "infer", "tune", "evaluate", "analyse", "resources")


def complete_section(settings: Mapping[str, Any], section: str, keys: Iterable[str]) -> dict[str, Any]:
    """``settings[section]``, checked to be a mapping that holds every one of ``keys``."""
    values = settings.get(section)
    if not isinstance(values, Mapping):
        raise LesionflowError(f"settings: expected a section '{section}', got {values!r}")
    missing = [f"{section}.{key}" for key in keys if key not in values]
    if missing:
        raise LesionflowError(
            f"settings: missing {', '.join(missing)}; a stage takes complete settings "
            "(lesionflow.pipeline.config.complete_run_section fills the schema's defaults)"
        )
    return dict(values)
