"""Tests of notebooks/regression.ipynb: executed end to end with papermill on a tiny regression run."""

import json

import nbformat
import numpy as np
import pandas as pd
import pytest
from figure_files import not_blank
from parameter_cells import notebook_parameters

from lesionflow.evaluation.regression import range_labels, regression_summary
from lesionflow.io.geometry import Geometry
from lesionflow.io.readers import write_image, write_mask
from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.labels import interval_text
from lesionflow.reports.notebook import run_notebook

FIGURES = (
    "score_scatter",
    "residuals_by_range",
    "bland_altman",
    "visit_consistency",
    "training_curves",
    "worst_cases",
)
PARAMETERS = {
    "title",
    "per_case_val",
    "per_case_test",
    "summary",
    "calibration",
    "metrics_by_epoch",
    "train_summary",
    "split_summary",
    "manifest",
    "figures_dir",
    "n_examples",
    "high_score",
    "pseudonymise",
}
RANGES = [0, 2, 5, 10, 35]
BOOTSTRAP = {"n_resamples": 200, "seed": 0, "confidence": 0.95}
SHAPE, SPACING = (16, 14, 10), (1.0, 1.0, 2.0)


def _volumes(folder, image_id: str, score: float, rng) -> tuple[str, str]:
    """A 16 x 14 x 10 NIfTI volume (2 mm slices) whose lesion grows with the score (none at 0)."""
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, dtype=bool)
    half = int(round(score / 6))
    if score > 0:
        mask[8 - half - 1 : 8 + half + 1, 5 - half // 2 - 1 : 5 + half // 2 + 1, 4:7] = True
    image[mask] += 80
    geometry = Geometry(SHAPE, SPACING, np.diag([*SPACING, 1.0]))
    paths = folder / f"{image_id}_t1.nii.gz", folder / f"{image_id}_mask.nii.gz"
    write_image(paths[0], image[None], geometry)
    write_mask(paths[1], mask, geometry)
    return str(paths[0]), str(paths[1])


def _per_case(ids, subjects, visits, true, raw, calibration) -> pd.DataFrame:
    predicted = calibration["intercept"] + calibration["slope"] * np.asarray(raw)
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "subject": subjects,
            "visit": visits,
            "true": true,
            "predicted_raw": raw,
            "predicted": predicted,
        }
    )
    frame["residual"] = frame["predicted"] - frame["true"]
    frame["abs_error"] = frame["residual"].abs()
    frame["range"] = range_labels(frame["true"].to_numpy(), RANGES)
    return frame


def _summary(frame: pd.DataFrame) -> dict:
    return regression_summary(
        frame["true"],
        frame["predicted"],
        frame["subject"].tolist(),
        RANGES,
        **BOOTSTRAP,
        config_key="evaluate.bootstrap",
    )


