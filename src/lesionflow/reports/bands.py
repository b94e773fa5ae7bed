"""Dice quality bands (bad | mid | good): the band of a Dice, the bands in words and their colours.

Must never choose the cut points: they are always given, from the config's analyse.dice_bands.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.labels import is_undefined

BAND_NAMES = ("bad", "mid", "good")
BAND_COLOURS = {"bad": "tab:red", "mid": "gold", "good": "tab:green"}


def check_bands(bands: Sequence[float]) -> tuple[float, float]:
    """The two Dice cut points (bad | mid | good) as floats, after checking 0 <= low < high <= 1."""
    values = list(bands)
    if len(values) != 2 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        raise LesionflowError(f"dice_bands: expected two numbers [low, high], got {bands!r}")
    low, high = float(values[0]), float(values[1])
    if not 0 <= low < high <= 1:
        raise LesionflowError(f"dice_bands: expected 0 <= low < high <= 1, got [{low:g}, {high:g}]")
    return low, high


def dice_band(dice: float, bands: Sequence[float]) -> str:
    """'bad' below bands[0], 'mid' below bands[1], 'good' from bands[1] on; NaN is 'undefined'."""
    if is_undefined(dice):
        return "undefined"
    low, high = bands
    if dice < low:
        return "bad"
    if dice < high:
        return "mid"
    return "good"


def band_labels(bands: Sequence[float]) -> dict[str, str]:
    """Each band in words with its edges, e.g. 'mid: 0.4 to < 0.6'."""
    low, high = bands
    return {
        "bad": f"bad: < {low:g}",
        "mid": f"mid: {low:g} to < {high:g}",
        "good": f"good: >= {high:g}",
    }


def shade_bands(ax: Axes, bands: Sequence[float]) -> None:
    """Shade the three bands of a Dice axis (0 to 1) in their colours."""
    edges = (0.0, *bands, 1.0)
    for name, low, high in zip(BAND_NAMES, edges[:-1], edges[1:], strict=True):
        ax.axhspan(low, high, color=BAND_COLOURS[name], alpha=0.12, linewidth=0)
