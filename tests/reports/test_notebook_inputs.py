"""Tests of lesionflow.reports.notebook_inputs: tables checked for their columns, parameters for None."""

import pandas as pd
import pytest

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import notebook_inputs


def test_read_table_names_the_file_and_missing_column(tmp_path):
    path = tmp_path / "per_image_test.csv"
    pd.DataFrame({"image_id": ["0042_1"], "dice": [0.5]}).to_csv(path, index=False)
    with pytest.raises(LesionflowError, match="per_image_test.csv.*gt_pixels, pred_pixels"):
        notebook_inputs.read_table(path, "per_image")
    pd.DataFrame(
        {"image_id": ["0042"], "dice": [0.5], "gt_pixels": [1], "pred_pixels": [1]}
    ).to_csv(path, index=False)
    assert notebook_inputs.read_table(path, "per_image")["image_id"].tolist() == ["0042"]


def test_require_parameters_names_the_notebook_and_every_unset_parameter():
    notebook_inputs.require_parameters("analysis", {"summary": "summary.json", "dice_bands": [0.4, 0.6]})
    message = r"^analysis notebook: parameter\(s\) not set: summary, n_examples$"
    unset = {"summary": None, "dice_bands": [0.4, 0.6], "n_examples": None}
    with pytest.raises(LesionflowError, match=message):
        notebook_inputs.require_parameters("analysis", unset)