def write_tiny_regression_run(folder) -> dict:
    """Every artifact the regression notebook reads, for 12 test cases (4 subjects seen twice,
    high scores under-predicted) and 8 validation cases with tiny NIfTI volumes; its parameters."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    calibration = {
        "method": "linear",
        "intercept": 0.4,
        "slope": 1.05,
        "fitted_on": "val",
        "n_val": 8,
        "val_rmse_before": 2.6,
        "val_rmse_after": 2.3,
    }
    tables, rows = {}, []
    for subset, n_subjects, repeat in (("test", 8, 4), ("val", 6, 2)):
        subjects = [f"{subset}{i:02d}" for i in range(n_subjects) for _ in range(2 if i < repeat else 1)]
        visits = [str(v) for i in range(n_subjects) for v in ((1, 2) if i < repeat else ("",))]
        ids = [f"{s}_{v or 1}" for s, v in zip(subjects, visits, strict=True)]
        true = np.round(rng.uniform(0, 26, len(ids)), 1)
        raw = np.clip(0.7 * true + 1.0 + rng.normal(0, 1.2, len(ids)), 0, None)
        tables[subset] = _per_case(ids, subjects, visits, true, raw, calibration)
        for image_id, subject, visit, score in zip(ids, subjects, visits, true, strict=True):
            image, mask = _volumes(folder, image_id, score, rng)
            rows.append(
                {
                    "image_id": image_id,
                    "subject": subject,
                    "image": image,
                    "mask": mask,
                    "score": score,
                    "visit": visit,
                }
            )
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    for subset, frame in tables.items():
        frame.to_csv(folder / f"per_case_{subset}.csv", index=False)
    summary = {
        "task": "regression",
        "val": _summary(tables["val"]),
        "test": _summary(tables["test"]),
        "calibration": calibration,
        "score_ranges": [float(c) for c in RANGES],
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "calibration.json").write_text(json.dumps(calibration))
    epochs = np.arange(1, 7)
    pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 40 / epochs,
            "val_loss": 45 / epochs + epochs,
            "train_rmse": 7 / epochs**0.5,
            "val_rmse": 8 / epochs**0.5 + 0.2 * epochs,
            "val_srmse": [0.9, 0.7, 0.6, 0.55, 0.58, 0.6],
            "val_mae": 6 / epochs**0.5,
            "val_pearson": [0.3, 0.5, 0.6, 0.7, 0.7, 0.68],
            "lr": 1e-3,
            "seconds": 2.0,
        }
    ).to_csv(folder / "metrics_by_epoch.csv", index=False)
    (folder / "train_summary.json").write_text(
        json.dumps({"task": "regression", "best_epoch": 4, "best_val_srmse": 0.55})
    )
    pd.DataFrame(
        {
            "split": ["train", "val", "test"],
            "n": [20, 8, 12],
            "lesion_positive": [18, 7, 11],
            "score_mean": [11.0, 12.1, 13.0],
            "score_median": [10.0, 11.0, 12.5],
        }
    ).to_csv(folder / "split_summary.csv", index=False)
    files = (
        "per_case_val.csv",
        "per_case_test.csv",
        "summary.json",
        "calibration.json",
        "metrics_by_epoch.csv",
        "train_summary.json",
        "split_summary.csv",
        "manifest.csv",
    )
    parameters = {name.split(".")[0]: str(folder / name) for name in files}
    parameters.update(
        title="Tiny regression run", figures_dir=str(folder / "figures"), n_examples=3, high_score=10,
        pseudonymise=False,
    )
    return parameters


def test_notebook_writes_every_figure_and_the_metrics_and_statements(repo_root, tmp_path):
    parameters = write_tiny_regression_run(tmp_path / "run")
    out = tmp_path / "analyse"
    run_notebook(repo_root / "notebooks" / "regression.ipynb", parameters, out, cwd=tmp_path)
    executed = nbformat.read(out / "regression.ipynb", as_version=4)
    assert all(o.get("output_type") != "error" for c in executed.cells for o in c.get("outputs", []))
    for name in FIGURES:
        png = tmp_path / "run" / "figures" / f"{name}.png"
        assert not_blank(png), name  # not a blank image
        assert png.with_suffix(".svg").stat().st_size > 0, name
    html = (out / "regression.html").read_text()
    test = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]["overall"]
    for section in (
        "1 Metrics",
        "2 Statements",
        "3 Calibration and split",
        "4 Predicted vs true",
        "5 Residuals by range",
        "6 Bland-Altman",
        "7 Visit consistency",
        "8 Training curves",
        "9 Worst cases",
    ):
        assert section in html
    assert "Tiny regression run" in html and "def show(" not in html
    assert interval_text(test["srmse"], test["srmse_ci_low"], test["srmse_ci_high"]) in html
    assert "high scores (&gt;= 10) are under-predicted by" in html
    assert html.count("Reading:") == len(FIGURES)


def test_notebook_parameters_cell_names_every_parameter_and_restates_no_default(repo_root):
    parameters = notebook_parameters(repo_root / "notebooks" / "regression.ipynb")
    assert set(parameters) == PARAMETERS
    assert all(value is None for name, value in parameters.items() if name != "title")


def test_notebook_without_a_setting_names_each_missing_one(repo_root, tmp_path):
    parameters = write_tiny_regression_run(tmp_path / "run")
    del parameters["high_score"], parameters["n_examples"]
    with pytest.raises(
        LesionflowError, match=r"regression notebook: parameter\(s\) not set: n_examples, high_score"
    ):
        run_notebook(repo_root / "notebooks" / "regression.ipynb", parameters, tmp_path / "out", cwd=tmp_path)
