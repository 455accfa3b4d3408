"""A real small filesystem (a tmpfs), filled to the last byte while a run goes on, then freed.

Real collector, real worker hosts, a real trainer process; the filesystem is a
3 MiB tmpfs mounted by the test (root only: without the right to mount, these
tests say so and skip — the fault-injected tests in test_collector_write_stall.py
and test_worker_disk_wait.py cover the same code paths everywhere).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys
from typing import Iterator, List

import pytest

from collector_helpers import REPO, CollectorProcess, journal_summaries, wait_for
from statbus.pipeline.control import control_request
from waiting import holds_for

STEPS = 20
VALUES = 4000  # per step: 80,000 values, ~0.7 MiB of journal, well within 3 MiB once freed

TRAINER = """
import json, sys, time
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter, configure
results, run_id, category, first, last, values = sys.argv[1:7]
configure(run_id=run_id, results_dir=results)
reporter = StatsReporter(category)
for step in range(int(first), int(last) + 1):
    for i in range(int(values)):
        reporter.add_stat("k", step * 100_000.0 + i)
    reporter.write_stats(step)
deadline = time.monotonic() + 120
while not sp.flush(1.0) and time.monotonic() < deadline:
    pass   # the collector cannot take it yet: the data waits in this process's buffer
print(json.dumps({"delivered": sp.flush(0.1), **sp.client_counters()}), flush=True)
"""


@contextlib.contextmanager
def tmpfs(path: str, size: str) -> Iterator[str]:
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield path
    finally:
        try:  # busy while a process of the test still lets go of its files
            wait_for(lambda: subprocess.run(["umount", path], capture_output=True).returncode == 0, 5,
                     interval=0.1, what=f"umount {path}")
        except AssertionError:
            subprocess.run(["umount", "-l", path], check=True)


def fill(directory: str) -> str:
    """Write a file until the filesystem refuses one more byte; returns its path."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 16, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    with pytest.raises(OSError):
        with open(os.path.join(directory, "one-more-byte"), "wb") as handle:
            handle.write(b"x")
            handle.flush()
    return path


LEAVER = """
import sys
from statbus.pipeline import StatsReporter, configure
configure(run_id="r", results_dir=sys.argv[1], linger=1.0)
reporter = StatsReporter("D")
for i in range(1000):
    reporter.add_stat("k", float(i))
reporter.write_stats(1)
"""  # exits at once: its data is still unacknowledged


def run_leaver(results: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, STATBUS_AUTOSTART="0")
    return subprocess.run([sys.executable, "-c", LEAVER, results], capture_output=True, text=True, timeout=60, env=env)


def start_trainer(results: str, category: str, first: int, last: int, log: str) -> subprocess.Popen:
    env = dict(os.environ, STATBUS_AUTOSTART="0", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-c", TRAINER, results, "r", category, str(first), str(last), str(VALUES)],
            stdout=subprocess.PIPE, stderr=err, env=env,
        )


def finish(trainer: subprocess.Popen) -> dict:
    out, _ = trainer.communicate(timeout=180)
    assert trainer.returncode == 0
    return json.loads(out.decode().strip().splitlines()[-1])


