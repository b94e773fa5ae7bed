"""One config file owns a project folder's leaderboard and run views; another is refused before any job."""

import json

import pytest

from lesionflow.pipeline.errors import LesionflowError
from lesionflow.pipeline.results_owner import OWNER_FILE, claim_results, config_names, recorded_owner


def test_the_first_config_claims_the_folder_by_its_relative_name_and_may_run_again(tmp_path):
    claim_results(tmp_path, [tmp_path / "config.yaml"])
    assert json.loads((tmp_path / OWNER_FILE).read_text()) == {"configfiles": ["config.yaml"]}
    claim_results(tmp_path, ["config.yaml"])  # the same file, spelt relative: no error
    assert recorded_owner(tmp_path) == ["config.yaml"]


def test_another_config_file_is_refused_in_one_line_naming_both(tmp_path):
    claim_results(tmp_path, ["config.yaml"])
    with pytest.raises(LesionflowError) as refused:
        claim_results(tmp_path, ["other.yaml"])
    message = str(refused.value)
    assert "\n" not in message and "belong to config.yaml" in message and "running other.yaml" in message
    assert "--directory" in message and OWNER_FILE.as_posix() in message
    assert recorded_owner(tmp_path) == ["config.yaml"]  # the owner is not changed by a refusal


def test_a_moved_project_keeps_its_owner_and_an_outside_config_is_named_absolute(tmp_path):
    first, moved = tmp_path / "first", tmp_path / "moved"
    first.mkdir()
    claim_results(first, [first / "config.yaml"])
    first.rename(moved)
    claim_results(moved, [moved / "config.yaml"])
    outside = tmp_path / "configs" / "study.yaml"
    assert config_names([outside], moved) == [str(outside.resolve())]


def test_an_unreadable_owner_record_is_named(tmp_path):
    (tmp_path / OWNER_FILE).parent.mkdir()
    (tmp_path / OWNER_FILE).write_text("{not json")
    with pytest.raises(LesionflowError, match="results-owner.json cannot be read"):
        claim_results(tmp_path, ["config.yaml"])
