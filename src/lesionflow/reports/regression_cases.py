"""Case-level figures of a regression run: the worst-predicted volumes, and subjects followed over visits.

Must never choose cases by anything but |residual| or visits on the table given, nor change a voxel shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from lesionflow.data.manifest import read_manifest_mask
from lesionflow.io.readers import read_image
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.regression_figures import TEST_COLOUR, note_panel
from lesionflow.reports.slices import cut, focus_voxel, planes


class CaseVolume(NamedTuple):
    """One case to show: its image ``(C, *spatial)`` in RAS, its lesion mask and voxel spacing (mm).

    ``mask`` is None when the data have no masks (a manifest of scores only).
    """

    image: np.ndarray
    mask: np.ndarray | None
    spacing: tuple[float, ...]


def _has_mask(row: pd.Series) -> bool:
    cell = row.get("mask", "")
    return not pd.isna(cell) and str(cell).strip() != ""


def worst_cases(per_case: pd.DataFrame, n: int) -> pd.DataFrame:
    """The ``n`` rows with the largest |residual|, largest first; ties go to the lower image id."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise LesionflowError(f"analyse.n_examples must be a whole number >= 0, got {n!r}")
    ordered = per_case.assign(_size=per_case["residual"].abs()).sort_values(
        ["_size", "image_id"], ascending=[False, True], kind="stable"
    )
    return ordered.head(int(n)).drop(columns="_size").reset_index(drop=True)


def load_case_volumes(ids: Sequence[str], manifest: pd.DataFrame) -> list[CaseVolume]:
    """Image, mask and spacing of each id, read in RAS from the data manifest's ``image`` and ``mask``.

    A row without a mask (an empty ``mask`` cell, or no column) gives a case whose mask is None.
    """
    rows = manifest.set_index("image_id", drop=False)
    loaded = []
    for image_id in ids:
        if image_id not in rows.index:
            raise LesionflowError(f"manifest: no row for test image id {image_id!r}")
        row = rows.loc[image_id]
        image, geometry = read_image(row["image"])
        if not _has_mask(row):
            loaded.append(CaseVolume(image, None, tuple(geometry.spacing)))
            continue
        mask = read_manifest_mask(row).array
        if mask.shape != image.shape[1:]:
            raise LesionflowError(
                f"mask {row['mask']} has shape {mask.shape}, its image {row['image']} {image.shape[1:]}"
            )
        loaded.append(CaseVolume(image, mask, tuple(geometry.spacing)))
    return loaded


def case_title(row: pd.Series) -> str:
    """'0003_2 (subject 0003, visit 2): true 12.00, predicted 7.40, residual -4.60'."""
    visit = f", visit {row['visit']}" if str(row.get("visit", "")) else ""
    return (
        f"{row['image_id']} (subject {row['subject']}{visit}): true {float(row['true']):.2f}, "
        f"predicted {float(row['predicted']):.2f}, residual {float(row['residual']):+.2f}"
    )


def plot_worst_cases(rows: pd.DataFrame, volumes: Sequence[CaseVolume]) -> Figure:
    """One row per case (``rows`` of the per-case table, as :func:`worst_cases` orders them): its
    axial, coronal and sagittal planes through the centroid of its largest lesion (the centre
    without one), the lesion outlined in red; the row's title gives true, predicted, residual.
    A case without a mask is cut through the volume's centre, with no outline, and each plane's
    title says there is no mask.

    Planes are drawn the radiological way with the true voxel shape (see ``slices.cut``); each
    case has one grey window over its whole volume, its minimum to its maximum.
    """
    if rows.empty:
        fig = Figure(figsize=(6, 1.2), layout="constrained")
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no cases to show (n_examples = 0 or no test cases)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    if len(rows) != len(volumes):
        raise LesionflowError(f"worst cases: {len(rows)} table rows but {len(volumes)} volumes")
    fig = Figure(figsize=(10.5, 3.6 * len(rows)), layout="constrained")
    rows_of_panels = fig.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for subfig, (_, row), case in zip(rows_of_panels, rows.iterrows(), volumes, strict=True):
        _draw_case(subfig, case)
        subfig.suptitle(case_title(row), fontsize="medium")
    return fig


def _draw_case(subfig: Figure, case: CaseVolume) -> None:
    shape = case.image.shape[1:]
    if case.mask is None:
        voxel = tuple(size // 2 for size in shape)
    else:
        # A constant map makes focus_voxel fall back to the centre when the mask is empty.
        voxel = focus_voxel(case.mask, np.zeros(shape, dtype=np.float32))
    shown = planes(shape, case.spacing, voxel)
    axes = subfig.subplots(1, len(shown), squeeze=False)[0]
    window = {"cmap": "gray", "vmin": float(case.image[0].min()), "vmax": float(case.image[0].max())}
    for ax, panel in zip(axes, shown, strict=True):
        ax.imshow(cut(case.image[0], panel), aspect=panel.aspect, **window)
        if case.mask is None:
            where = "volume centre; no mask"
        else:
            outline = cut(case.mask, panel)
            if outline.any() and not outline.all():  # the contour of a constant mask is undefined
                ax.contour(outline, levels=[0.5], colors="red", linewidths=1.0)
            where = "lesion centroid" if case.mask.any() else "centre (no lesion)"
        ax.set_title(f"{panel.label or 'image'} ({where})", fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])


