"""Tests of lesionflow.reports.pseudonyms and sharing, and of the run views they shape."""

import json
import re

import pandas as pd
import pytest

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.reports.pseudonyms import SALT_VARIABLE, ReportIds, pseudonym, report_ids
from lesionflow.reports.sharing import shareable_path, shareable_record
from lesionflow.reports.views import write_run_view

SALT = "a-long-secret-salt-of-the-lab"


def test_a_pseudonym_is_stable_salted_and_prefixed():
    shown = pseudonym("0042_1", SALT, "img-")
    assert re.fullmatch(r"img-[0-9a-f]{10}", shown)
    assert shown == pseudonym("0042_1", SALT, "img-")
    assert shown != pseudonym("0042_1", SALT + "x", "img-")
    assert shown != pseudonym("0042_2", SALT, "img-")


def test_pseudonymised_tables_change_only_their_ids_and_still_join():
    ids = ReportIds(SALT)
    per_image = pd.DataFrame(
        {"image_id": ["0001_1", "0002_1"], "subject": ["0001", "0002"], "dice": [0.5, 0.25]}
    )
    split = pd.DataFrame({"image_id": ["0002_1", "0001_1"], "split": ["test", "test"]})
    shown = ids.table(per_image)
    assert shown["image_id"].tolist() == [
        pseudonym("0001_1", SALT, "img-"),
        pseudonym("0002_1", SALT, "img-"),
    ]
    assert shown["subject"].tolist() == [pseudonym("0001", SALT, "sub-"), pseudonym("0002", SALT, "sub-")]
    assert shown["dice"].tolist() == [0.5, 0.25]
    joined = shown.merge(ids.table(split), on="image_id")
    assert len(joined) == 2
    assert ReportIds().table(per_image) is per_image


def test_a_pseudonymised_record_shows_ids_and_drops_the_paths_named_after_them():
    ids = ReportIds(SALT)
    record = {
        "n_images": 2,
        "images": [{"image_id": "0001_1", "subject": "0001", "case": "B", "dice": 0.0}],
        "files": {"val": [{"image_id": "0001_1", "mask": "results/export/k/val/masks/0001_1.png"}]},
    }
    shown = ids.record(record)
    assert shown["n_images"] == 2
    assert shown["images"] == [
        {
            "image_id": pseudonym("0001_1", SALT, "img-"),
            "subject": pseudonym("0001", SALT, "sub-"),
            "case": "B",
            "dice": 0.0,
        }
    ]
    assert shown["files"]["val"] == [{"image_id": pseudonym("0001_1", SALT, "img-")}]
    assert "0001" not in json.dumps(shown)


def test_maps_keyed_by_id_are_read_by_pseudonym():
    ids = ReportIds(SALT)
    maps = ids.keyed({"0001_1": 1, "0002_1": 2})
    assert maps[pseudonym("0002_1", SALT, "img-")] == 2
    assert len(maps) == 2


def test_pseudonymising_without_a_long_salt_names_the_variable_and_the_key():
    assert not report_ids(False, {}).pseudonymised
    with pytest.raises(LesionflowError, match=rf"analyse.pseudonymise.*{SALT_VARIABLE} is not set"):
        report_ids(True, {})
    with pytest.raises(LesionflowError, match="has 5 characters"):
        report_ids(True, {SALT_VARIABLE: "short"})
    assert report_ids(True, {SALT_VARIABLE: SALT}) == ReportIds(SALT)


def test_shared_paths_are_relative_inside_the_project_and_as_configured_outside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = str(tmp_path / "results" / "export" / "k" / "a.png")
    record = {"files": [{"mask": inside, "source": "/data/lab/a.png", "n": 1}]}
    assert shareable_record(record) == {
        "files": [{"mask": "results/export/k/a.png", "source": "/data/lab/a.png", "n": 1}]
    }
    assert shareable_path("/elsewhere/notebooks/x.ipynb", "notebooks/x.ipynb") == "notebooks/x.ipynb"


def _keyed_run(tmp_path):
    keyed = tmp_path / "results" / "evaluate" / "k"
    keyed.mkdir(parents=True)
    # Numbers as the evaluate stage writes them: pseudonymising must not reformat one digit.
    (keyed / "per_image_test.csv").write_text(
        'image_id,subject,dice,spacing\n0001_1,0001,0.07482598607888631,"[1.0, 1.0]"\n'
        '0002_1,0002,,"[1.0, 1.0]"\n'
    )
    (keyed / "export.json").write_text(
        json.dumps(
            {
                "counts": {"test": 1},
                "files": {"test": [{"image_id": "0001_1", "mask": str(keyed / "0001_1.png")}]},
            }
        )
    )
    return {
        "per_image_test": "results/evaluate/k/per_image_test.csv",
        "export": "results/evaluate/k/export.json",
    }


def test_a_pseudonymised_view_shows_no_id_and_keeps_every_number(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SALT_VARIABLE, SALT)
    record = {"run": "a", "settings": {"analyse": {"pseudonymise": True}}}
    write_run_view(record, _keyed_run(tmp_path), "results/runs/a")
    view = tmp_path / "results" / "runs" / "a"
    table = (view / "per_image_test.csv").read_text()
    assert "0001" not in table and "0002" not in table
    assert table.splitlines()[1] == (
        f'{pseudonym("0001_1", SALT, "img-")},{pseudonym("0001", SALT, "sub-")},'
        '0.07482598607888631,"[1.0, 1.0]"'
    )
    assert json.loads((view / "export.json").read_text())["files"]["test"] == [
        {"image_id": pseudonym("0001_1", SALT, "img-")}
    ]


def test_a_view_names_the_projects_files_relative_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run_view(
        {"run": "a", "settings": {"analyse": {"pseudonymise": False}}}, _keyed_run(tmp_path), "results/runs/a"
    )
    view = tmp_path / "results" / "runs" / "a"
    assert json.loads((view / "export.json").read_text())["files"]["test"] == [
        {"image_id": "0001_1", "mask": "results/evaluate/k/0001_1.png"}
    ]
    assert (view / "per_image_test.csv").read_text() == (
        tmp_path / "results/evaluate/k/per_image_test.csv"
    ).read_text()
