"""Named views onto keyed artifacts: results/runs/<name>/ holds a copy of every artifact of one run.

A view never holds the only copy of anything: it is rebuilt from keyed artifacts at will. Its JSON
records name files relative to the project, and its tables and records show ids as the run's
reports do (pseudonymised with analyse.pseudonymise); never a metric changed.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from lesionflow.pipeline.artifacts import atomic_path, read_json, write_csv, write_json, write_text
from lesionflow.reports.pseudonyms import ReportIds, report_ids
from lesionflow.reports.sharing import shareable_record


def copy_artifact(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy ``source`` to ``destination`` atomically, with a fresh modification time.

    Not a hard link: Snakemake touches a job's outputs when it finishes, and touching a hard
    link would touch the keyed input too, making it look newer than the view (and every view
    of every run that shares it out of date).
    """
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)


def shared_artifact(source: str | os.PathLike, destination: str | os.PathLike, ids: ReportIds) -> None:
    """Write the view's copy of ``source``: a JSON record with paths relative to the project and ids
    shown by ``ids``, a table with its id columns shown by ``ids``, any other file as it is."""
    suffix = Path(source).suffix
    if suffix == ".json":
        write_json(destination, ids.record(shareable_record(read_json(source))))
    elif suffix == ".csv" and ids.pseudonymised:
        # Every cell read and written as text: only the id columns change, each number keeps its digits.
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
        write_csv(ids.table(table), destination)
    else:
        copy_artifact(source, destination)


def write_run_view(record: dict[str, Any], artifacts: dict[str, str], out_dir: str | Path) -> Path:
    """Copy a run's artifacts into ``out_dir`` by file name (figures into ``figures/``) and index them.

    ``record`` holds the run's name, keys and resolved settings; ``artifacts`` maps a label
    to the keyed path of each artifact. Records and tables are shared as :func:`shared_artifact`
    writes them; with analyse.pseudonymise, the salt comes from the environment (see pseudonyms).
    """
    out_dir = Path(out_dir)
    settings = record.get("settings") or {}
    ids = report_ids(bool((settings.get("analyse") or {}).get("pseudonymise")))
    links = {}
    for label, source in artifacts.items():
        source_path = Path(source)
        # Figures keep their own folder, so the report can pick them up as one directory.
        folder = out_dir / "figures" if source_path.parent.name == "figures" else out_dir
        destination = folder / source_path.name
        shared_artifact(source, destination, ids)
        links[label] = {"keyed": str(source), "view": str(destination)}
    if "training_report" not in artifacts and settings.get("source") in ("external", "ensemble"):
        # The view's training report of a run lesionflow never trained says so, and where its maps came from.
        page = out_dir / "training_report.html"
        origin = (settings.get("external") or {}).get("predictions") or ", ".join(
            (settings.get("ensemble") or {}).get("members", [])
        )
        text = f"No training of its own: run {record.get('run')!r} takes its maps from {origin}."
        write_text(page, f"<!DOCTYPE html><html><body><p>{html.escape(text)}</p></body></html>\n")
        links["training_report"] = {"keyed": None, "view": str(page)}
    index = out_dir / "index.json"
    write_json(index, {**record, "artifacts": links})
    return index
