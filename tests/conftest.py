"""Shared fixtures.  Keep each fixture small; other test files may add theirs here.

Test files live in folders mirroring the package tree (no ``__init__.py``: pytest's
default import mode puts each test's folder, and this one, on ``sys.path``), so the
shared helpers here (``waiting``, ``collector_helpers``, ``ackpeer``, ``zoo``,
``zmq_context``, ``socket_leftovers``) import by their plain names, and every test file's basename is
unique in the whole tree.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Sequence

import pytest
import zmq

from collector_helpers import CollectorProcess
from statbus.plugins import RunOptions
from zmq_context import term_or_fail


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    """The test's ZeroMQ context; its teardown fails the test when a socket of it was left open."""
    ctx = zmq.Context()
    yield ctx
    term_or_fail(ctx)


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
    """The session leaves no collector socket directory behind: every test that starts a
    collector stops it, or, having killed it, removes what it left.  Directories of other sessions'
    runs (other results directories) are not this session's to judge."""
    from socket_leftovers import leftover_socket_dirs, socket_dirs_now

    before = socket_dirs_now()
    yield
    left = leftover_socket_dirs(before, str(tmp_path_factory.getbasetemp()))
    assert not left, f"collector socket directories left behind by this session: {left}"


# --- collectors: one family --------------------------------------------------------------

StartCollector = Callable[..., CollectorProcess]


@pytest.fixture
def collectors(tmp_path) -> Iterator[StartCollector]:
    """Starts collector processes for the test: ``collectors(extra=[...], run_id=..., results_dir=...)``.

    Every one it started is killed and reaped at teardown, newest first.
    """
    started: List[CollectorProcess] = []

    def start(results_dir: Optional[str] = None, run_id: str = "run", extra: Sequence[str] = ("--no-plugins",),
              env: Optional[dict] = None) -> CollectorProcess:
        process = CollectorProcess(results_dir or str(tmp_path / "results"), run_id, extra, env)
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in reversed(started):
            process.close()


@pytest.fixture
def collector(collectors: StartCollector) -> CollectorProcess:
    """A running collector of the test's run, with no plugins."""
    return collectors()
