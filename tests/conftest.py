"""Shared fixtures.  Keep each fixture small; other test files may add theirs here."""

from __future__ import annotations

import pytest

from statbus.plugins import RunOptions


@pytest.fixture
def run_options(tmp_path) -> RunOptions:
    """Run options of a fresh run whose results directory is ``tmp_path``."""
    return RunOptions.create("run", results_dir=str(tmp_path))


@pytest.fixture
def fresh_trainer_state():
    """The test starts and ends with no trainer client and no configure() of an earlier test."""
    import statbus.pipeline as sp
    from statbus.pipeline.trainer import config as trainer_config

    sp.shutdown(0.0)
    try:
        yield
    finally:
        sp.shutdown(0.2)
        trainer_config.forget_configuration()


@pytest.fixture(scope="session", autouse=True)
def no_socket_directory_left(tmp_path_factory):
    """The session leaves no collector socket directory behind (issue 11): every test that starts a
    collector stops it, or, having killed it, removes what it left.  Directories of other sessions'
    runs (other results directories) are not this session's to judge."""
    from socket_leftovers import leftover_socket_dirs, socket_dirs_now

    before = socket_dirs_now()
    yield
    left = leftover_socket_dirs(before, str(tmp_path_factory.getbasetemp()))
    assert not left, f"collector socket directories left behind by this session: {left}"
