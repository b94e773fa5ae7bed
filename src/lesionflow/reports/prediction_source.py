"""What a report states about where a run's predictions came from: imported from another tool's
folder (``source: external``) or averaged over other runs (``source: ensemble``), as the record
``test_infer.json`` says, rather than a model lesionflow trained.

Must never describe training lesionflow did not do, nor present hard masks as probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lesionflow.pipeline.artifacts import read_json
from lesionflow.pipeline.errors import LesionflowError

KINDS = ("probabilities", "masks")
HARD_MASKS_TEXT = (
    "**These predictions are hard masks, not probabilities.** Thresholds cannot be tuned on hard "
    "masks: only the minimum lesion area was tuned on validation, and every presence score is 0 or 1 "
    "(so presence ROC-AUC and average precision rest on a single cut point)."
)


def read_predictions_record(path: str | os.PathLike) -> dict[str, Any]:
    """The import record of an external run (the infer stage's ``test_infer.json``), checked: source
    external, the folder read, kind probabilities or masks, notes a list of text."""
    record = read_json(path)
    if not isinstance(record, dict):
        raise LesionflowError(
            f"{path}: expected an import record (a JSON object), got {type(record).__name__}"
        )
    if record.get("source") == "ensemble":
        members = record.get("members")
        if not isinstance(members, list) or len(members) < 2:
            raise LesionflowError(f"{path}: members is {members!r}; expected the averaged runs' folders")
        record = {**record, "folder": f"the mean of {len(members)} runs ({', '.join(members)})"}
    elif record.get("source") != "external":
        raise LesionflowError(
            f"{path}: source is {record.get('source')!r}; expected 'external' or 'ensemble'"
        )
    if not isinstance(record.get("folder"), str) or not record["folder"]:
        raise LesionflowError(f"{path}: folder is {record.get('folder')!r}; expected the folder imported")
    if record.get("kind") not in KINDS:
        raise LesionflowError(f"{path}: kind is {record.get('kind')!r}; expected one of {', '.join(KINDS)}")
    notes = record.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
        raise LesionflowError(f"{path}: notes is {notes!r}; expected a list of text")
    return record


def no_training_text(record: Mapping[str, Any]) -> str:
    """The one sentence that stands for an imported run's training curves."""
    if record["source"] == "ensemble":
        return f"Maps averaged from {record['folder']}: no training of its own; see its members' curves."
    return (
        f"Predictions imported from {record['folder']} ({record['kind']}): no training in lesionflow; "
        "the epoch curves are those of the tool that made them."
    )


def source_text(record: Mapping[str, Any]) -> str:
    """Markdown for the top of a report on an imported run: where its predictions came from, the
    hard-mask warning when they are masks, and the import's notes."""
    if record["source"] == "ensemble":
        lines = [
            f"**Ensemble** (`source: ensemble`): its maps are {record['folder']}, averaged image by "
            "image; it trained no model of its own."
        ]
    else:
        lines = [
            f"**Imported predictions** (`source: external`): read from `{record['folder']}` "
            f"({record['kind']}); lesionflow trained no model for this run."
        ]
    if record["kind"] == "masks":
        lines.append(f"> {HARD_MASKS_TEXT}")
    lines += [f"- {note}" for note in record.get("notes", [])]
    return "\n\n".join(lines)
