"""The config checks of data.labels (several lesion classes): the classes themselves, the built-in
dataset's label maps, and what runs of several classes cannot do yet (each refusal names its key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lesionflow.data.lesion_classes import lesion_classes
from lesionflow.pipeline.errors import LesionflowError


def check_labels(
    data: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], split: Mapping, nnunet_export: Any
) -> None:
    """``data.labels`` checked (class names, values, regions), and the built-in dataset's label maps
    given the classes they hold."""
    lesion_classes(data["labels"])
    synthetic = data["synthetic"] if data["source"] == "synthetic" else {}
    if synthetic.get("haemorrhages") and synthetic["kind"] != "fundus":
        raise LesionflowError(
            f"config key 'data.synthetic.haemorrhages' applies to kind fundus, not {synthetic['kind']!r}"
        )
    if synthetic.get("haemorrhages") and (data["labels"] or {}).get("classes") is None:
        raise LesionflowError(
            "config key 'data.synthetic.haemorrhages' writes label maps (1 exudate, 2 haemorrhage): "
            "set data.labels.classes to {exudate: 1, haemorrhage: 2}"
        )
    if data["labels"] is not None:
        _check_class_runs(runs, split, nnunet_export)


def _check_class_runs(runs: Mapping[str, Mapping[str, Any]], split: Mapping, nnunet_export: Any) -> None:
    """Refuse, naming the key, what runs of several lesion classes cannot do yet."""
    for name, run in runs.items():
        if run["task"] != "segmentation":
            continue
        if run["source"] != "model":
            raise LesionflowError(
                f"config key 'runs.{name}.source' is {run['source']}: imported or averaged maps of several "
                "lesion classes (data.labels) are not read yet; train the run (source model)"
            )
        if run["model"]["presence_head"]:
            raise LesionflowError(
                f"config key 'runs.{name}.model.presence_head': a presence head is for one lesion class, "
                "and data.labels gives several; set it to false"
            )
    if split["folds"] is not None:
        raise LesionflowError(
            "config key 'split.folds': k-fold runs of several lesion classes (data.labels) are not "
            "pooled yet; set split.folds to null"
        )
    if nnunet_export is not None:
        raise LesionflowError(
            "config key 'nnunet_export': exporting several lesion classes (data.labels) as an nnU-Net "
            "dataset is not built yet; remove the section"
        )
