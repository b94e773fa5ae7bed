"""Several lesion types at once: the classes a dataset marks, and one boolean channel per class.

A dataset marks its classes in one of three ways (the config's ``data.labels``):

- ``classes``: one label map per image, one value per class. Classes are mutually exclusive (a
  pixel has one class, or none), so a model learns them with one softmax over background and
  classes.
- ``mask_columns``: one binary mask per class, each in its own manifest column. Classes may
  overlap, so a model learns one sigmoid channel per class.
- ``regions`` (beside ``classes``): nested regions, each the union of some classes (a brain
  tumour's whole tumour = enhancing tumour, oedema and necrosis), learnt with one sigmoid channel
  per region (nnU-Net's region-based training) and evaluated as those unions.

Binary data (``data.labels`` null) is one channel, the lesion mask, exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lesionflow.io.masks import distinct_values
from lesionflow.pipeline.errors import LesionflowError

EXCLUSIVE = "exclusive"
OVERLAPPING = "overlapping"
REGIONS = "regions"
# A class name becomes a column and file name suffix (dice_pos_exudate, per_image_test_exudate.csv).
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# The manifest's own columns, which a class's mask column must not take.
MANIFEST_COLUMNS = ("image", "mask", "subject", "image_id", "mask_channel", "visit")
KEY = "data.labels"


@dataclass(frozen=True)
class LesionClasses:
    """The channels a model predicts and every metric is reported for, in order.

    ``values`` holds, per channel, the label values whose union it is (label maps); ``columns``,
    per channel, the manifest column of its mask (``mask_columns``); the other one is empty.
    ``label_values`` are every class's value, which a label map may hold beside 0.
    """

    kind: str
    names: tuple[str, ...]
    values: tuple[tuple[int, ...], ...] = ()
    columns: tuple[str, ...] = ()
    label_values: tuple[int, ...] = ()

    @property
    def record(self) -> dict[str, Any]:
        """The classes as JSON-ready data (``classes.json``; :func:`classes_from_record` reads it)."""
        return {
            "kind": self.kind,
            "names": list(self.names),
            "values": [list(channel) for channel in self.values],
            "columns": list(self.columns),
            "label_values": list(self.label_values),
        }

    @property
    def exclusive(self) -> bool:
        """Whether a pixel belongs to at most one channel (softmax), not several (sigmoid each)."""
        return self.kind == EXCLUSIVE

    def channels(self, label_map: np.ndarray) -> np.ndarray:
        """One boolean mask per channel, stacked first, from one image's label map.

        A value that belongs to no class is refused: it would silently count as background.
        """
        if self.kind == OVERLAPPING:
            raise LesionflowError(
                f"{KEY}.mask_columns: each class has a mask column of its own; there is no label map to split"
            )
        values = np.asarray(label_map)
        known = [0, *sorted(self.label_values)]
        unknown = np.setdiff1d(distinct_values(values), known)
        if unknown.size:
            raise LesionflowError(
                f"{KEY}.classes: the mask holds the value(s) {unknown.tolist()[:5]}, which no class has "
                f"(the classes' values are {known[1:]}; 0 is background)"
            )
        return np.stack([np.isin(values, channel) for channel in self.values])

    def stacked(self, masks: Mapping[str, np.ndarray]) -> np.ndarray:
        """One boolean mask per channel, stacked first, from one image's mask per class (by name)."""
        missing = [name for name in self.names if name not in masks]
        if missing:
            raise LesionflowError(f"{KEY}.mask_columns: no mask given for the class(es) {missing}")
        shapes = {name: np.shape(masks[name]) for name in self.names}
        if len(set(shapes.values())) > 1:
            raise LesionflowError(
                f"{KEY}.mask_columns: the class masks of one image differ in shape: {shapes}"
            )
        return np.stack([np.asarray(masks[name], dtype=bool) for name in self.names])


def check_channels(array: np.ndarray, classes: LesionClasses, what: str) -> np.ndarray:
    """``array`` with one channel per class first; refuse another number of channels, naming ``what``."""
    array = np.asarray(array)
    if array.ndim < 3 or array.shape[0] != len(classes.names):
        raise LesionflowError(
            f"{what} has shape {array.shape}: expected one channel per class first "
            f"({len(classes.names)}: {', '.join(classes.names)})"
        )
    return array


def classes_from_record(record: Mapping[str, Any]) -> LesionClasses:
    """The classes that :attr:`LesionClasses.record` wrote."""
    return LesionClasses(
        record["kind"],
        tuple(record["names"]),
        tuple(tuple(channel) for channel in record["values"]),
        tuple(record["columns"]),
        tuple(record["label_values"]),
    )


