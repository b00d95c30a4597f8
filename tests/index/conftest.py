"""Fixtures shared by the index tests: an index built from the shared statnn run."""

import pytest

import weightspace.cli as cli_module
from weightspace.cli import _index
from weightspace.index import build_index


@pytest.fixture(scope="module")
def run_dir(statnn_run):
    return statnn_run


@pytest.fixture(scope="module")
def built(small_zoo, run_dir, tmp_path_factory):
    """An index of the whole small zoo (tests copy it before changing it)."""
    out = tmp_path_factory.mktemp("indexes") / "full"
    build_index(run_dir, small_zoo, out, progress=False)
    return out


@pytest.fixture
def cli(monkeypatch):
    """``weightspace.cli.main`` with the index commands registered."""
    if _index not in cli_module._COMMANDS:
        monkeypatch.setattr(cli_module, "_COMMANDS", (*cli_module._COMMANDS, _index))
    return cli_module.main
