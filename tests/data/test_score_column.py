"""Tests of score parsing, the score settings, and score bins and their labels."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from schema_settings import split_section, top_level_section

from lesionflow.data.score_column import (
    SCORE_KEYS,
    check_score_bins,
    check_score_columns,
    parse_score,
    score_bin_labels,
    score_bins,
    score_settings,
    score_statistics,
    score_values,
)
from lesionflow.pipeline.errors import LesionflowError


def data_section(**given) -> dict:
    """The score keys of the data section, schema defaults filled, ``given`` on top."""
    section = top_level_section("data", **given)
    return {key: section[key] for key in SCORE_KEYS}


@pytest.mark.parametrize(
    ("cell", "value"), [("3", 3.0), (" 12.5 ", 12.5), ("1e1", 10.0), ("-0", 0.0), ("34", 34.0), (".5", 0.5)]
)
def test_plain_numbers_inside_the_range_parse_including_the_bounds(cell, value):
    assert parse_score(cell, (0.0, 34.0)) == value


@pytest.mark.parametrize(
    ("cell", "what"),
    [
        ("", "found an empty cell"),
        ("  ", "found an empty cell"),
        ("N/A", "found 'N/A', which marks a missing value"),
        ("NA", "marks a missing value"),
        ("nan", "marks a missing value"),
        ("NaN", "marks a missing value"),
        ("abc", "expected a number, got 'abc'"),
        ("3,5", "expected a number, got '3,5'"),
        ("1_000", "expected a number, got '1_000'"),
        ("inf", "expected a finite number, got 'inf'"),
        ("-Infinity", "expected a finite number"),
        ("1e999", "expected a finite number"),
        ("35", "score 35 is outside data.score_range [0, 34]"),
        ("-0.5", "score -0.5 is outside data.score_range [0, 34]"),
    ],
)
def test_a_bad_score_cell_says_what_is_wrong(cell, what):
    with pytest.raises(ValueError, match=re.escape(what)):
        parse_score(cell, (0.0, 34.0))


def test_without_a_range_any_finite_number_is_a_score():
    assert parse_score("-1000.25", None) == -1000.25
    with pytest.raises(ValueError, match="finite"):
        parse_score("inf", None)


def test_score_values_gives_nan_and_the_reason_at_each_bad_position():
    values, problems = score_values(["1", "", "x", "4"], None)
    np.testing.assert_array_equal(values, [1.0, np.nan, np.nan, 4.0])
    assert sorted(problems) == [1, 2]
    assert "empty" in problems[1] and "'x'" in problems[2]


def test_score_settings_are_required_and_checked_naming_the_key():
    assert score_settings(data_section()).column is None
    given = {"score_column": "loes", "score_range": [0, 34], "invalid_scores": "exclude"}
    settings = score_settings(data_section(**given))
    assert settings.column == "loes" and settings.score_range == (0.0, 34.0) and settings.excludes
    with pytest.raises(LesionflowError, match=r"missing data\.score_range, data\.invalid_scores"):
        score_settings({"score_column": "loes"})
    with pytest.raises(LesionflowError, match=r"data\.score_range: expected null or \[lowest, highest\]"):
        score_settings(data_section(score_range=[34, 0]))
    with pytest.raises(LesionflowError, match=r"data\.invalid_scores: expected one of error, exclude"):
        score_settings({**data_section(), "invalid_scores": "drop"})
    with pytest.raises(LesionflowError, match=r"data\.score_column"):
        score_settings({**data_section(), "score_column": ""})


def test_a_missing_score_column_is_one_line_naming_the_manifest_the_column_and_the_columns_found():
    with pytest.raises(LesionflowError) as caught:
        check_score_columns(Path("m.csv"), ["image", "mask", "subject", "loes"], "loes_score")
    assert str(caught.value) == (
        "manifest m.csv: no column 'loes_score' (data.score_column); found columns image, mask, subject, loes"
    )


def test_a_score_column_that_is_not_the_score_column_is_refused_as_reserved():
    with pytest.raises(LesionflowError, match=r"column 'score' is reserved .* \(here 'loes'\)"):
        check_score_columns(Path("m.csv"), ["image", "score", "loes"], "loes")
    with pytest.raises(LesionflowError, match=r"column 'score' is reserved .* \(here None\)"):
        check_score_columns(Path("m.csv"), ["image", "score"], None)
    check_score_columns(Path("m.csv"), ["image", "score"], "score")  # the score column itself is fine


def test_score_bin_labels_are_half_open_with_open_ends():
    assert score_bin_labels([2, 5, 10]) == ["<2", "[2, 5)", "[5, 10)", ">=10"]
    assert score_bin_labels([0.5]) == ["<0.5", ">=0.5"]
    assert score_bin_labels(split_section()["score_bins"]) == ["<2", "[2, 5)", "[5, 10)", ">=10"]


def test_a_score_on_a_cut_falls_in_the_bin_above_it():
    values = np.array([0.0, 1.999, 2.0, 4.9, 5.0, 9.99, 10.0, 34.0])
    assert score_bins(values, [2, 5, 10]) == [
        "<2", "<2", "[2, 5)", "[2, 5)", "[5, 10)", "[5, 10)", ">=10", ">=10",
    ]


@pytest.mark.parametrize("cuts", [[], [5, 2], [2, 2], ["2"], [1, float("inf")], None])
def test_score_bins_that_do_not_increase_are_refused_naming_the_key(cuts):
    with pytest.raises(LesionflowError, match=r"^split\.score_bins: expected a non-empty list of increasing"):
        check_score_bins(cuts, "split.score_bins")


def test_score_statistics_match_numpy_and_are_none_without_scores():
    values = np.array([0.0, 3.0, 3.0, 20.0])
    assert score_statistics(values) == {"n": 4, "min": 0.0, "median": 3.0, "mean": 6.5, "max": 20.0}
    assert score_statistics(np.array([])) == {"n": 0, "min": None, "median": None, "mean": None, "max": None}