def statbus_status(results: str) -> str:
    """What `statbus status` prints for run r."""
    shown = subprocess.run(
        [sys.executable, "-c", "import sys; from statbus.pipeline.cli.main import main; sys.exit(main())",
         "status", "--run-id", "r", "--results-dir", results],
        capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def status(collector: CollectorProcess) -> dict:
    return control_request(collector.layout.control_address, {"op": "status"}, timeout=10)


def plugin(collector: CollectorProcess, name: str) -> dict:
    return {p["name"]: p for p in status(collector)["plugins"]}[name]


def jsonl_summaries(path: str) -> List[dict]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [line for line in map(json.loads, handle) if "step" in line]
    except FileNotFoundError:
        return []


def expected_sum(step: int) -> float:
    return sum(step * 100_000.0 + i for i in range(VALUES))


def test_a_run_on_a_full_tmpfs_loses_nothing_and_the_collector_never_exits(tmp_path):
    with tmpfs(str(tmp_path / "disk"), "3m") as disk:
        results = os.path.join(disk, "results")
        collector = CollectorProcess(results, "r", extra=["--plugins", "jsonl", "--segment-mb", "0.25"])
        collector.log_path = str(tmp_path / "collector.log")  # off the small disk: the test reads it
        trainers: List[subprocess.Popen] = []
        try:
            collector.start()
            pid = collector.process.pid
            trainers.append(start_trainer(results, "C", 1, 5, str(tmp_path / "trainer1.log")))
            assert finish(trainers[0])["delivered"] is True
            filler = fill(disk)
            trainers.append(start_trainer(results, "C", 6, STEPS, str(tmp_path / "trainer2.log")))
            wait_for(lambda: status(collector)["journal"]["state"] == "disk full", 60, what="the journal stalls")
            shown = statbus_status(results)
            assert re.search(r"^journal: disk full since \d\d:\d\d:\d\d ", shown, re.M), shown
            leaver = run_leaver(results)
            assert leaver.returncode == 0 and len(leaver.stderr.splitlines()) == 1, leaver.stderr
            # The spool is on the full disk too: the one case where values are lost, and said so.
            assert re.match(r"statbus: 1000 values and 1 summaries recorded by this process are lost: .*cannot write "
                            r"its journal.*, and the spool \S+ could not be written \(\[Errno 28\] No space left on "
                            r"device.*\)$", leaver.stderr), leaver.stderr

            def retried() -> bool:
                assert collector.process.poll() is None and trainers[1].poll() is None  # both wait, neither gives up
                return status(collector)["journal"]["write_error"]["retries"] >= 2

            wait_for(retried, 60, what="several retries on a disk still full")
            assert collector.process.poll() is None and trainers[1].poll() is None  # both wait, neither gives up
            stall = status(collector)["journal"]["write_error"]
            assert stall["errno"] == "ENOSPC" and stall["retries"] >= 2 and stall["free_bytes"] == 0
            os.unlink(filler)  # space comes back
            counters = finish(trainers[1])
            assert counters["delivered"] is True and counters["values_dropped"] == 0
            path = os.path.join(results, "r", "stats.jsonl")
            wait_for(lambda: len(jsonl_summaries(path)) >= STEPS, 60, what="stats.jsonl catching up")
            lines = jsonl_summaries(path)
            assert [line["step"] for line in lines] == list(range(1, STEPS + 1))  # each once, in order
            assert {line["category"] for line in lines} == {"C"}  # the trainer that left took its data along
            for line in lines:
                assert line["values"]["k"]["num"] == VALUES
                assert line["values"]["k"]["sum"] == expected_sum(line["step"])
            assert collector.process.poll() is None and collector.process.pid == pid
            assert status(collector)["journal"]["state"] == "ok"
            assert plugin(collector, "jsonl")["restarts"] == 0
            with open(collector.log_path, encoding="utf-8") as handle:
                log = handle.read()
            assert log.count("journal: disk full since") == 1 and "collector failed" not in log
            assert collector.terminate() == 0
        finally:
            for trainer in trainers:
                if trainer.poll() is None:
                    trainer.kill()
                trainer.wait(timeout=30)
            collector.close()


def test_a_trainer_whose_spool_cannot_be_written_says_its_values_are_lost(tmp_path):
    """No collector, and the run folder on a full disk: the spool cannot take the trainer's values either."""
    with tmpfs(str(tmp_path / "disk"), "1m") as disk:
        results = os.path.join(disk, "results")
        spool = os.path.join(results, "r", "statbus", "spool")
        os.makedirs(spool)
        filler = fill(disk)
        leaver = run_leaver(results)
        assert leaver.returncode == 0 and len(leaver.stderr.splitlines()) == 1, leaver.stderr
        assert re.match(rf"statbus: 1000 values and 1 summaries recorded by this process are lost: the collector at "
                        rf"\S+ did not acknowledge them within 1 s .*, and the spool {re.escape(spool)} could not be "
                        rf"written \(\[Errno 28\] No space left on device.*\)$", leaver.stderr), leaver.stderr
        assert os.listdir(spool) == []  # no half-written file left behind
        os.unlink(filler)
        leaver = run_leaver(results)
        assert " wait in the spool " in leaver.stderr and len(os.listdir(spool)) == 1, leaver.stderr


def test_a_plugin_whose_output_disk_is_full_waits_without_restarts_and_catches_up(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator as ea

    results = str(tmp_path / "results")
    category_dir = os.path.join(results, "r", "C")  # the tensorboard writer's output; the journal is elsewhere
    with tmpfs(category_dir, "1m") as disk:
        collector = CollectorProcess(results, "r", extra=["--plugins", "tensorboard"])
        trainer = None
        try:
            collector.start()
            filler = fill(disk)
            trainer = start_trainer(results, "C", 1, STEPS, str(tmp_path / "trainer.log"))
            assert finish(trainer)["delivered"] is True  # the journal took everything
            wait_for(lambda: plugin(collector, "tensorboard")["disk_full_since"], 60, what="the plugin waits for space")
            holds_for(lambda: plugin(collector, "tensorboard")["restarts"] == 0, 4, interval=0.2,
                      what="no restart for as long as several would take, had the worker crashed")
            waiting = plugin(collector, "tensorboard")
            assert waiting["state"] == "READY" and waiting["restarts"] == 0 and waiting["disk_full_since"]
            assert not os.path.exists(collector.layout.dead_letter_file("tensorboard"))  # nothing taken for poison
            shown = statbus_status(results)
            assert re.search(r"^\s+tensorboard\s+READY \(disk full since \d\d:\d\d:\d\d\)", shown, re.M), shown
            os.unlink(filler)

            def steps():
                acc = ea.EventAccumulator(category_dir, size_guidance={ea.SCALARS: 0})
                acc.Reload()
                return [(e.step, e.value) for e in acc.Scalars("k")] if "k" in acc.Tags()["scalars"] else []

            wait_for(lambda: len(steps()) >= STEPS, 60, what="tensorboard catching up")
            assert steps() == [(step, pytest.approx(expected_sum(step) / VALUES)) for step in range(1, STEPS + 1)]
            after = plugin(collector, "tensorboard")
            assert after["restarts"] == 0 and after["disk_full_since"] is None and after["state"] == "READY"
            assert collector.terminate() == 0
        finally:
            if trainer is not None and trainer.poll() is None:
                trainer.kill()
                trainer.wait(timeout=30)
            collector.close()


def test_a_collector_killed_while_its_disk_is_full_is_replaced_and_nothing_is_lost_or_doubled(tmp_path):
    """What waited in the killed collector's memory was never acknowledged: the trainer sends it again."""
    with tmpfs(str(tmp_path / "disk"), "3m") as disk:
        results = os.path.join(disk, "results")
        collector = CollectorProcess(results, "r", extra=["--no-plugins", "--segment-mb", "0.25"])
        collector.log_path = str(tmp_path / "collector.log")
        trainer = None
        try:
            collector.start()
            trainer = start_trainer(results, "C", 1, 3, str(tmp_path / "trainer-warmup.log"))
            assert finish(trainer)["delivered"] is True
            filler = fill(disk)
            trainer = start_trainer(results, "C", 4, STEPS, str(tmp_path / "trainer.log"))
            wait_for(lambda: status(collector)["journal"]["state"] == "disk full", 60, what="the journal stalls")
            assert status(collector)["journal"]["write_error"]["pending_bytes"] > 0  # accepted, not written
            collector.kill()
            os.unlink(filler)
            collector.start()  # recovers from the journal alone; the trainer re-sends what was never acked
            counters = finish(trainer)
            assert counters["delivered"] is True and counters["values_dropped"] == 0
            assert collector.terminate() == 0
        finally:
            if trainer is not None and trainer.poll() is None:
                trainer.kill()
                trainer.wait(timeout=30)
            collector.close()
        summaries = journal_summaries(collector.layout.journal_dir)
        assert [step for _, step, _ in summaries] == list(range(1, STEPS + 1))
        for _, step, data in summaries:
            assert data["k"][1] == [step * 100_000.0 + i for i in range(VALUES)]
