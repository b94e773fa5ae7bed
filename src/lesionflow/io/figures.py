"""Writers of matplotlib figures: PNG or SVG files, written atomically.

Kept out of the artifact writers every stage imports, so that a figure-saving edit never changes
the key of a stage that draws nothing (training, inference).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from lesionflow.pipeline.artifacts import atomic_path


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save a matplotlib figure atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(
            tmp, dpi=dpi, bbox_inches="tight", format=Path(path).suffix.lstrip(".") or "png"
        )
    plt.close(fig)


def save_figure_files(
    fig, folder: str | os.PathLike, name: str, formats: tuple[str, ...] = ("png", "svg"), dpi: int = 120
) -> list[Path]:
    """Save a figure as ``<folder>/<name>.<format>`` for each format, atomically, and keep it open.

    Notebooks display the figure after saving it, so unlike :func:`save_figure` it is not closed.
    """
    paths = []
    for fmt in formats:
        path = Path(folder) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt)
        paths.append(path)
    return paths
