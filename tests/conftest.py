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
def ctx():
    return Context.serial()


@pytest.fixture(scope="session")
def connectome():
    return load_connectome()
