"""The trainer client in real trainer processes: env configuration, exit, fork."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from typing import Dict, Iterator

from statbus.pipeline.wire import Hello

from ackpeer import AckPeer, PeerState, wait_for

PRELUDE = """
import os, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)  # fork() of a threaded process, 3.12+
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter, StatsAggregationMethod as Agg
def mark(name):
    with open(os.path.join(os.environ["MARKS"], name), "w"):
        pass
"""


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
