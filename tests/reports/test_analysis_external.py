"""Tests of the analysis notebook for a run whose predictions were imported from another tool
(source external: no train stage), of the source-aware parameter check and of the import record."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_analysis import FIGURES, write_tiny_run

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports import curves, prediction_source
from lesionflow.reports.notebook import run_notebook
from lesionflow.reports.notebook_inputs import parameters_for_source, require_parameters

NO_TRAINING = "no training in lesionflow; the epoch curves are those of the tool that made them."


def record_of(kind: str, folder: str = "/data/nnunet_out/Dataset042") -> dict:
    """An import record as the import_predictions stage writes it (test_infer.json)."""
    return {
        "subset": "test",
        "source": "external",
        "folder": folder,
        "label": 1,
        "kind": kind,
        "n_images": 8,
        "formats": {"0000_1": "nnunet npz+png"},
        "notes": ["2 images have no predicted lesion"],
    }


def external_run(folder, kind: str) -> dict:
    """The tiny run's parameters as an external run: no train stage, an import record instead."""
    parameters = write_tiny_run(folder)
    for name in ("metrics_by_epoch", "train_summary"):
        # Gone from disk too: the notebook must not read what an external run does not have.
        Path(parameters[name]).unlink()
        parameters[name] = None
    (folder / "test_infer.json").write_text(json.dumps(record_of(kind, str(folder / "nnunet_out"))))
    # One example per kind keeps the run short; sections 1-9 are all still drawn.
    parameters.update(source="external", predictions_record=str(folder / "test_infer.json"), n_examples=1)
    return parameters


def _executed_html(repo_root, tmp_path, parameters) -> str:
    out = tmp_path / "analyse"
    run_notebook(repo_root / "notebooks" / "analysis.ipynb", parameters, out, cwd=tmp_path)
    return (out / "analysis.html").read_text()


def _assert_every_declared_figure_is_drawn(figures_dir) -> None:
    for name in FIGURES:
        png = figures_dir / f"{name}.png"
        with Image.open(png) as image:
            colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
        assert len(colours) > 1, name  # not a blank image
        assert png.with_suffix(".svg").stat().st_size > 0, name


# ---------------------------------------------------------------- the executed notebook


def test_external_run_with_probabilities_states_no_training_and_saves_every_declared_figure(
    repo_root, tmp_path
):
    parameters = external_run(tmp_path / "run", "probabilities")
    html = _executed_html(repo_root, tmp_path, parameters)
    folder = tmp_path / "run" / "nnunet_out"
    assert f"Predictions imported from {folder} (probabilities): {NO_TRAINING}" in html
    assert "Imported predictions" in html and "2 images have no predicted lesion" in html
    assert "hard masks, not probabilities" not in html
    assert "3 Training curves" in html and "9 Best and worst cases" in html  # the rest is unchanged
    _assert_every_declared_figure_is_drawn(tmp_path / "run" / "figures")


def test_external_run_with_hard_masks_warns_at_the_top_that_only_the_area_was_tuned(repo_root, tmp_path):
    parameters = external_run(tmp_path / "run", "masks")
    html = _executed_html(repo_root, tmp_path, parameters)
    warning = html.index("hard masks, not probabilities")
    assert warning < html.index("1 Summary")  # before any metric
    assert "Thresholds cannot be tuned on hard masks" in html
    assert "only the minimum lesion area was tuned" in html and "every presence score is 0 or 1" in html
    assert f"(masks): {NO_TRAINING}" in html
    _assert_every_declared_figure_is_drawn(tmp_path / "run" / "figures")


def test_model_run_still_draws_its_epoch_curves_and_says_nothing_of_an_import(repo_root, tmp_path):
    parameters = write_tiny_run(tmp_path / "run")
    parameters.update(source="model", predictions_record=None)
    html = _executed_html(repo_root, tmp_path, parameters)
    assert NO_TRAINING not in html and "Imported predictions" not in html
    executed = json.loads((tmp_path / "analyse" / "analysis.ipynb").read_text())
    (curves_cell,) = [c for c in executed["cells"] if "epoch_curves" in "".join(c["source"])]
    assert [o["output_type"] for o in curves_cell["outputs"]] == ["display_data"]  # the figure only


