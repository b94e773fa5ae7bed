"""Example-image figures: test images with reference, probability map and locked prediction.

Must never choose the images (the caller does) nor change a prediction: the locked post-processing stands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lesionflow.data.class_masks import load_class_masks
from lesionflow.data.geometry import resize_image
from lesionflow.data.manifest import load_manifest_mask
from lesionflow.evaluation.postprocess import apply_locked
from lesionflow.io.readers import read_image
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.labels import format_value
from lesionflow.reports.slices import Panel, cut, focus_voxel, planes, worst_panels

# Longest side, in pixels, of the pictures in example figures: enough for a 4-panel row.
DISPLAY_SIZE = 768


class Examples(NamedTuple):
    """What :func:`load_examples` returns, in the order :func:`plot_examples` takes it."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    probs: list[np.ndarray]
    preds: list[np.ndarray]
    spacings: list[tuple[float, ...]]


def load_examples(
    ids: Sequence[str],
    manifest: pd.DataFrame,
    probs: Mapping[str, np.ndarray],
    locked: Mapping[str, Any],
    channel: int | None = None,
) -> Examples:
    """Images, reference masks, probability maps, locked post-processed predictions and voxel
    spacings (mm; 1.0 for pictures) of ids.

    The prediction is made at full resolution, then all four are reduced to at most
    DISPLAY_SIZE pixels a side (see :func:`for_display`): a figure of a few 4288 x 2848
    photographs would otherwise take gigabytes. Images are read one at a time, so only the
    reduced examples are held. ``channel`` picks one lesion class of a run of several (its map
    channel and class mask; ``locked`` is then that class's).
    """
    rows = manifest.set_index("image_id", drop=False)
    loaded = Examples([], [], [], [], [])
    for image_id in ids:
        if image_id not in rows.index:
            raise LesionflowError(f"manifest: no row for test image id {image_id!r}")
        if image_id not in probs:
            raise LesionflowError(f"test probabilities: no map for image id {image_id!r}")
        row = rows.loc[image_id]
        prob = np.asarray(probs[image_id], dtype=np.float32)
        mask = load_manifest_mask(row) if channel is None else load_class_masks(row)[channel]
        prob = prob if channel is None else prob[channel]
        image, geometry = read_image(row["image"])
        shown = for_display(image, mask, prob, apply_locked(prob, locked)[0])
        for kept, value in zip(loaded, (*shown, geometry.spacing), strict=True):
            kept.append(value)
    return loaded


