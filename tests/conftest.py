"""Fixtures, and the ``slow`` marker: slow tests run only with ``--runslow`` (CI passes it)."""

import pytest

from dtb.connectome.connectome import load_connectome
from dtb.context import Context
from helpers import collect, small_pd14, small_wholebrain, write_connectome  # noqa: F401 (older imports)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run the tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """``small_run(*overrides) -> (path, summary)``: a finished ``dtb run`` (one process, no progress bars) with
    those config overrides, made once per test session and shared; tests must not change the file."""
    from dtb import driver
    from dtb.config import load_config

    cache = {}

    def make(*overrides):
        if overrides not in cache:
            out = tmp_path_factory.mktemp("small_run") / "run.h5"
            summary = driver.run(load_config(overrides=["recording.progress=false", *overrides]), out,
                                 ctx=Context.serial(threads=1))
            cache[overrides] = (out, summary)
        return cache[overrides]

    return make


@pytest.fixture(scope="session")
def ctx():
    return Context.serial()


@pytest.fixture(scope="session")
def connectome():
    return load_connectome()
