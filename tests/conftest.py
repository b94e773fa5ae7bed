"""Shared fixtures: the repository root and the optional shared data folder."""

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; tests that need it skip when it is absent."""
    path = REPO_ROOT.parent / "shared"
    if not path.is_dir():
        pytest.skip("../shared is absent")
    return path


@pytest.fixture(scope="session", autouse=True)
def planning_cache(tmp_path_factory) -> Path:
    """Planning's module summaries (a per-user cache) in a session folder, not the user's home:
    every Snakemake the tests start inherits it, and shares it as a user's projects would."""
    folder = tmp_path_factory.mktemp("lesionflow-cache")
    previous = os.environ.get("LESIONFLOW_CACHE_DIR")
    os.environ["LESIONFLOW_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("LESIONFLOW_CACHE_DIR", None)
    else:
        os.environ["LESIONFLOW_CACHE_DIR"] = previous