def for_display(
    image: np.ndarray, mask: np.ndarray, prob: np.ndarray, pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image, masks and map reduced to at most DISPLAY_SIZE pixels a side for a figure.

    The image and the probability map are area-averaged; a display pixel shows lesion when any
    pixel under it is lesion, so a few-pixel exudate stays visible. Smaller inputs are returned
    as they are.
    """
    scale = min(1.0, DISPLAY_SIZE / max(mask.shape))
    if scale == 1:
        return image, mask, prob, pred

    def any_lesion(binary: np.ndarray) -> np.ndarray:
        return resize_image(binary[None].astype(np.float32), scale)[0] > 0

    return resize_image(image, scale), any_lesion(mask), resize_image(prob[None], scale)[0], any_lesion(pred)


def _is_colour(image: np.ndarray) -> bool:
    # Three channels in [0, 1] are a colour picture; any other image (MR or CT intensities, one
    # or several sequences) is shown as its first channel in grey.
    return image.shape[0] == 3 and float(image.min()) >= 0 and float(image.max()) <= 1


def _display_image(image: np.ndarray, colour: bool) -> np.ndarray:
    # (C, H, W) -> what imshow takes: colour as (H, W, 3), anything else as its first channel.
    if colour:
        return np.clip(np.moveaxis(image, 0, -1), 0, 1)
    return image[0]


def _overlay(mask: np.ndarray, colour: tuple[float, float, float], alpha: float = 0.5) -> np.ndarray:
    rgba = np.zeros((*mask.shape, 4), dtype=np.float32)
    rgba[mask] = (*colour, alpha)
    return rgba


def example_panels(
    mask: np.ndarray, prob: np.ndarray, pred: np.ndarray, spacing: Sequence[float], worst_slice: bool
) -> list[tuple[Panel, str]]:
    """The panels that show one example, each with its row label.

    A picture is one panel, itself (label ''). A volume shows its axial, coronal and sagittal
    planes through :func:`slices.focus_voxel` and, with ``worst_slice``, then the axial slice
    with the most wrong voxels, labelled with their count.
    """
    shown = [(panel, panel.label) for panel in planes(mask.shape, spacing, focus_voxel(mask, prob))]
    worst = worst_panels(mask, pred, spacing) if worst_slice else []
    return shown + [
        (panel, f"worst {panel.label}: {np.count_nonzero(cut(mask, panel) != cut(pred, panel))} voxels wrong")
        for panel in worst
    ]


def _image_style(image: np.ndarray) -> dict[str, Any]:
    # imshow's colour map and window for the image: none for a colour picture. Grey images
    # share one window over the whole volume, so that its planes compare; for a picture it is
    # the autoscale imshow would pick.
    if _is_colour(image):
        return {}
    return {"cmap": "gray", "vmin": float(image[0].min()), "vmax": float(image[0].max())}


def _draw_row(
    axes: Sequence[Axes],
    image: np.ndarray,
    mask: np.ndarray,
    prob: np.ndarray,
    pred: np.ndarray,
    panel: Panel,
    image_style: Mapping[str, Any],
) -> None:
    shown = _display_image(cut(image, panel), colour=not image_style)  # no style: a colour picture
    plane_mask, aspect = cut(mask, panel), panel.aspect
    first, second, third, fourth = axes
    first.imshow(shown, aspect=aspect, **image_style)
    second.imshow(shown, aspect=aspect, **image_style)
    second.imshow(_overlay(plane_mask, (0.0, 1.0, 0.0)), aspect=aspect)
    third.imshow(cut(prob, panel), vmin=0, vmax=1, cmap="magma", aspect=aspect)
    fourth.imshow(shown, aspect=aspect, **image_style)
    fourth.imshow(_overlay(cut(pred, panel), (1.0, 0.0, 0.0)), aspect=aspect)
    if plane_mask.any() and not plane_mask.all():  # contour of a constant mask is undefined
        fourth.contour(plane_mask, levels=[0.5], colors="lime", linewidths=0.8)


def plot_examples(
    ids: Sequence[str],
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    probs: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    spacings: Sequence[Sequence[float]] | None = None,
    titles: Sequence[str] | None = None,
    *,
    worst_slice: bool = False,
) -> Figure:
    """Grid with one row per panel: image, image + reference (green), probability, prediction (red).

    The prediction panel also outlines the reference in green, so misses and false positives show.
    A picture is one row; a volume is three, its axial, coronal and sagittal planes through its
    largest reference lesion (else its most probable voxel), plus its worst axial slice with
    ``worst_slice`` (see :func:`example_panels`). ``spacings`` (mm per voxel) set each panel's
    aspect; None means square pixels.
    """
    titles = list(ids) if titles is None else list(titles)
    if not ids:
        # An empty group still gets a figure that says so, rather than a blank grid.
        fig = Figure(figsize=(6, 1.2), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no images in this group", ha="center", va="center")
        ax.set_axis_off()
        return fig
    spacings = [(1.0,) * mask.ndim for mask in masks] if spacings is None else list(spacings)
    cases = list(zip(images, masks, probs, preds, spacings, titles, strict=True))
    shown = [
        example_panels(mask, prob, pred, spacing, worst_slice) for _, mask, prob, pred, spacing, _ in cases
    ]
    n_rows = sum(map(len, shown))
    fig = Figure(figsize=(12, 3.2 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, 4, squeeze=False)
    headers = ("image", "image + reference", "probability", "prediction (locked)")
    for ax, header in zip(axes[0], headers, strict=True):
        ax.set_title(header)
    rows = iter(axes)
    for (image, mask, prob, pred, _, title), panels in zip(cases, shown, strict=True):
        image_style = _image_style(image)
        for number, (panel, label) in enumerate(panels):
            row = next(rows)
            _draw_row(row, image, mask, prob, pred, panel, image_style)
            # The case's title heads its first row; a picture's row says nothing more.
            text = "\n".join(part for part in (title if number == 0 else "", label) if part)
            row[0].set_ylabel(text, fontsize="small")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _predicted(pixels: int, volume: float | None) -> str:
    # None: a picture, in pixels; NaN: a volume without a physical size, in voxels only.
    if volume is None:
        return f"{pixels} px predicted"
    if np.isnan(volume):
        return f"{pixels} voxels predicted"
    return f"{pixels} voxels ({format_value(volume, 2)} mL) predicted"


def example_titles(label: str, rows: pd.DataFrame) -> list[str]:
    """One title per row of a per-image table: 'Worst: 0042, Dice 0.123, 450 px predicted'.

    Where the table has ``pred_volume_ml`` (volumes, see data_report.with_lesion_volume) the
    prediction reads '450 voxels (1.23 mL) predicted', or '450 voxels predicted' where the volume
    is NaN (no physical size).
    """
    volumes = rows["pred_volume_ml"] if "pred_volume_ml" in rows.columns else [None] * len(rows)
    cells = zip(rows["image_id"], rows["dice"], rows["pred_pixels"], volumes, strict=True)
    return [
        f"{label}: {image_id}, Dice {format_value(dice, 3)}, {_predicted(pixels, volume)}"
        for image_id, dice, pixels, volume in cells
    ]
