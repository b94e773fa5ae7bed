"""Which config a project folder's leaderboard and run views belong to.

Keyed artifacts (results/<stage>/<key>/) can be shared by any number of configs: a key names
exactly what made its files. The leaderboard (results/compare/) and the run views (results/runs/)
are not keyed: a second config run in the same folder would overwrite the first one's. So the
first config file that runs in a folder owns them, and a run with another config file is refused
before any job starts. Dry runs write nothing and are never refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from lesionflow.pipeline.artifacts import write_json
from lesionflow.pipeline.errors import LesionflowError

OWNER_FILE = Path(".lesionflow") / "results-owner.json"


def config_names(configfiles: Sequence[str | os.PathLike], workdir: Path) -> list[str]:
    """The config files as a project names them: relative to ``workdir`` when inside it (so a moved
    project keeps its owner, and no absolute path of the machine is written), else absolute."""
    names = []
    for file in configfiles:
        path = (workdir / file).resolve()
        try:
            names.append(path.relative_to(workdir.resolve()).as_posix())
        except ValueError:
            names.append(str(path))
    return sorted(set(names))


def recorded_owner(workdir: Path) -> list[str] | None:
    """The config files that own ``workdir``'s leaderboard and run views, or None when none does."""
    try:
        record = json.loads((workdir / OWNER_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise LesionflowError(
            f"{workdir / OWNER_FILE} cannot be read ({type(err).__name__}); delete it to let this "
            "config own the folder's leaderboard and run views"
        ) from None
    return list(record.get("configfiles", []))


def _spelled(names: list[str]) -> str:
    return " + ".join(names) if names else "the command line's config (no config file)"


def claim_results(workdir: Path, configfiles: Sequence[str | os.PathLike]) -> None:
    """Record that ``configfiles`` own ``workdir``'s leaderboard and run views, or raise a
    LesionflowError when other config files already do."""
    mine, owner = config_names(configfiles, workdir), recorded_owner(workdir)
    if owner is None:
        write_json(workdir / OWNER_FILE, {"configfiles": mine})
    elif owner != mine:
        raise LesionflowError(
            f"this folder's leaderboard and run views (results/compare/, results/runs/) belong to "
            f"{_spelled(owner)}; running {_spelled(mine)} here would overwrite them: run it in a folder "
            f"of its own (snakemake --directory DIR), or delete {OWNER_FILE.as_posix()} to hand this "
            "folder over"
        )