def worst_cases_reading(rows: pd.DataFrame) -> str:
    """The shown cases' residuals and how many of them are under-predicted."""
    if rows.empty:
        return "No case is shown."
    residuals = ", ".join(f"{r.image_id} {float(r.residual):+.2f}" for r in rows.itertuples())
    under = int((rows["residual"] < 0).sum())
    return f"The {len(rows)} largest |residual| on test: {residuals}; {under} of {len(rows)} under-predicted."


# ---------------------------------------------------------------- visits


def visit_pairs(per_case: pd.DataFrame) -> pd.DataFrame:
    """The rows of subjects with two or more distinct (non-empty) visits, each subject's visits in
    order (numerically when every label is a number) and numbered from 1 in ``visit_order``."""
    labelled = per_case[per_case["visit"].astype(str) != ""].copy()
    counts = labelled.groupby("subject")["visit"].nunique()
    kept = labelled[labelled["subject"].isin(counts.index[counts >= 2])].copy()
    numeric = pd.to_numeric(kept["visit"], errors="coerce")
    kept["_key"] = numeric if numeric.notna().all() else kept["visit"]
    kept = kept.sort_values(["subject", "_key", "image_id"]).drop(columns="_key")
    kept["visit_order"] = kept.groupby("subject").cumcount() + 1
    return kept


def plot_visit_consistency(per_case: pd.DataFrame) -> Figure:
    """Subjects with two or more visits: true (solid) and predicted (dashed) score per visit joined
    by lines, and the change from first to last visit, predicted against true; a panel saying so
    when no subject has two visits."""
    pairs = visit_pairs(per_case)
    if pairs.empty:
        fig = Figure(figsize=(7, 2), layout="constrained")
        no_visit = int((per_case["visit"].astype(str) == "").sum())
        note_panel(
            fig.subplots(),
            (
                f"No subject has two or more visits in this table ({len(per_case)} images of "
                f"{per_case['subject'].nunique()} subjects; {no_visit} without a visit label)."
            ),
        )
        return fig
    fig = Figure(figsize=(12, 5), layout="constrained")
    trajectories, changes = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(pairs["subject"].nunique())]
    for colour, (subject, rows) in zip(colours, pairs.groupby("subject"), strict=True):
        trajectories.plot(rows["visit_order"], rows["true"], "-o", color=colour, markersize=5)
        trajectories.plot(rows["visit_order"], rows["predicted"], "--x", color=colour, markersize=6)
        trajectories.annotate(
            subject,
            (rows["visit_order"].iloc[-1], rows["true"].iloc[-1]),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize="x-small",
            color=colour,
        )
    trajectories.legend(
        handles=[
            Line2D([], [], color="0.3", marker="o", label="true"),
            Line2D([], [], color="0.3", marker="x", linestyle="--", label="predicted"),
        ],
        fontsize="small",
    )
    trajectories.xaxis.set_major_locator(MaxNLocator(integer=True))
    trajectories.set_xlabel("visit (in order of its label)")
    trajectories.set_ylabel("score")
    trajectories.set_title(
        f"{pairs['subject'].nunique()} subject(s) with two or more visits", fontsize="medium"
    )
    _plot_changes(changes, pairs)
    for ax in (trajectories, changes):
        ax.grid(alpha=0.3)
    return fig


def visit_changes(pairs: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """True and predicted change from each subject's first to last visit (rows of :func:`visit_pairs`)."""
    first, last = pairs.groupby("subject").first(), pairs.groupby("subject").last()
    return last["true"] - first["true"], last["predicted"] - first["predicted"]


def _plot_changes(ax: Axes, pairs: pd.DataFrame) -> None:
    true_change, pred_change = visit_changes(pairs)
    ax.scatter(true_change, pred_change, s=28, color=TEST_COLOUR)
    low = float(min(true_change.min(), pred_change.min(), 0))
    high = float(max(true_change.max(), pred_change.max(), 0))
    ax.plot([low, high], [low, high], "--", color="black", linewidth=1, label="identity (same change)")
    ax.axhline(0, color="0.5", linewidth=0.6)
    ax.axvline(0, color="0.5", linewidth=0.6)
    ax.set_xlabel("true change, first to last visit")
    ax.set_ylabel("predicted change, first to last visit")
    ax.set_title("Change between first and last visit", fontsize="medium")
    ax.legend(fontsize="small")


def visit_reading(per_case: pd.DataFrame) -> str:
    """How many subjects have two or more visits, and how the predicted change follows the true one."""
    pairs = visit_pairs(per_case)
    if pairs.empty:
        return "No subject has two or more visits here: visit consistency cannot be shown."
    true_change, pred_change = visit_changes(pairs)
    same_sign, n = int((np.sign(true_change) == np.sign(pred_change)).sum()), len(true_change)
    return (
        f"{n} subject(s) with two or more visits: the predicted change from first to last visit "
        f"has the sign of the true change for {same_sign} of {n}; mean |predicted change - true "
        f"change| = {float((pred_change - true_change).abs().mean()):.2f}."
    )
