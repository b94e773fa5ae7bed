"""Tuning several lesion classes: each class's threshold, minimum area and presence threshold,
chosen on validation exactly as a binary run's are, from its own channel."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from lesionflow.data.lesion_classes import LesionClasses, check_channels
from lesionflow.evaluation.tune import ImageCounts, check_tune_settings, image_counts, tune_on_counts
from lesionflow.pipeline.errors import LesionflowError


def class_counts(
    probs: np.ndarray, reference: np.ndarray, settings: Mapping, classes: LesionClasses
) -> dict[str, ImageCounts]:
    """The tuning counts of one validation image, per class (its channel against its reference)."""
    probs = check_channels(probs, classes, "the probability map")
    reference = check_channels(reference, classes, "the reference")
    return {name: image_counts(probs[c], reference[c], settings) for c, name in enumerate(classes.names)}


def counts_by_class(
    items: Iterable[tuple[str, np.ndarray, np.ndarray]], cfg: Mapping, classes: LesionClasses
) -> dict[str, list[ImageCounts]]:
    """Each class's tuning counts of the validation ``(image_id, probabilities, reference)`` items,
    one image at a time (``cfg``: checked tune settings)."""
    counts: dict[str, list[ImageCounts]] = {name: [] for name in classes.names}
    for _, probs, reference in items:
        for name, image in class_counts(probs, reference, cfg, classes).items():
            counts[name].append(image)
    return counts


def lock_classes(
    counts: Mapping[str, list[ImageCounts]], cfg: Mapping
) -> tuple[dict[str, dict], pd.DataFrame]:
    """Each class's settings locked on its own counts, and one grid table with a ``class`` column."""
    locked, grids = {}, []
    for name, images in counts.items():
        try:
            locked[name], grid = tune_on_counts(images, cfg)
        except LesionflowError as error:
            raise LesionflowError(f"class {name}: {error}") from None
        locked[name]["class"] = name
        grids.append(grid.assign(**{"class": name}))
    return locked, pd.concat(grids, ignore_index=True)


def tune_classes(
    items: Iterable[tuple[str, np.ndarray, np.ndarray]], settings: Mapping, classes: LesionClasses
) -> tuple[dict[str, dict], pd.DataFrame]:
    """Lock each class's settings on the validation ``(image_id, probabilities, reference)`` items.

    Returns the locked settings by class name and one grid table with a ``class`` column. The
    classes are tuned independently; for mutually exclusive classes the one-class-per-pixel rule
    of :func:`lesionflow.evaluation.classes.predict_classes` applies after them.
    """
    cfg = check_tune_settings(settings)
    return lock_classes(counts_by_class(items, cfg, classes), cfg)
