"""Fixtures of the worker host's tests: a stand-in collector, and hosts reaped at teardown."""

from __future__ import annotations

import shutil
import tempfile
from typing import List

import pytest

from host_process import FakeCollector, Host


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="sbw")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake_collector(short_dir, context):
    """Not a collector: only its fetch side, serving what the test adds (its socket, in a thread of its
    own, is of the test's context: left open, it fails the test)."""
    with FakeCollector(context, f"ipc://{short_dir}/work") as server:
        yield server


@pytest.fixture
def hosts():
    started: List[Host] = []
    try:
        yield started
    finally:
        for host in started:
            host.stop()
