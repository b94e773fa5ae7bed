"""Example-image figures: test images with reference, probability map and locked prediction.

Must never choose the images (the caller does) nor change a prediction: the locked post-processing stands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lesionflow.data.geometry import resize_image
from lesionflow.data.manifest import load_manifest_mask
from lesionflow.evaluation.postprocess import apply_locked
from lesionflow.io.readers import read_image
from lesionflow.pipeline.errors import LesionflowError

# Longest side, in pixels, of the pictures in example figures: enough for a 4-panel row.
DISPLAY_SIZE = 768


def load_examples(
    ids: Sequence[str],
    manifest: pd.DataFrame,
    probs: Mapping[str, np.ndarray],
    locked: Mapping[str, Any],
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Images, reference masks, probability maps and locked post-processed predictions of ids.

    The prediction is made at full resolution, then all four are reduced to at most
    DISPLAY_SIZE pixels a side (see :func:`for_display`): a figure of a few 4288 x 2848
    photographs would otherwise take gigabytes.
    """
    rows = manifest.set_index("image_id", drop=False)
    images, masks, maps, preds = [], [], [], []
    for image_id in ids:
        if image_id not in rows.index:
            raise LesionflowError(f"manifest: no row for test image id {image_id!r}")
        if image_id not in probs:
            raise LesionflowError(f"test probabilities: no map for image id {image_id!r}")
        row = rows.loc[image_id]
        prob = np.asarray(probs[image_id], dtype=np.float32)
        shown = for_display(
            read_image(row["image"]).array, load_manifest_mask(row), prob, apply_locked(prob, locked)[0]
        )
        for kept, value in zip((images, masks, maps, preds), shown, strict=True):
            kept.append(value)
    return images, masks, maps, preds


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


def _display_image(image: np.ndarray) -> np.ndarray:
    # (C, H, W) -> what imshow takes: RGB as (H, W, 3), anything else as its first channel.
    if image.shape[0] == 3:
        return np.clip(np.moveaxis(image, 0, -1), 0, 1)
    return image[0]


def _overlay(mask: np.ndarray, colour: tuple[float, float, float], alpha: float = 0.5) -> np.ndarray:
    rgba = np.zeros((*mask.shape, 4), dtype=np.float32)
    rgba[mask] = (*colour, alpha)
    return rgba


def plot_examples(
    ids: Sequence[str],
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    probs: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
) -> Figure:
    """Grid with one row per image: image, image + reference (green), probability, prediction (red).

    The prediction panel also outlines the reference in green, so misses and false positives show.
    """
    titles = list(ids) if titles is None else list(titles)
    if not ids:
        # An empty group still gets a figure that says so, rather than a blank grid.
        fig = Figure(figsize=(6, 1.2), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no images in this group", ha="center", va="center")
        ax.set_axis_off()
        return fig
    n = len(ids)
    fig = Figure(figsize=(12, 3.2 * n), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False)
    headers = ("image", "image + reference", "probability", "prediction (locked)")
    for ax, header in zip(axes[0], headers, strict=True):
        ax.set_title(header)
    for row, (image, mask, prob, pred, title) in enumerate(
        zip(images, masks, probs, preds, titles, strict=True)
    ):
        shown = _display_image(image)
        cmap = "gray" if shown.ndim == 2 else None
        first, second, third, fourth = axes[row]
        first.imshow(shown, cmap=cmap)
        second.imshow(shown, cmap=cmap)
        second.imshow(_overlay(mask, (0.0, 1.0, 0.0)))
        third.imshow(prob, vmin=0, vmax=1, cmap="magma")
        fourth.imshow(shown, cmap=cmap)
        fourth.imshow(_overlay(pred, (1.0, 0.0, 0.0)))
        if mask.any() and not mask.all():  # contour of a constant mask is undefined
            fourth.contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
        first.set_ylabel(title, fontsize="small")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
