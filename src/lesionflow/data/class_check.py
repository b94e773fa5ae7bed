"""The manifest check's rule for label maps (data.labels.classes): one value per lesion class.

A label map is checked like a binary mask for what it shares with one (it opens, it is laid out
as its image: a picture's size, a volume's shape and affine), then by its own rule: it is read as
stored, never cut at a threshold, so a lossy JPEG is refused and every value must be 0 or a
class's value. A value no class has would silently count as background.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from lesionflow.data.lesion_classes import KEY, LesionClasses
from lesionflow.data.picture_check import picture_mask_channels
from lesionflow.data.volume_check import volume_mask_problems
from lesionflow.io.geometry import Geometry
from lesionflow.io.label_maps import LOSSY_SUFFIXES, read_label_map
from lesionflow.io.masks import distinct_values
from lesionflow.io.nifti import NIFTI_SUFFIXES
from lesionflow.io.readers import file_suffix
from lesionflow.pipeline.errors import LesionflowError

# The image's layout a mask is compared with: a picture's (width, height), a volume's geometry.
Layout = tuple[int, int] | Geometry


def label_map_check(
    classes: LesionClasses, unreadable: Callable[[Path], str | None]
) -> Callable[[Path, Layout | None, int | None, int | None], list[str]]:
    """The manifest check's mask rule for label maps of ``classes``: ``check(file, layout, channel,
    threshold)`` gives what is wrong with one row's label map (empty when sound). ``unreadable``
    is the binary masks' first rule (the file exists, with a supported suffix); a label map takes
    no threshold."""

    def check(file: Path, layout: Layout | None, channel: int | None, threshold: int | None) -> list[str]:
        why = unreadable(file)
        return [why] if why else label_map_problems(file, layout, channel, classes)

    return check


def label_map_problems(
    file: Path, layout: Layout | None, channel: int | None, classes: LesionClasses
) -> list[str]:
    """What is wrong with a label map: lossy, unreadable, not laid out as its image, or holding a
    value that is neither background (0) nor one of the classes' values."""
    if file_suffix(file) in LOSSY_SUFFIXES:
        return [
            "is a JPEG, whose compression invents values between the labels: a label map must be "
            "lossless (PNG, TIFF, NIfTI or .npy)"
        ]
    if file_suffix(file) in NIFTI_SUFFIXES:
        distinct, problems = volume_mask_problems(file, layout if isinstance(layout, Geometry) else None)
        if distinct is None:
            return problems
    else:
        channels, _, problems = picture_mask_channels(file, layout if isinstance(layout, tuple) else None)
        if channels is None:
            return problems
        try:
            distinct = distinct_values(read_label_map(file, channel).array)
        except LesionflowError as error:
            return [*problems, str(error).removeprefix(f"label map {file} ")]
    return problems + _value_problems(np.asarray(distinct), classes)


def _value_problems(distinct: np.ndarray, classes: LesionClasses) -> list[str]:
    known = [0, *sorted(classes.label_values)]
    fractions = distinct[distinct != np.round(distinct)]
    if fractions.size:
        return [f"holds the value {float(fractions[0]):g}: labels are whole numbers"]
    unknown = np.setdiff1d(distinct, known)
    if not unknown.size:
        return []
    values = ", ".join(f"{value:g}" for value in unknown.tolist()[:5])
    return [
        f"holds the label value(s) {values}, which no class of {KEY}.classes has (the classes' values "
        f"are {', '.join(map(str, known[1:]))}; 0 is background)"
    ]