def test_external_run_without_its_import_record_is_refused_naming_the_parameter(repo_root, tmp_path):
    parameters = external_run(tmp_path / "run", "probabilities")
    parameters["predictions_record"] = None
    with pytest.raises(
        LesionflowError, match=r"analysis notebook: parameter\(s\) not set: predictions_record \("
    ):
        _executed_html(repo_root, tmp_path, parameters)


# ---------------------------------------------------------------- the parameter check


def test_model_run_still_needs_its_training_tables_and_not_an_import_record():
    parameters = {
        "summary": "s.json",
        "metrics_by_epoch": None,
        "train_summary": None,
        "predictions_record": None,
    }
    message = r"^analysis notebook: parameter\(s\) not set: metrics_by_epoch, train_summary$"
    with pytest.raises(LesionflowError, match=message):
        require_parameters("analysis", parameters_for_source("analysis", "model", parameters))


def test_external_run_needs_its_import_record_and_not_the_training_tables():
    parameters = {
        "summary": "s.json",
        "metrics_by_epoch": None,
        "train_summary": None,
        "predictions_record": "r",
    }
    checked = parameters_for_source("analysis", "external", parameters)
    assert checked == {"source": "external", "summary": "s.json", "predictions_record": "r"}
    require_parameters("analysis", checked)


def test_unset_or_unknown_source_is_refused_naming_source():
    parameters = {"summary": "s.json", "metrics_by_epoch": None, "predictions_record": None}
    with pytest.raises(LesionflowError, match=r"parameter\(s\) not set: source$"):
        require_parameters("analysis", parameters_for_source("analysis", None, parameters))
    with pytest.raises(
        LesionflowError, match="analysis notebook: parameter source is 'nnunet'; expected one of"
    ):
        parameters_for_source("analysis", "nnunet", parameters)


# ---------------------------------------------------------------- the import record and the panel


@pytest.mark.parametrize(
    ("change", "named"),
    [({"kind": "logits"}, "kind is 'logits'"), ({"source": "model"}, "source is 'model'"),
     ({"folder": ""}, "folder is ''"), ({"notes": "none"}, "notes is 'none'")],
)  # fmt: skip
def test_import_record_with_a_wrong_field_is_refused_naming_file_and_field(tmp_path, change, named):
    path = tmp_path / "test_infer.json"
    path.write_text(json.dumps({**record_of("masks"), **change}))
    with pytest.raises(LesionflowError, match=f"test_infer.json: {named}"):
        prediction_source.read_predictions_record(path)


def test_import_record_is_read_with_its_folder_kind_and_notes(tmp_path):
    path = tmp_path / "test_infer.json"
    path.write_text(json.dumps(record_of("probabilities")))
    record = prediction_source.read_predictions_record(path)
    assert (record["folder"], record["kind"]) == ("/data/nnunet_out/Dataset042", "probabilities")
    assert prediction_source.source_text(record).endswith("- 2 images have no predicted lesion")


def test_no_curves_panel_holds_the_whole_statement_and_no_axes_or_lines():
    message = prediction_source.no_training_text(record_of("masks", "/a/very_long/path/" + "x" * 90))
    fig = curves.plot_no_curves(message, "No training in lesionflow")
    (ax,) = fig.get_axes()
    (text,) = ax.texts
    assert " ".join(text.get_text().split()) == message  # wrapped between words, nothing dropped
    assert "/a/very_long/path/" + "x" * 90 in text.get_text().split()  # the path is never cut
    assert not ax.axison and not ax.get_lines() and fig.get_suptitle() == "No training in lesionflow"
