"""Fixtures of the supervisor's tests: the stand-in host's spawn, harnesses stopped at teardown."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

from statbus.workers.supervision.config import Config
from supervision_harness import STUB, Harness, _alive


@pytest.fixture
def stub(tmp_path: Path) -> Callable[..., "subprocess.Popen[bytes]"]:
    script = tmp_path / "stub_host.py"
    script.write_text(STUB)

    def spawn(argv: List[str], **kwargs: Any) -> "subprocess.Popen[bytes]":
        assert argv[1:3] == ["-m", "statbus.workers"], argv
        return subprocess.Popen([argv[0], str(script)] + argv[3:], **kwargs)

    return spawn


@pytest.fixture(autouse=True)
def no_supervisor_bugs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The supervisor logs, and survives, exceptions around one plugin: none may happen here."""
    yield
    bugs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("supervising plugin")]
    assert not bugs, bugs


@pytest.fixture
def make(tmp_path: Path, stub: Any) -> Iterator[Callable[..., Harness]]:
    made: List[Harness] = []

    def factory(names: List[str], settings: Config, **kwargs: Any) -> Harness:
        harness = Harness(tmp_path, kwargs.pop("spawn", stub), names, settings, **kwargs)
        made.append(harness)
        return harness

    try:
        yield factory
    finally:
        for harness in made:
            pids = [entry["pid"] for entry in harness.sup.status() if entry["pid"]]
            harness.sup.stop(timeout=5.0)
            for pid in pids:
                assert not _alive(pid), f"pid {pid} survived stop()"

