"""Tests of the per-axis table cells: written as JSON lists, parsed back the same, errors named."""

import numpy as np
import pandas as pd
import pytest

from lesionflow.data.axis_columns import axis_cell, axis_values, read_axis_columns
from lesionflow.pipeline.errors import LesionflowError


def test_cells_are_json_lists_with_integers_kept_integers():
    assert axis_cell((2848, 4288)) == "[2848, 4288]"
    assert axis_cell(np.array([3, 4, 5])) == "[3, 4, 5]"
    assert axis_cell([0.8, 1.0]) == "[0.8, 1.0]"


def test_a_written_cell_reads_back_as_the_same_values():
    for values in [(2848, 4288), (12, 256, 256), (0.5, 0.25, 2.0)]:
        assert axis_values(axis_cell(values)) == values


def test_reading_a_table_parses_only_its_per_axis_columns(tmp_path):
    table = pd.DataFrame({"image_id": ["a"], "shape": [axis_cell((4, 5, 6))], "scale": [0.5]})
    table.to_csv(tmp_path / "images.csv", index=False)
    parsed = read_axis_columns(pd.read_csv(tmp_path / "images.csv"))
    assert parsed.loc[0, "shape"] == (4, 5, 6) and parsed.loc[0, "scale"] == 0.5
    assert parsed.loc[0, "image_id"] == "a"


@pytest.mark.parametrize("cell", ["2848x4288", "[1, \"a\"]", "{}", 12, "[true]"])
def test_a_bad_cell_names_the_column_and_the_value(cell):
    with pytest.raises(LesionflowError, match=r"crop_start: expected a list with one number per axis"):
        axis_values(cell, "crop_start")
