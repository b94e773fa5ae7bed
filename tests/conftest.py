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


# The test modules that share the session's finished project (the `finished` and `code_copy`
# fixtures of tests/workflow/conftest.py): under pytest-xdist they must run in one worker, or each
# worker would build its own project, and test_incremental edits the shared code copy while it runs.
SHARED_PROJECT_FIXTURES = {"finished", "code_copy"}
SHARED_PROJECT_MODULES = frozenset(
    f"tests/workflow/{name}.py" for name in ("test_faults", "test_incremental", "test_privacy", "test_review")
)
SHARED_PROJECT_GROUP = "finished-project"


def _module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to under xdist: its module, or the finished project's group."""
    module = _module_of(nodeid)
    return SHARED_PROJECT_GROUP if module in SHARED_PROJECT_MODULES else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under ``--dist loadscope`` (`make test`), schedule whole modules, with the modules sharing
    the finished project as one unit (xdist_group marks do not work with pytest 9.2's node ids)."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: check that every module using the finished project is one of
    :data:`SHARED_PROJECT_MODULES`, and start the whole-pipeline modules first (the finished
    project's first of all), so that the long ones do not end up alone at the end while the other
    worker idles. `make test` keeps this order (``--no-loadscope-reorder``)."""
    if not hasattr(config, "workerinput"):
        return
    for item in items:
        if (
            SHARED_PROJECT_FIXTURES & set(item.fixturenames)
            and _module_of(item.nodeid) not in SHARED_PROJECT_MODULES
        ):
            raise pytest.UsageError(
                f"{_module_of(item.nodeid)} uses the finished project: "
                "add it to SHARED_PROJECT_MODULES in tests/conftest.py"
            )
    # A stable sort, so that every worker collects the same order.
    items.sort(
        key=lambda i: (work_unit(i.nodeid) != SHARED_PROJECT_GROUP, i.get_closest_marker("slow") is None)
    )
