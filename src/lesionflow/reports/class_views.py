"""The analysis notebook's views of a run: one for a binary run, one per lesion class otherwise.

Each view holds a class's summary sections (shaped as a binary run's), selects its rows of the
tables that have a ``class`` column, and names its channel of the maps, the locked settings and
the class stacks. The notebook runs every section once per view, so each class is reported with
the panels a binary run gets; a figure file holds every class's panel, one below the other
(:func:`stacked_figure`), in the class's colour. A binary run has one view and the figures it
always had. Never computes a metric: every number comes from the evaluate stage's summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lesionflow.data.class_masks import load_class_masks
from lesionflow.data.lesion_classes import LesionClasses
from lesionflow.evaluation.artifact_names import is_class_summary
from lesionflow.evaluation.classes import predict_classes
from lesionflow.io.readers import read_image
from lesionflow.reports.labels import format_value

CLASS_COLUMN = "class"
# One colour per class, in order (matplotlib's tab10 without its green and red, which the
# example panels use for the reference and the prediction).
CLASS_COLOURS = ("#ff7f0e", "#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
# The metrics of the per-class table, in the order a reader looks for them.
TABLE_METRICS = (
    "dice_pos", "iou_pos", "lesion_sensitivity", "lesion_precision", "lesion_f1",
    "fp_lesions_per_empty_image", "false_positive_rate_empty", "presence_roc_auc", "presence_ap",
)  # fmt: skip


@dataclass(frozen=True)
class ClassView:
    """One class of a run (``name`` '' and ``channel`` None for a binary run's one view)."""

    name: str
    channel: int | None
    test: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)
    tiles: dict = field(default_factory=dict)

    @property
    def heading(self) -> str:
        """The Markdown line that opens the view's part of a section ('' for a binary run)."""
        return f"### Class: {self.name}" if self.name else ""

    @property
    def colour(self) -> str:
        """The class's colour in every figure."""
        return CLASS_COLOURS[(self.channel or 0) % len(CLASS_COLOURS)]

    def rows(self, table: pd.DataFrame) -> pd.DataFrame:
        """The view's rows of a table (all of a binary run's), without the ``class`` column."""
        if not self.name or CLASS_COLUMN not in table.columns:
            return table
        return table[table[CLASS_COLUMN] == self.name].drop(columns=CLASS_COLUMN).reset_index(drop=True)

    def locked(self, locked: Mapping[str, Any]) -> Mapping[str, Any]:
        """The view's locked settings of ``locked.json``."""
        return locked["per_class"][self.name] if self.name else locked

    def channel_of(self, array: np.ndarray) -> np.ndarray:
        """The view's channel of a map or class stack (a binary run's whole map)."""
        return array if self.channel is None else np.asarray(array)[self.channel]


def class_views(summary: Mapping[str, Any], tiles: Mapping[str, Any] | None = None) -> list[ClassView]:
    """The views of a run from its evaluate ``summary`` (and ``summary_tiles``)."""
    tiles = tiles or {}
    if not is_class_summary(summary):
        return [ClassView("", None, summary.get("test", {}), summary.get("val", {}), tiles.get("test", {}))]
    return [
        ClassView(
            name, c,
            summary["test"]["classes"][name], summary["val"]["classes"][name],
            tiles.get("test", {}).get("classes", {}).get(name, {}),
        )
        for c, name in enumerate(summary["classes"])
    ]  # fmt: skip


def stacked_figure(figures: Sequence[Figure], views: Sequence[ClassView]) -> Figure:
    """One figure of every view's figure, one below the other, each under its class's name in
    its colour; a single view's figure is returned as it is."""
    if len(figures) == 1:
        return figures[0]
    pictures = [_rendered(figure) for figure in figures]
    width = max(picture.shape[1] for picture in pictures)
    heights = [picture.shape[0] for picture in pictures]
    dpi = 100
    stacked = Figure(
        figsize=(width / dpi, (sum(heights) + 40 * len(heights)) / dpi), dpi=dpi, layout="constrained"
    )
    axes = stacked.subplots(len(pictures), 1, gridspec_kw={"height_ratios": heights})
    for ax, picture, view in zip(np.atleast_1d(axes), pictures, views, strict=True):
        ax.imshow(picture)
        ax.set_title(view.name, color=view.colour, fontweight="bold", loc="left")
        ax.set_axis_off()
    return stacked


def _rendered(figure: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())


def class_table(summary_section: Mapping[str, Any]) -> pd.DataFrame:
    """Per-class test metrics of a run of several classes, each ``value [low, high] (n)``, with the
    macro mean and the number of classes behind it in the last column."""
    columns: dict[str, list[str]] = {}
    for name, section in summary_section["classes"].items():
        columns[name] = [_cell(section, metric) for metric in TABLE_METRICS]
    macro = summary_section["macro"]
    counts = [macro.get(f"{metric}_n_classes", 0) for metric in TABLE_METRICS]
    columns["macro mean"] = [
        f"{_cell(macro, metric)} over {k} class{'' if k == 1 else 'es'}"
        for metric, k in zip(TABLE_METRICS, counts, strict=True)
    ]
    return pd.DataFrame(columns, index=pd.Index(TABLE_METRICS, name="metric"))


