"""Named views onto keyed artifacts: results/runs/<name>/ links every artifact of one run.

A view never holds the only copy of anything: it is rebuilt from keyed artifacts at will.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lesionflow.artifacts import atomic_path, write_json


def link_artifact(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Hard-link ``source`` to ``destination`` (copy across file systems), replacing atomically."""
    with atomic_path(destination) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copy2(source, tmp)


def write_run_view(record: dict[str, Any], artifacts: dict[str, str], out_dir: str | Path) -> Path:
    """Link a run's artifacts into ``out_dir`` by file name and write its ``index.json``.

    ``record`` holds the run's name, keys and resolved settings; ``artifacts`` maps a label
    to the keyed path of each artifact.
    """
    out_dir = Path(out_dir)
    links = {}
    for label, source in artifacts.items():
        destination = out_dir / Path(source).name
        link_artifact(source, destination)
        links[label] = {"keyed": str(source), "view": str(destination)}
    index = out_dir / "index.json"
    write_json(index, {**record, "artifacts": links})
    return index
