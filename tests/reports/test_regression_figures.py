"""Tests of lesionflow.reports.regression_figures and regression_cases: every figure of the regression
notebook, drawn from tiny per-case tables and tiny NIfTI volumes, and its one-line reading."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from scipy import stats

from lesionflow.evaluation.bootstrap import Resampler, mean
from lesionflow.evaluation.regression import range_labels, regression_metrics
from lesionflow.io.geometry import Geometry
from lesionflow.io.readers import write_image, write_mask
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import regression_cases, regression_figures, score_statements, slices

RANGES = [0, 2, 5, 10, 35]
LABELS = ["[0, 2)", "[2, 5)", "[5, 10)", "[10, 35]"]


def per_case_frame() -> pd.DataFrame:
    """Ten test cases of six subjects; s1 and s2 seen twice (visits '2' and '10': numeric order);
    high scores under-predicted, no case in [5, 10)."""
    true = np.array([0.0, 1.0, 3.0, 4.0, 2.5, 11.0, 14.0, 20.0, 25.0, 12.0])
    predicted = np.array([1.0, 1.5, 3.5, 3.0, 3.0, 8.0, 10.0, 15.0, 19.0, 10.5])
    frame = pd.DataFrame(
        {
            "image_id": [f"c{i:02d}" for i in range(10)],
            "subject": ["s1", "s1", "s2", "s2", "s3", "s4", "s5", "s6", "s6", "s3"],
            "visit": ["10", "2", "2", "10", "", "", "", "", "", ""],
            "true": true,
            "predicted_raw": predicted,
            "predicted": predicted,
        }
    )
    frame["residual"] = frame["predicted"] - frame["true"]
    frame["abs_error"] = frame["residual"].abs()
    frame["range"] = range_labels(true, RANGES)
    return frame


def resampler(frame, n_resamples=300) -> Resampler:
    return Resampler.from_subjects(frame["subject"].tolist(), n_resamples, 0, 0.95, "evaluate.bootstrap")


def overall_block(frame) -> dict:
    point = regression_metrics(frame["true"], frame["predicted"])
    block = dict(point)
    for name in ("pearson_r", "srmse", "mae"):
        block[f"{name}_ci_low"], block[f"{name}_ci_high"] = point[name] - 0.1, point[name] + 0.1
    return block


def line(ax, prefix):
    (found,) = [ln for ln in ax.get_lines() if str(ln.get_label()).startswith(prefix)]
    return found


# ---------------------------------------------------------------- predicted vs true


def test_scatter_identity_spans_every_point_and_fit_is_scipys_line_with_its_band():
    test, val = per_case_frame(), per_case_frame().assign(true=lambda f: f["true"] + 3, predicted=-1.0)
    fig = regression_figures.plot_score_scatter(test, overall_block(test), 0.95, val=val, calibrated=True)
    assert isinstance(fig, Figure)
    (ax,) = fig.get_axes()
    identity = line(ax, "identity")
    everything = np.r_[test["true"], test["predicted"], val["true"], val["predicted"]]
    assert identity.get_xdata() == pytest.approx([everything.min(), everything.max()])
    assert identity.get_ydata() == pytest.approx(identity.get_xdata())
    fit = stats.linregress(test["true"], test["predicted"])
    fitted = line(ax, "least squares")
    assert fitted.get_ydata() == pytest.approx(fit.intercept + fit.slope * fitted.get_xdata())
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert low < fitted.get_ydata().min() and high > fitted.get_ydata().max()
    assert [len(c.get_offsets()) for c in ax.collections if c is not band] == [len(val), len(test)]
    assert "r = " in ax.get_title() and "sRMSE" in ax.get_title() and "MAE" in ax.get_title()
    assert "calibration" in ax.get_ylabel()


def test_scatter_band_at_the_mean_and_at_zero_matches_scipys_standard_errors():
    frame = per_case_frame()
    true, pred = frame["true"].to_numpy(), frame["predicted"].to_numpy()
    fit, t = stats.linregress(true, pred), stats.t.ppf(0.975, len(true) - 2)
    fitted = score_statements.least_squares_line(true, pred, 0.95)
    low, high = score_statements.line_band(fitted, true, np.array([0.0]), 0.95)
    # At x = 0 the band of the mean is the intercept's interval.
    assert (high - low)[0] / 2 == pytest.approx(t * fit.intercept_stderr)
    assert fitted.slope_high - fitted.slope == pytest.approx(t * fit.stderr)


def test_scatter_of_two_cases_says_the_line_is_undefined():
    test = per_case_frame().head(2)
    ax = regression_figures.plot_score_scatter(test, overall_block(test), 0.95).get_axes()[0]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert any("undefined" in text.get_text() for text in ax.get_legend().get_texts())
    assert "undefined" in regression_figures.score_scatter_reading(test, 0.95)


def test_scatter_reading_calls_a_slope_below_one_compressed_only_when_its_interval_is():
    frame = per_case_frame()
    reading = regression_figures.score_scatter_reading(frame, 0.95)
    fitted = score_statements.least_squares_line(frame["true"], frame["predicted"], 0.95)
    assert fitted.slope_high < 1 and "interval lies below 1" in reading and "compressed" in reading
    noisy = frame.assign(predicted=frame["true"] + np.array([5, -5, 4, -4, 6, -6, 5, -5, 6, -6.0]))
    assert "contains 1" in regression_figures.score_scatter_reading(noisy, 0.95)


# ---------------------------------------------------------------- residuals by range


def test_residuals_by_range_mean_and_interval_are_the_subject_bootstrap_mean_per_range():
    frame, boot = per_case_frame(), resampler(per_case_frame())
    ax = regression_figures.plot_residuals_by_range(frame, LABELS, boot).get_axes()[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == [
        "[0, 2)\nn = 2 (too few)",
        "[2, 5)\nn = 3",
        "[5, 10)\nn = 0 (too few)",
        "[10, 35]\nn = 5",
    ]
    bars = ax.containers  # one errorbar per range with cases: mean and interval
    for bar, label in zip(bars, ["[0, 2)", "[2, 5)", "[10, 35]"], strict=True):
        rows = frame[frame["range"] == label]
        expected = mean(rows["residual"], rows["subject"].tolist(), boot)
        mean_marker, _, (interval,) = bar
        assert mean_marker.get_ydata()[0] == pytest.approx(rows["residual"].mean())
        (segment,) = interval.get_segments()
        assert sorted(segment[:, 1]) == pytest.approx(expected.interval())
    assert any(t.get_text() == "no case" for t in ax.texts)
    reading = regression_figures.residuals_reading(frame, LABELS, boot)
    high = frame[frame["range"] == "[10, 35]"]
    assert f"[10, 35] {high['residual'].mean():+.2f} [" in reading
    assert reading.endswith("fewer than 3 cases, not judged: [0, 2), [5, 10).")


# ---------------------------------------------------------------- Bland-Altman


def test_bland_altman_limits_are_the_mean_difference_plus_minus_1_96_sample_sd():
    frame = per_case_frame()
    ax = regression_figures.plot_bland_altman(frame).get_axes()[0]
    diff = (frame["predicted"] - frame["true"]).to_numpy()
    sd = np.std(diff, ddof=1)
    assert line(ax, "mean bias").get_ydata()[0] == pytest.approx(diff.mean())
    assert line(ax, "upper limit").get_ydata()[0] == pytest.approx(diff.mean() + 1.96 * sd)
    assert line(ax, "lower limit").get_ydata()[0] == pytest.approx(diff.mean() - 1.96 * sd)
    (points,) = ax.collections
    average = (frame["true"] + frame["predicted"]) / 2
    assert np.asarray(points.get_offsets())[:, 0].tolist() == pytest.approx(average.tolist())
    bottom, top = ax.get_ylim()
    assert bottom < diff.mean() - 1.96 * sd and top > diff.mean() + 1.96 * sd
    assert f"{diff.mean():+.2f}" in regression_figures.bland_altman_reading(frame)


def test_bland_altman_of_one_case_has_no_limits():
    ax = regression_figures.plot_bland_altman(per_case_frame().head(1)).get_axes()[0]
    labels = [str(ln.get_label()) for ln in ax.get_lines()]
    assert not [label for label in labels if label.startswith(("upper limit", "lower limit"))]
    assert "limits of agreement undefined (< 2 cases)" in labels
    assert math.isnan(score_statements.agreement_limits(per_case_frame().head(1)).sd)


# ---------------------------------------------------------------- visits


def test_visit_consistency_joins_each_subjects_visits_in_numeric_order():
    frame = per_case_frame()
    fig = regression_cases.plot_visit_consistency(frame)
    trajectories, changes = fig.get_axes()
    drawn = [ln for ln in trajectories.get_lines() if len(ln.get_xdata())]
    assert len(drawn) == 4  # true and predicted of s1 and s2
    s1_true = drawn[0]
    # s1: visit '2' (true 1.0) before visit '10' (true 0.0), although '10' < '2' as text.
    assert list(s1_true.get_xdata()) == [1, 2] and list(s1_true.get_ydata()) == [1.0, 0.0]
    (points,) = changes.collections
    assert points.get_offsets().tolist() == [[-1.0, -0.5], [1.0, -0.5]]  # (true, predicted) change
    assert "sign of the true change for 1 of 2" in regression_cases.visit_reading(frame)


def test_visit_consistency_without_repeat_visits_says_so():
    frame = per_case_frame().assign(visit="")
    (ax,) = regression_cases.plot_visit_consistency(frame).get_axes()
    assert "No subject has two or more visits" in ax.texts[0].get_text()
    assert "10 without a visit label" in ax.texts[0].get_text()
    assert regression_cases.visit_reading(frame).startswith("No subject")


# ---------------------------------------------------------------- training curves


def epochs_frame() -> pd.DataFrame:
    epochs = np.arange(1, 6)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 9.0 / epochs,
            "val_loss": 10.0 / epochs + 0.5,
            "train_rmse": 3.0 / epochs,
            "val_rmse": 3.5 / epochs + 0.2,
            "val_srmse": [0.9, 0.6, 0.5, 0.55, 0.6],
        }
    )


def test_training_curves_mark_the_kept_epoch_on_every_panel_and_ring_its_srmse():
    fig = regression_figures.plot_training_curves(epochs_frame(), best_epoch=3)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes][:2] == ["Loss", "RMSE"]
    for ax in axes:
        assert list(line(ax, "kept epoch").get_xdata()) == [3, 3]
    ring = line(axes[2], "val sRMSE")
    assert list(ring.get_xdata()) == [3] and list(ring.get_ydata()) == [0.5]
    assert list(line(axes[0], "validation").get_ydata()) == pytest.approx(epochs_frame()["val_loss"])
    reading = regression_figures.training_reading(epochs_frame(), {"best_epoch": 3})
    assert reading.startswith("Weights kept from epoch 3 of 5") and "0.500" in reading


# ---------------------------------------------------------------- worst cases


def write_cases(folder, frame, lesion=True) -> pd.DataFrame:
    """A 12 x 10 x 8 NIfTI volume (2 mm slices) per row, a lesion box at x 6-8, y 2-4, z 5-7."""
    rows = []
    geometry = Geometry((12, 10, 8), (1.0, 1.0, 2.0), np.diag([1.0, 1.0, 2.0, 1.0]))
    for image_id in frame["image_id"]:
        image = np.random.default_rng(0).normal(0, 1, (1, 12, 10, 8)).astype(np.float32)
        mask = np.zeros((12, 10, 8), dtype=bool)
        mask[6:9, 2:5, 5:8] = lesion
        write_image(folder / f"{image_id}.nii.gz", image, geometry)
        write_mask(folder / f"{image_id}_mask.nii.gz", mask, geometry)
        rows.append(
            {
                "image_id": image_id,
                "image": str(folder / f"{image_id}.nii.gz"),
                "mask": str(folder / f"{image_id}_mask.nii.gz"),
            }
        )
    return pd.DataFrame(rows)


def test_worst_cases_are_the_largest_absolute_residuals_first():
    chosen = regression_cases.worst_cases(per_case_frame(), 3)
    assert chosen["image_id"].tolist() == ["c08", "c07", "c06"]  # residuals -6, -5, -4
    assert regression_cases.worst_cases(per_case_frame(), 0).empty
    with pytest.raises(LesionflowError, match="n_examples"):
        regression_cases.worst_cases(per_case_frame(), -1)


def test_worst_cases_show_three_planes_through_the_lesion_centroid_with_its_outline(tmp_path):
    chosen = regression_cases.worst_cases(per_case_frame(), 2)
    volumes = regression_cases.load_case_volumes(chosen["image_id"], write_cases(tmp_path, chosen))
    fig = regression_cases.plot_worst_cases(chosen, volumes)
    axes = fig.get_axes()
    assert len(axes) == 6  # one row of three planes per case
    assert [ax.get_title() for ax in axes[:3]] == [
        "axial z=6 (lesion centroid)",
        "coronal y=3 (lesion centroid)",
        "sagittal x=7 (lesion centroid)",
    ]
    assert all(len(ax.collections) == 1 for ax in axes)  # the mask outline (a contour) on every plane
    # Coronal plane: (x, z) with 2 mm slices, so each displayed pixel is twice as tall as wide.
    assert axes[1].images[0].get_array().shape == (8, 12) and axes[1].get_aspect() == 2.0
    titles = [subfig.get_suptitle() for subfig in fig.subfigs]
    assert titles[0] == "c08 (subject s6): true 25.00, predicted 19.00, residual -6.00"
    reading = regression_cases.worst_cases_reading(chosen)
    assert "c08 -6.00" in reading and "2 of 2 under-predicted" in reading


def test_worst_case_without_a_lesion_is_cut_through_the_centre(tmp_path):
    chosen = regression_cases.worst_cases(per_case_frame(), 1)
    volumes = regression_cases.load_case_volumes(
        chosen["image_id"], write_cases(tmp_path, chosen, lesion=False)
    )
    axes = regression_cases.plot_worst_cases(chosen, volumes).get_axes()
    assert [ax.get_title() for ax in axes][0] == "axial z=4 (centre (no lesion))"
    assert not any(ax.collections for ax in axes)


def test_worst_cases_without_masks_cut_through_the_volume_centre_with_no_outline_and_say_so(tmp_path):
    chosen = regression_cases.worst_cases(per_case_frame(), 2)
    manifest = write_cases(tmp_path, chosen)
    for name in manifest["mask"]:
        Path(name).unlink()  # the data have no masks: nothing may read one
    volumes = regression_cases.load_case_volumes(chosen["image_id"], manifest.assign(mask=""))
    assert all(case.mask is None for case in volumes)
    fig = regression_cases.plot_worst_cases(chosen, volumes)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes[:3]] == [
        "axial z=4 (volume centre; no mask)",
        "coronal y=5 (volume centre; no mask)",
        "sagittal x=6 (volume centre; no mask)",
    ]
    assert not any(ax.collections for ax in axes)
    centre = slices.planes((12, 10, 8), (1.0, 1.0, 2.0), (6, 5, 4))
    np.testing.assert_array_equal(axes[0].images[0].get_array(), slices.cut(volumes[0].image[0], centre[0]))
    without_column = regression_cases.load_case_volumes(chosen["image_id"], manifest.drop(columns="mask"))
    assert all(case.mask is None for case in without_column)


def test_worst_cases_of_an_unknown_image_name_it(tmp_path):
    manifest = write_cases(tmp_path, per_case_frame().head(1))
    with pytest.raises(LesionflowError, match="no row for test image id 'c09'"):
        regression_cases.load_case_volumes(["c09"], manifest)