def _cell(section: Mapping[str, Any], metric: str) -> str:
    value = section.get(metric)
    if value is None:
        return f"undefined (n = {section.get(f'{metric}_n', 0)})"
    low, high = section.get(f"{metric}_ci_low"), section.get(f"{metric}_ci_high")
    interval = "" if low is None or high is None else f" [{format_value(low)}, {format_value(high)}]"
    return f"{format_value(value)}{interval} (n = {section.get(f'{metric}_n')})"


def plot_class_forest(summary_section: Mapping[str, Any], metric: str = "dice_pos") -> Figure:
    """Each class's ``metric`` with its interval, and the macro mean below, on one axis."""
    names = list(summary_section["classes"])
    sections = [summary_section["classes"][name] for name in names] + [summary_section["macro"]]
    labels = names + ["macro mean"]
    colours = [CLASS_COLOURS[c % len(CLASS_COLOURS)] for c in range(len(names))] + ["black"]
    fig = Figure(figsize=(6.5, 0.6 * len(labels) + 1.2), layout="constrained")
    ax = fig.subplots()
    for row, (section, colour) in enumerate(zip(sections, colours, strict=True)):
        value = section.get(metric)
        if value is None:
            ax.text(0.5, row, "undefined", va="center", ha="center", color=colour)
            continue
        low, high = section.get(f"{metric}_ci_low", value), section.get(f"{metric}_ci_high", value)
        ax.errorbar(value, row, xerr=[[value - low], [high - value]], fmt="o", color=colour, capsize=4)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"test {metric} (95 % interval, bootstrap over subjects)")
    ax.set_title(f"{metric} per class")
    return fig


def plot_confusion(confusion: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Figure:
    """The pixel and lesion confusion between classes as two heat maps, each row (reference class)
    as fractions of its own total, with the counts written in."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    for ax, kind in zip(fig.subplots(1, 2), ("pixels", "lesions"), strict=True):
        table = pd.DataFrame(confusion[kind]).T
        counts = table.to_numpy(dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = np.where(totals > 0, counts / totals, np.nan)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(counts):
            # White on the darkest blues, where black would not be read.
            colour = "white" if np.nan_to_num(shares[i, j]) > 0.6 else "black"
            ax.text(j, i, f"{int(count)}", ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(len(table.columns)), table.columns, rotation=30)
        ax.set_yticks(range(len(table.index)), table.index)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"{kind}: share of each reference row")
    return fig


def class_overlay(stack: np.ndarray) -> np.ndarray:
    """An RGBA picture of a ``(C, H, W)`` class stack, each class in its colour (the later class
    on top where classes overlap)."""
    rgba = np.zeros((*stack.shape[1:], 4), dtype=np.float32)
    for c, channel in enumerate(np.asarray(stack, dtype=bool)):
        colour = CLASS_COLOURS[c % len(CLASS_COLOURS)]
        rgba[channel] = (*(int(colour[k : k + 2], 16) / 255 for k in (1, 3, 5)), 0.7)
    return rgba


def plot_class_examples(
    ids: Sequence[str],
    manifest: pd.DataFrame,
    probs: Mapping[str, np.ndarray],
    locked: Mapping[str, Any],
    classes: LesionClasses,
) -> Figure:
    """One row per image: the image, its reference classes and its locked prediction (one class
    per pixel when the classes are exclusive, as evaluate scores it), each class in its colour."""
    rows = manifest.set_index("image_id", drop=False)
    fig = Figure(figsize=(10, 3.3 * max(1, len(ids))), layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(1, len(ids)), 3))
    for ax_row, image_id in zip(axes, ids, strict=False):
        image = read_image(rows.loc[image_id, "image"]).array
        picture = np.clip(np.moveaxis(image, 0, -1), 0, 1) if image.shape[0] == 3 else image[0]
        predicted = predict_classes(
            np.asarray(probs[image_id], dtype=np.float32), locked["per_class"], classes
        )
        reference = load_class_masks(rows.loc[image_id].to_dict())
        for ax, overlay, title in zip(
            ax_row,
            (None, reference, predicted.masks),
            (image_id, "reference", "locked prediction"),
            strict=True,
        ):
            ax.imshow(picture, cmap=None if picture.ndim == 3 else "gray")
            if overlay is not None:
                ax.imshow(class_overlay(overlay))
            ax.set_title(title)
            ax.set_axis_off()
    if not ids:
        axes[0, 0].text(0.5, 0.5, "no images", ha="center")
    handles = [
        Patch(color=CLASS_COLOURS[c % len(CLASS_COLOURS)], label=name) for c, name in enumerate(classes.names)
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return fig
