"""Tests of lesionflow.reports.score_statements: bias statements backed by their intervals, the metrics
sentences and table, calibration, Bland-Altman and least-squares numbers, and reading the tables."""

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lesionflow.evaluation.bootstrap import Resampler
from lesionflow.evaluation.regression import range_labels, regression_summary
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import score_statements as st

RANGES = [0, 2, 5, 10, 35]
BOOTSTRAP = {"n_resamples": 500, "seed": 1, "confidence": 0.95}


def table(true, residual, subjects) -> pd.DataFrame:
    true = np.asarray(true, dtype=float)
    frame = pd.DataFrame(
        {
            "image_id": [f"i{k:02d}" for k in range(true.size)],
            "subject": subjects,
            "visit": "",
            "true": true,
            "predicted": true + np.asarray(residual, dtype=float),
        }
    )
    frame["residual"] = frame["predicted"] - frame["true"]
    frame["abs_error"] = frame["residual"].abs()
    frame["range"] = range_labels(true, RANGES)
    return frame


def under_predicted_highs() -> pd.DataFrame:
    """Six high scores of six subjects under-predicted by 3.1 on average; four in [2, 5) around 0;
    two cases in [5, 10) (too few), none in [0, 2)."""
    true = [12, 15, 20, 25, 11, 30, 2.5, 3, 4, 4.5, 6, 7]
    residual = [-3.0, -3.5, -2.5, -3.2, -2.8, -3.6, 0.5, -0.4, 0.3, -0.2, -4.0, -5.0]
    return table(true, residual, [f"s{k}" for k in range(12)])


def resampler(frame) -> Resampler:
    return st.case_resampler(frame, BOOTSTRAP)


def looped_interval(frame, rows, boot: Resampler) -> tuple[float, float]:
    """The percentile interval of the mean residual of ``rows``, resample by resample (no matrix product)."""
    index = {subject: k for k, subject in enumerate(boot.subjects)}
    chosen = frame[rows]
    means = []
    for counts in boot.counts:
        weights = np.array([counts[index[s]] for s in chosen["subject"]], dtype=float)
        if weights.sum() > 0:
            means.append(np.sum(weights * chosen["residual"]) / weights.sum())
    return tuple(np.percentile(means, [2.5, 97.5]))


# ---------------------------------------------------------------- bias


def test_under_prediction_of_high_scores_is_stated_with_its_sign_number_and_interval():
    frame = under_predicted_highs()
    boot = resampler(frame)
    text = st.high_score_statement(frame, 10, boot)
    low, high = looped_interval(frame, frame["true"] >= 10, boot)
    assert high < 0
    assert text.startswith(
        f"high scores (>= 10) are under-predicted by 3.10 on average [{-high:.2f}, {-low:.2f}]"
    )
    assert "n = 6 images of 6 subjects" in text


def test_over_prediction_is_called_over_predicted_with_a_positive_interval():
    frame = under_predicted_highs().assign(residual=lambda f: -f["residual"])
    text = st.high_score_statement(frame, 10, resampler(frame))
    assert text.startswith("high scores (>= 10) are over-predicted by 3.10 on average [")


def test_a_bias_whose_interval_contains_zero_is_no_systematic_bias():
    frame = under_predicted_highs()
    (low_range,) = [
        s
        for s in st.range_bias_statements(frame, ["[0, 2)", "[2, 5)"], resampler(frame))
        if s.startswith("scores in [2, 5)")
    ]
    assert "no systematic bias: the interval contains 0" in low_range
    assert "predicted" not in low_range.split(":")[0]


def test_fewer_than_three_cases_are_too_few_to_judge_however_large_their_bias():
    frame = under_predicted_highs()
    statements = st.range_bias_statements(frame, ["[0, 2)", "[5, 10)"], resampler(frame))
    assert statements[1] == "scores in [5, 10): 2 case(s) of 2 subject(s), fewer than 3: too few to judge."
    assert statements[0] == "scores in [0, 2): 0 case(s) of 0 subject(s), fewer than 3: too few to judge."
    assert not any("under-predicted" in s for s in statements)


