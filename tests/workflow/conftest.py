"""Fixtures shared by the whole-pipeline tests: one finished tiny project, built once per session."""

import pytest

from .pipeline import snakemake, tiny_config, tiny_run, workflow_copy, write_config


@pytest.fixture(scope="session")
def code_copy(tmp_path_factory):
    """A copy of the workflow and package that the code-edit tests may change."""
    return workflow_copy(tmp_path_factory.mktemp("code"))


@pytest.fixture(scope="session")
def finished(tmp_path_factory, code_copy):
    """A completed pipeline with a baseline and a flip-TTA run sharing its training, run from
    a copy of the code (so that tests may edit it)."""
    workdir = tmp_path_factory.mktemp("incremental")
    config = tiny_config({"base": tiny_run(), "tta": tiny_run(infer={"tta": ["identity", "hflip"]})})
    write_config(workdir, config)
    snakemake(workdir, repo=code_copy)
    return workdir, config