def lesion_classes(section: Mapping | None) -> LesionClasses | None:
    """The classes ``data.labels`` describes, checked; None for binary data (a null section).

    At least two channels: one class (or one region) is binary data, which has a path of its own.
    """
    if section is None:
        return None
    classes = _described(section)
    if len(classes.names) < 2:
        raise LesionflowError(
            f"config key '{KEY}' gives one {'region' if classes.kind == REGIONS else 'class'} "
            f"({classes.names[0]}): one lesion class is binary data; set {KEY} to null (with "
            "data.mask_threshold for a mask whose lesion value is not 1 or 255)"
        )
    return classes


def _described(section: object) -> LesionClasses:
    if not isinstance(section, Mapping):
        raise LesionflowError(f"config key '{KEY}' must be a mapping or null, got {section!r}")
    unknown = sorted(set(section) - {"classes", "mask_columns", "regions"})
    if unknown:
        raise LesionflowError(
            f"config key '{KEY}.{unknown[0]}' is not a key of {KEY} (classes, mask_columns, regions)"
        )
    classes, columns, regions = section.get("classes"), section.get("mask_columns"), section.get("regions")
    if (classes is None) == (columns is None):
        raise LesionflowError(
            f"config key '{KEY}' needs exactly one of classes (one label map per image) and "
            "mask_columns (one mask column per class)"
        )
    if columns is not None:
        if regions is not None:
            raise LesionflowError(
                f"config key '{KEY}.regions' needs classes (label values to unite), not mask_columns"
            )
        names, column_names = _columns(columns)
        return LesionClasses(OVERLAPPING, names, (), column_names)
    names, values = _classes(classes)
    if regions is None:
        return LesionClasses(EXCLUSIVE, names, tuple((v,) for v in values), (), values)
    region_names, unions = _regions(regions, dict(zip(names, values, strict=True)))
    return LesionClasses(REGIONS, region_names, unions, (), values)


def _named(section: object, key: str) -> dict:
    if not isinstance(section, Mapping) or not section:
        raise LesionflowError(f"config key '{key}' must map at least one class name to its value")
    for name in section:
        if not isinstance(name, str) or not NAME.match(name):
            raise LesionflowError(
                f"config key '{key}.{name}': a class name is lower-case letters, digits and _, "
                "starting with a letter (it names columns and files)"
            )
    return dict(section)


def _classes(section: object) -> tuple[tuple[str, ...], tuple[int, ...]]:
    classes = _named(section, f"{KEY}.classes")
    seen: dict[int, str] = {}
    for name, value in classes.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise LesionflowError(
                f"config key '{KEY}.classes.{name}' is {value!r}: a label value is an integer from 1 to "
                "65535 (0 is background)"
            )
        if value in seen:
            raise LesionflowError(
                f"config key '{KEY}.classes.{name}' has the value {value} of class '{seen[value]}': "
                "classes of a label map need values of their own"
            )
        seen[value] = name
    return tuple(classes), tuple(classes.values())


def _columns(section: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    columns = _named(section, f"{KEY}.mask_columns")
    seen: dict[str, str] = {}
    for name, column in columns.items():
        if not isinstance(column, str) or not column or column in MANIFEST_COLUMNS:
            raise LesionflowError(
                f"config key '{KEY}.mask_columns.{name}' is {column!r}: give the manifest column holding "
                f"this class's mask paths (not one of {', '.join(MANIFEST_COLUMNS)})"
            )
        if column in seen:
            raise LesionflowError(
                f"config key '{KEY}.mask_columns.{name}' names the column {column!r} of class "
                f"'{seen[column]}': each class needs a mask column of its own"
            )
        seen[column] = name
    return tuple(columns), tuple(columns.values())


def _regions(section: object, classes: dict[str, int]) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    regions = _named(section, f"{KEY}.regions")
    clash = sorted(set(regions) & set(classes))
    if clash:
        raise LesionflowError(
            f"config key '{KEY}.regions.{clash[0]}' is also a class name: name the union otherwise"
        )
    values = []
    for name, members in regions.items():
        if not isinstance(members, list) or not members or len(set(map(str, members))) != len(members):
            raise LesionflowError(
                f"config key '{KEY}.regions.{name}' must list the distinct classes it unites, got {members!r}"
            )
        unknown = [m for m in members if m not in classes]
        if unknown:
            raise LesionflowError(
                f"config key '{KEY}.regions.{name}' names {unknown[0]!r}, which is not one of "
                f"{KEY}.classes ({', '.join(classes)})"
            )
        values.append(tuple(sorted(classes[m] for m in members)))
    if len(set(values)) < len(values):
        raise LesionflowError(f"config key '{KEY}.regions': two regions unite the same classes")
    return tuple(regions), tuple(values)