@pytest.mark.parametrize("seed", range(12))
def test_no_bias_statement_claims_more_than_its_interval_supports(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 25))
    frame = table(
        rng.uniform(0, 34, n),
        rng.normal(rng.uniform(-2, 2), 2, n),
        [f"s{k}" for k in rng.integers(0, max(2, n // 2), n)],
    )
    boot = resampler(frame)
    labels = ["[0, 2)", "[2, 5)", "[5, 10)", "[10, 35]"]
    for label, text in zip(labels, st.range_bias_statements(frame, labels, boot), strict=True):
        rows = (frame["range"] == label).to_numpy()
        if rows.sum() < 3:
            assert "too few to judge" in text
            continue
        low, high = looped_interval(frame, rows, boot)
        numbers = [float(x) for x in re.findall(r"-?\d+\.\d+", text.split("on average")[-1])[:2]]
        if "under-predicted" in text:
            assert high < 0 and numbers == pytest.approx([-high, -low], abs=0.006)
        elif "over-predicted" in text:
            assert low > 0 and numbers == pytest.approx([low, high], abs=0.006)
        else:
            assert "no systematic bias" in text and low <= 0 <= high


# ---------------------------------------------------------------- metrics


def summary_of(frame) -> dict:
    return regression_summary(
        frame["true"],
        frame["predicted"],
        frame["subject"].tolist(),
        RANGES,
        **BOOTSTRAP,
        config_key="evaluate.bootstrap",
    )


def test_overall_statement_states_every_metric_with_its_interval_and_the_p_values():
    frame = under_predicted_highs()
    block = summary_of(frame)["overall"]
    text = st.overall_statement("test", block)
    assert text.startswith("test (n = 12): sRMSE ")
    for name, label in st.METRIC_LABELS.items():
        assert (
            f"{label} {block[name]:.3f} [{block[f'{name}_ci_low']:.3f}, {block[f'{name}_ci_high']:.3f}]"
            in text
        )
    assert "(p < 0.001)" in text and "r's interval lies above 0" in text


def test_overall_statement_with_r_interval_across_zero_claims_no_correlation():
    block = {
        "n": 5,
        "pearson_r": 0.2,
        "pearson_r_ci_low": -0.3,
        "pearson_r_ci_high": 0.6,
        "pearson_p": 0.41,
        "srmse": None,
    }
    text = st.overall_statement("test", block)
    assert "r's interval contains 0: no evidence of a correlation" in text
    assert "Pearson r 0.200 [-0.300, 0.600] (p = 0.410)" in text and "sRMSE undefined" in text


def test_worst_range_is_the_highest_mae_among_ranges_of_three_cases_or_more():
    by_range = [
        {"range": "[0, 2)", "n": 2, "mae": 9.0, "mae_ci_low": 8.0, "mae_ci_high": 10.0},
        {"range": "[2, 5)", "n": 4, "mae": 1.0, "mae_ci_low": 0.5, "mae_ci_high": 1.5},
        {"range": "[10, 35]", "n": 3, "mae": 3.0, "mae_ci_low": 2.0, "mae_ci_high": 4.0},
    ]
    text = st.worst_range_statement(by_range)
    assert text.startswith(
        "the worst MAE is in range [10, 35]: 3.000 [2.000, 4.000] (n = 3), against [2, 5) 1.00"
    )
    assert "not judged" in st.worst_range_statement(by_range[:1])


def test_statements_of_a_run_come_in_reading_order_with_every_range():
    frame = under_predicted_highs()
    summary = {"test": summary_of(frame), "calibration": {"method": "none", "n_val": 8}}
    statements = st.score_statements(frame, summary, 10)
    assert statements[0].startswith("test (n = 12)")
    assert statements[1].startswith("high scores (>= 10) are under-predicted by 3.10")
    assert [s.split(":")[0].split(" are ")[0] for s in statements[2:6]] == [
        "scores in [0, 2)",
        "scores in [2, 5)",
        "scores in [5, 10)",
        "scores in [10, 35]",
    ]
    assert statements[6].startswith("the worst MAE is in range [10, 35]")
    assert statements[-1].startswith("calibration: none; predictions are the raw model output")


def test_calibration_statement_gives_the_line_fitted_on_validation():
    calibration = {
        "method": "linear",
        "intercept": -0.5,
        "slope": 1.25,
        "fitted_on": "val",
        "n_val": 20,
        "val_rmse_before": 3.0,
        "val_rmse_after": 2.5,
    }
    text = st.calibration_statement(calibration)
    assert text.startswith(
        "calibration: linear, fitted on val (n = 20): true ≈ -0.50 + 1.250 × raw prediction"
    )
    assert "stretches the spread" in text and "val RMSE 3.00 before, 2.50 after" in text


def test_metrics_table_has_a_row_per_subset_and_range_and_shows_undefined_as_undefined():
    frame = under_predicted_highs()
    section = summary_of(frame)
    rows = st.metrics_table({"val": section, "test": section})
    assert len(rows) == 2 * (1 + len(RANGES) - 1)
    overall = rows[(rows["subset"] == "test") & (rows["scope"] == "overall")].iloc[0]
    block = section["overall"]
    assert overall["MAE"] == f"{block['mae']:.3f} [{block['mae_ci_low']:.3f}, {block['mae_ci_high']:.3f}]"
    assert overall["Pearson r p"] == "<0.001"
    two = rows[(rows["subset"] == "val") & (rows["scope"] == "[5, 10)")].iloc[0]
    assert two["n"] == 2 and two["Pearson r"] == "undefined"  # r needs 3 cases


# ---------------------------------------------------------------- numbers


def test_agreement_limits_are_the_mean_plus_minus_1_96_sample_sd():
    frame = under_predicted_highs()
    agreement = st.agreement_limits(frame)
    diff = frame["residual"].to_numpy()
    assert agreement.bias == pytest.approx(diff.mean())
    assert agreement.sd == pytest.approx(np.std(diff, ddof=1))
    assert (agreement.low, agreement.high) == pytest.approx(
        (diff.mean() - 1.96 * agreement.sd, diff.mean() + 1.96 * agreement.sd)
    )
    assert math.isnan(st.agreement_limits(frame.head(1)).sd)


def test_least_squares_line_is_scipys_with_the_t_interval_of_its_slope():
    frame = under_predicted_highs()
    line = st.least_squares_line(frame["true"], frame["predicted"], 0.9)
    fit = stats.linregress(frame["true"], frame["predicted"])
    half = stats.t.ppf(0.95, len(frame) - 2) * fit.stderr
    assert (line.intercept, line.slope) == pytest.approx((fit.intercept, fit.slope))
    assert (line.slope_low, line.slope_high) == pytest.approx((fit.slope - half, fit.slope + half))
    assert st.least_squares_line([1, 1, 1], [1, 2, 3], 0.9) is None
    assert st.least_squares_line([1, 2], [1, 2], 0.9) is None


# ---------------------------------------------------------------- reading


def test_read_per_case_keeps_ids_as_text_and_empty_visits_empty(tmp_path):
    path = tmp_path / "per_case_test.csv"
    under_predicted_highs().assign(image_id="0042", subject="007").to_csv(path, index=False)
    frame = st.read_per_case(path)
    assert frame["image_id"].iloc[0] == "0042" and frame["subject"].iloc[0] == "007"
    assert (frame["visit"] == "").all()
    assert frame["range"].iloc[0] == "[10, 35]"


def test_read_per_case_names_the_missing_columns(tmp_path):
    path = tmp_path / "per_case_test.csv"
    under_predicted_highs().drop(columns=["residual", "range"]).to_csv(path, index=False)
    with pytest.raises(LesionflowError, match=r"per_case_test.csv: .* column\(s\) residual, range"):
        st.read_per_case(path)
