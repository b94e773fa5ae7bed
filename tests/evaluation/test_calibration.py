"""Tests of lesionflow.evaluation.calibration: the line fitted on validation only, and its guards."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_squared_error

from lesionflow.evaluation.calibration import (
    apply_calibration,
    fit_calibration,
    run_calibrate,
    subset_cases,
)
from lesionflow.pipeline.errors import LesionflowError

SPEC_FIELDS = {"method", "intercept", "slope", "fitted_on", "n_val", "val_rmse_before", "val_rmse_after"}


def write_scored_data(folder, n=12, seed=0):
    """manifest.csv and split.csv of ``n`` cases (train/val/test in turn) and each subset's scores file.

    The raw predictions are 3 + 0.5 * true plus noise, so a line corrects them.
    """
    rng = np.random.default_rng(seed)
    ids = [f"c{i:02d}" for i in range(n)]
    subjects = [f"s{i // 2}" for i in range(n)]
    true = rng.uniform(0, 30, n).round(2)
    raw = 3 + 0.5 * true + rng.normal(0, 1, n)
    splits = [("train", "val", "test")[i // 2 % 3] for i in range(n)]
    visits = [f"v{i % 2 + 1}" for i in range(n)]
    manifest = pd.DataFrame(
        {
            "image_id": ids,
            "subject": subjects,
            "image": [f"{i}.nii.gz" for i in ids],
            "mask": [f"{i}_mask.nii.gz" for i in ids],
            "score": true,
            "visit": visits,
        }
    )
    manifest.to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame({"image_id": ids, "subject": subjects, "split": splits}).to_csv(
        folder / "split.csv", index=False
    )
    frame = pd.DataFrame({"image_id": ids, "subject": subjects, "visit": visits, "prediction": raw})
    paths = {}
    for subset in ("val", "test"):
        rows = frame[[s == subset for s in splits]]
        paths[subset] = folder / f"{subset}_scores.csv"
        rows.assign(prediction_identity=rows["prediction"]).to_csv(paths[subset], index=False)
    return folder / "manifest.csv", folder / "split.csv", paths


# --- fitting and applying -----------------------------------------------------------------------


def test_linear_fit_recovers_a_known_intercept_and_slope():
    predicted = np.linspace(-3, 12, 9)
    fitted = fit_calibration(2.5 - 0.75 * predicted, predicted, "linear")
    assert fitted["method"] == "linear"
    assert fitted["intercept"] == pytest.approx(2.5)
    assert fitted["slope"] == pytest.approx(-0.75)


def test_linear_fit_is_numpys_least_squares_line_on_noisy_data():
    rng = np.random.default_rng(3)
    predicted = rng.uniform(0, 20, 30)
    true = 1 + 1.3 * predicted + rng.normal(0, 2, 30)
    slope, intercept = np.polyfit(predicted, true, 1)
    fitted = fit_calibration(true, predicted, "linear")
    assert (fitted["intercept"], fitted["slope"]) == pytest.approx((intercept, slope))


def test_none_is_the_identity():
    predicted = np.array([0.5, 3.0, 7.25])
    fitted = fit_calibration([10.0, 0.0, 2.0], predicted, "none")
    assert fitted == {"method": "none", "intercept": 0.0, "slope": 1.0}
    np.testing.assert_array_equal(apply_calibration(fitted, predicted), predicted)


def test_apply_calibration_is_intercept_plus_slope_times_prediction():
    calibrated = apply_calibration({"intercept": 1.0, "slope": 2.0}, [0.0, 1.5, -2.0])
    np.testing.assert_allclose(calibrated, [1.0, 4.0, -3.0])


def test_linear_fit_on_one_distinct_prediction_is_an_error_naming_tune_calibration():
    with pytest.raises(LesionflowError, match=r"tune\.calibration.*1 distinct"):
        fit_calibration([1.0, 5.0, 9.0], [4.0, 4.0, 4.0], "linear")


def test_unknown_method_is_an_error_naming_tune_calibration():
    with pytest.raises(LesionflowError, match=r"tune\.calibration must be one of"):
        fit_calibration([1.0, 2.0], [1.0, 2.0], "isotonic")


def test_a_calibration_without_a_finite_slope_is_refused():
    with pytest.raises(LesionflowError, match="slope"):
        apply_calibration({"intercept": 0.0, "slope": None}, [1.0])


# --- the stage: validation only ----------------------------------------------------------------


def test_run_calibrate_writes_the_spec_fields_fitted_on_val(tmp_path):
    manifest, split, scores = write_scored_data(tmp_path)
    out = run_calibrate(manifest, split, scores["val"], {"tune": {"calibration": "linear"}}, tmp_path / "cal")
    written = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert written == pytest.approx(out)
    assert set(written) == SPEC_FIELDS
    assert written["fitted_on"] == "val"
    cases = subset_cases(manifest, split, scores["val"], "val", "")
    assert written["n_val"] == len(cases) == 4
    true, raw = cases["true"].to_numpy(), cases["predicted_raw"].to_numpy()
    slope, intercept = np.polyfit(raw, true, 1)
    assert (written["intercept"], written["slope"]) == pytest.approx((intercept, slope))
    assert written["val_rmse_before"] == pytest.approx(math.sqrt(mean_squared_error(true, raw)))
    after = math.sqrt(mean_squared_error(true, intercept + slope * raw))
    assert written["val_rmse_after"] == pytest.approx(after)
    assert written["val_rmse_after"] <= written["val_rmse_before"]


def test_run_calibrate_with_none_writes_the_identity(tmp_path):
    manifest, split, scores = write_scored_data(tmp_path)
    out = run_calibrate(manifest, split, scores["val"], {"tune": {"calibration": "none"}}, tmp_path)
    assert (out["intercept"], out["slope"]) == (0.0, 1.0)
    assert out["val_rmse_after"] == pytest.approx(out["val_rmse_before"])


def test_a_test_split_scores_file_never_reaches_the_fit(tmp_path):
    manifest, split, scores = write_scored_data(tmp_path)
    with pytest.raises(LesionflowError, match=r"test_scores\.csv.*'c04' \(test\).*validation only"):
        run_calibrate(manifest, split, scores["test"], {"tune": {"calibration": "linear"}}, tmp_path / "cal")
    assert not (tmp_path / "cal" / "calibration.json").exists()


def test_one_test_row_among_the_val_rows_is_refused_naming_it(tmp_path):
    manifest, split, scores = write_scored_data(tmp_path)
    val, test = pd.read_csv(scores["val"]), pd.read_csv(scores["test"])
    pd.concat([val, test.iloc[[1]]]).to_csv(scores["val"], index=False)
    with pytest.raises(LesionflowError, match=r"val_scores\.csv holds 1 image ids.*'c05'.*validation only"):
        run_calibrate(manifest, split, scores["val"], {"tune": {"calibration": "linear"}}, tmp_path)


def test_a_val_image_missing_from_the_scores_file_is_refused(tmp_path):
    manifest, split, scores = write_scored_data(tmp_path)
    pd.read_csv(scores["val"]).iloc[1:].to_csv(scores["val"], index=False)
    with pytest.raises(LesionflowError, match=r"lacks predictions for 1 val image ids.*c02"):
        run_calibrate(manifest, split, scores["val"], {"tune": {"calibration": "linear"}}, tmp_path)


def test_settings_without_tune_calibration_name_the_key(tmp_path):
    manifest, split, scores = write_scored_data(tmp_path)
    with pytest.raises(LesionflowError, match=r"tune\.calibration"):
        run_calibrate(manifest, split, scores["val"], {"tune": {}}, tmp_path)


def test_a_non_numeric_prediction_names_the_file_and_image(tmp_path):
    manifest, split, scores = write_scored_data(tmp_path)
    val = pd.read_csv(scores["val"]).astype({"prediction": object})
    val.loc[0, "prediction"] = "nan"
    val.to_csv(scores["val"], index=False)
    with pytest.raises(LesionflowError, match=r"val_scores\.csv.*'prediction' of image 'c02'"):
        run_calibrate(manifest, split, scores["val"], {"tune": {"calibration": "linear"}}, tmp_path)
