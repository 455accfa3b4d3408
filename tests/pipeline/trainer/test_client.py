"""The trainer client in real trainer processes: env configuration, exit, fork.

Its parts have their own files: test_framing.py, test_handoff.py, test_resend_buffer.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from typing import Dict, Iterator

import pytest

import statbus.pipeline as sp
from ackpeer import AckPeer, PeerState, wait_for
from statbus.pipeline import StatsReporter
from statbus.pipeline.trainer import config as trainer_config
from statbus.pipeline.trainer.framing import BATCH_VALUES
from statbus.pipeline.trainer.handoff import MAX_PENDING_EVENTS
from statbus.pipeline.wire import Hello
from statbus.plugins import ConfigError

PRELUDE = """
import os, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process, 3.12+
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter, StatsAggregationMethod as Agg
def mark(name):
    with open(os.path.join(os.environ["MARKS"], name), "w"):
        pass
"""


# Each test starts and ends with no client and no configure() of an earlier test.
pytestmark = pytest.mark.usefixtures("fresh_trainer_state")


def _env(tmp_path, address: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        STATBUS_ADDRESS=address,
        STATBUS_RUN_ID="envrun",
        STATBUS_RESULTS_DIR=str(tmp_path / "results"),
        STATBUS_AUTOSTART="0",
        MARKS=str(tmp_path),
    )
    return env


@contextlib.contextmanager
def trainer(tmp_path, address: str, body: str) -> Iterator[subprocess.Popen]:
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=_env(tmp_path, address),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"trainer exited {proc.returncode}: {err}"
    assert "Traceback" not in err, err
    return err


def _address(tmp_path) -> str:
    return "ipc://" + os.path.join(str(tmp_path), "d")


def test_trainer_configured_by_environment_started_before_the_peer(tmp_path) -> None:
    address = _address(tmp_path)
    body = """
        r = StatsReporter("Env")
        for i in range(5000):
            r.add_stat("a", i)
            if i % 1000 == 999:
                r.write_stats(i)
        mark("recorded")
        sys.exit(0 if sp.flush(60) else 3)
    """
    with trainer(tmp_path, address, body) as proc:
        wait_for(lambda: (tmp_path / "recorded").exists() or proc.poll() is not None, what="trainer to record")
        with AckPeer(address) as peer:
            _finish(proc)
            assert peer.state.values("Env", "a") == [float(i) for i in range(5000)]
            assert [w.step for w in peer.state.writes()] == [999, 1999, 2999, 3999, 4999]
            [hello] = peer.state.hellos()
            assert hello.info["run_id"] == "envrun" and hello.info["pid"] == proc.pid
            assert len(peer.state.byes()) == 1  # the exit hook said goodbye


def test_exit_with_the_peer_down_returns_within_linger(tmp_path) -> None:
    body = """
        sp.configure(linger=0.5)
        r = StatsReporter("Cat")
        for i in range(10000):
            r.add_stat("a", i)
        r.write_stats(1)
        print("done", flush=True)
    """
    with trainer(tmp_path, _address(tmp_path), body) as proc:
        # Only a bound, no timing claim: a hang would hit it.
        proc.wait(timeout=60)
        _finish(proc)


def test_exit_sends_what_is_pending(tmp_path) -> None:
    address = _address(tmp_path)
    body = """
        sp.configure(batch_interval=5.0)
        r = StatsReporter("Cat")
        for i in range(300):
            r.add_stat("a", i)
        r.set_stat("Step", 300)
    """
    with AckPeer(address) as peer, trainer(tmp_path, address, body) as proc:
        _finish(proc)
        assert peer.state.values("Cat", "a") == [float(i) for i in range(300)]
        assert peer.state.values("Cat", "Step") == [300.0]
        assert len(peer.state.byes()) == 1


def test_fork_with_pending_data_each_process_sends_its_own(tmp_path) -> None:
    address = _address(tmp_path)
    # The peer is down at the fork: the parent holds an unacked frame (write 1)
    # and, with a 5 s batch interval, queued values; the child must send neither.
    body = """
        sp.configure(batch_interval=5.0)
        r = StatsReporter("Cat")
        for i in range(100):
            r.add_stat("p", i)
        r.write_stats(1)
        for i in range(100, 200):
            r.add_stat("p", i)
        pid = os.fork()
        if pid == 0:
            for i in range(50):
                r.add_stat("c", i)
            r.write_stats(2)
            ok = sp.flush(60)
            sp.shutdown(5)
            os._exit(0 if ok else 3)
        mark("forked")
        _, status = os.waitpid(pid, 0)
        ok = sp.flush(60)
        sys.exit(0 if ok and os.waitstatus_to_exitcode(status) == 0 else 3)
    """
    with trainer(tmp_path, address, body) as proc:
        wait_for(lambda: (tmp_path / "forked").exists() or proc.poll() is not None, what="fork")
        state = PeerState()
        with AckPeer(address, state):
            _finish(proc)
    hellos = {r.info["sender"]: r.info for _, r in state.records() if isinstance(r, Hello)}
    assert len(hellos) == 2
    parent = next(s for s, info in hellos.items() if info["pid"] == proc.pid)
    (child,) = set(hellos) - {parent}
    assert state.values("Cat", "p", sender=parent) == [float(i) for i in range(200)]
    assert state.values("Cat", "p", sender=child) == []
    assert state.values("Cat", "c", sender=child) == [float(i) for i in range(50)]
    assert state.values("Cat", "c", sender=parent) == []
    assert [w.step for w in state.writes(sender=parent)] == [1]
    assert [w.step for w in state.writes(sender=child)] == [2]
    assert state.gaps == 0


# --- the pieces, without processes -----------------------------------------

def test_config_arguments_then_environment_then_defaults(tmp_path) -> None:
    env = {"STATBUS_RUN_ID": "envrun", "STATBUS_RESULTS_DIR": str(tmp_path), "STATBUS_BUFFER_BYTES": "123456",
           "STATBUS_AUTOSTART": "0"}
    config = trainer_config.build_config(environ=env)
    assert (config.run_id, config.results_dir, config.buffer_bytes, config.autostart) == (
        "envrun", str(tmp_path), 123456, False)
    assert config.address.startswith("ipc://") and config.address.endswith("/data")
    config = trainer_config.build_config("argrun", address="ipc:///x/y", autostart=True, environ=env)
    assert (config.run_id, config.address, config.autostart) == ("argrun", "ipc:///x/y", True)
    default = trainer_config.build_config(environ={})
    assert (default.run_id, default.results_dir, default.autostart) == ("ppo", "results", True)
    with pytest.raises(ConfigError, match="STATBUS_BUFFER_BYTES"):
        trainer_config.build_config(environ={"STATBUS_BUFFER_BYTES": "lots"})
    with pytest.raises(ConfigError, match="address"):
        trainer_config.build_config(address="http://x", environ={})
    with pytest.raises(ConfigError, match="buffer_bytes"):
        trainer_config.build_config(buffer_bytes=10, environ={})
    with pytest.raises(ConfigError, match="run id"):
        trainer_config.build_config(run_id="a/b", environ={})


def test_configure_after_use_restarts_the_client_at_the_new_address(tmp_path) -> None:
    first, second = _address(tmp_path), "ipc://" + os.path.join(str(tmp_path), "e")
    reporter = StatsReporter("Cat")
    try:
        with AckPeer(first) as one, AckPeer(second) as two:
            sp.configure(run_id="t", results_dir=str(tmp_path), address=first, autostart=False, linger=5)
            reporter.add_stat("a", 1.0)
            sp.configure(run_id="t", results_dir=str(tmp_path), address=second, autostart=False, linger=5)
            reporter.add_stat("a", 2.0)
            assert sp.flush(30)
            assert one.state.values("Cat", "a") == [1.0] and len(one.state.byes()) == 1
            assert two.state.values("Cat", "a") == [2.0]
    finally:
        sp.shutdown(0.2)


def test_a_sender_that_cannot_start_drops_stats_and_never_raises(tmp_path, monkeypatch) -> None:
    # Half a CURVE configuration: the sender thread fails to connect and ends.
    monkeypatch.setenv("STATBUS_CLIENT_KEY", str(tmp_path / "missing.key"))
    monkeypatch.delenv("STATBUS_SERVER_KEY", raising=False)
    sp.configure(run_id="t", results_dir=str(tmp_path), address="tcp://127.0.0.1:9", autostart=False, linger=0.2)
    try:
        reporter = StatsReporter("Cat")
        reporter.add_stat("a", 0.0)
        wait_for(lambda: sp.client_counters()["errors"] >= 1, what="the sender to fail")
        for i in range(3 * BATCH_VALUES):
            reporter.add_stat("a", i)
        reporter.write_stats(1)
        assert sp.flush(0.2) is False
        counters = sp.client_counters()
        assert counters["events_dropped"] >= BATCH_VALUES
        assert counters["values_queued"] <= MAX_PENDING_EVENTS + 1
    finally:
        sp.shutdown(0.2)


