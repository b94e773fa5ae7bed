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


# Fixtures that several test modules share, session-scoped and costly: those modules must run in
# one pytest-xdist worker, or each worker would build its own project (and test_incremental edits
# the shared code copy, which must not happen while another module's Snakemake reads it).
SHARED_PROJECT_FIXTURES = {"finished", "code_copy"}
SHARED_PROJECT_GROUP = "finished-project"


def _module_of(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test` runs ``-n 2 --dist loadgroup --no-loadscope-reorder``),
    send each test module to one worker whole, so that its module fixtures are built once, and the
    modules sharing the finished project to the same one; and start the whole-pipeline modules
    first, so that the long ones do not end up alone at the end while the other worker idles."""
    if config.getoption("dist", "no") == "no":
        return
    sharing = {_module_of(i) for i in items if SHARED_PROJECT_FIXTURES & set(i.fixturenames)}
    for item in items:
        module = _module_of(item)
        item.add_marker(pytest.mark.xdist_group(SHARED_PROJECT_GROUP if module in sharing else module))
    # Stable sort: the shared project's modules, then the other slow ones, then the rest, each in
    # collection order (every worker must collect the same order).
    items.sort(key=lambda i: (_module_of(i) not in sharing, i.get_closest_marker("slow") is None))
