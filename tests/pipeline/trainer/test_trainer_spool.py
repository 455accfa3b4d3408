"""A trainer that exits before its collector acknowledged everything leaves it in the run's spool,
and a collector of the run takes it in exactly once (real trainer processes, real collectors)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Dict, List

import msgpack
import zmq

from collector_helpers import CollectorProcess, journal_frames, journal_summaries, wait_for
from statbus.pipeline.control import control_request
from statbus.pipeline.layout import RunLayout

STEPS = 20
VALUES = 1000

TRAINER = """
import sys
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter, configure
results, address = sys.argv[1:3]
configure(run_id="r", results_dir=results, linger=1.0, **({"address": address} if address else {}))
reporter = StatsReporter("C")
for step in range(1, {steps} + 1):
    for i in range({values}):
        reporter.add_stat("k", step * 100_000.0 + i)
    reporter.write_stats(step)
    sp.flush(0.05)  # a frame per step (nothing acks it in time)
""".replace("{steps}", str(STEPS)).replace("{values}", str(VALUES))

SPOOLED = re.compile(
    rf"^statbus: {STEPS * VALUES} values and {STEPS} summaries recorded by this process wait in the spool (\S+) "
    r"\((\d+) files, [\d.]+ MiB\): the collector at \S+ did not acknowledge them within 1 s .*; "
    r"(the run's next collector|a collector of this run folder on this host) takes them in$"
)


def run_trainer(results: str, address: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, STATBUS_AUTOSTART="0")
    return subprocess.run([sys.executable, "-c", TRAINER, results, address], capture_output=True, text=True,
                          timeout=120, env=env)


def statbus_status(results: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from statbus.pipeline.cli.main import main; sys.exit(main())",
         "status", "--run-id", "r", "--results-dir", results],
        capture_output=True, text=True, timeout=60,
    )


def spool_status(collector: CollectorProcess) -> Dict[str, int]:
    return control_request(collector.layout.control_address, {"op": "status"}, timeout=10)["spool"]


def spool_files(layout: RunLayout) -> List[str]:
    return sorted(name for name in os.listdir(layout.spool_dir) if name.endswith(".spool"))


def assert_each_step_once(layout: RunLayout, values: int = VALUES) -> None:
    """Every frame journaled once, every step summarized once with exactly its values, in the journal
    and in stats.jsonl (whose writer's own guard against replays must not be what hides a duplicate)."""
    frames = journal_frames(layout.journal_dir)
    assert len(frames) == len(set(frames))
    summaries = journal_summaries(layout.journal_dir)
    assert [(category, step) for category, step, _ in summaries] == [("C", s) for s in range(1, STEPS + 1)]
    for _, step, entries in summaries:
        assert sorted(entries["k"][1]) == [step * 100_000.0 + i for i in range(values)]
    with open(os.path.join(layout.run_dir, "stats.jsonl"), encoding="utf-8") as handle:
        lines = [line for line in map(json.loads, handle) if "step" in line]
    assert [line["step"] for line in lines] == list(range(1, STEPS + 1))
    for line in lines:
        assert line["values"]["k"]["num"] == values
        assert line["values"]["k"]["sum"] == sum(line["step"] * 100_000.0 + i for i in range(values))


def test_a_trainer_exiting_with_the_collector_stopped_is_delivered_once_by_the_next_collector(tmp_path):
    results = str(tmp_path / "results")
    layout = RunLayout(results, "r")
    trainer = run_trainer(results)
    assert trainer.returncode == 0, trainer.stderr
    lines = trainer.stderr.splitlines()
    assert len(lines) == 1, trainer.stderr
    match = SPOOLED.match(lines[0])
    assert match and match[1] == layout.spool_dir, lines[0]
    files = spool_files(layout)
    assert len(files) == int(match[2]) >= 1
    copies = {}
    for name in files:
        with open(os.path.join(layout.spool_dir, name), "rb") as handle:
            copies[name] = handle.read()

    shown = statbus_status(results)  # no collector: the spool is still shown
    assert shown.returncode == 1
    assert re.search(rf"^spool: {len(files)} files \([\d.]+ MiB\) that exited trainers could not deliver wait in "
                     rf"{re.escape(layout.spool_dir)}, for the run's next collector", shown.stderr, re.M), shown.stderr

    def put_back() -> None:
        # As if a collector died after journaling the files and before deleting them.
        for name, data in copies.items():
            with open(os.path.join(layout.spool_dir, name), "wb") as handle:
                handle.write(data)

    def taken() -> bool:
        return not spool_files(layout)

    collector = CollectorProcess(results, "r", extra=["--plugins", "jsonl"])
    try:
        collector.start()
        wait_for(taken, 30, "the collector taking the spool in")
        first = spool_status(collector)
        assert (first["files"], first["taken_files"], first["duplicates"]) == (0, len(files), 0)
        assert first["taken_frames"] >= STEPS

        put_back()  # the same collector: its sender table knows these frames
        with open(os.path.join(layout.spool_dir, "damaged-00000000000000000001.spool"), "wb") as handle:
            handle.write(b"statbus-spool-1\n\0\0\0\0 not msgpack")
        wait_for(taken, 30, "the collector taking the spool in again")
        again = spool_status(collector)
        assert (again["taken_frames"], again["duplicates"], again["set_aside"]) == (
            first["taken_frames"], first["taken_frames"], 1)
        shown = statbus_status(results)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^spool: 0 files .*; 1 files set aside", shown.stdout, re.M), shown.stdout
        assert collector.terminate(60) == 0

        put_back()  # a new collector: it knows the frames from the journal
        collector.start()
        wait_for(taken, 30, "the next collector taking the spool in")
        third = spool_status(collector)
        assert (third["taken_frames"], third["duplicates"]) == (0, first["taken_frames"])
        assert collector.terminate(60) == 0
    finally:
        collector.close()
    assert_each_step_once(layout)


def test_a_trainer_exiting_while_its_frames_are_partly_journaled_is_not_taken_twice(tmp_path, context):
    """The collector journals the first half of the frames but its acks never come back (a proxy drops
    them): the trainer spools every frame, and the running collector takes in only the second half."""
    results = str(tmp_path / "results")
    layout = RunLayout(results, "r")
    proxy_address = f"ipc://{tmp_path}/proxy"
    collector = CollectorProcess(results, "r", extra=["--plugins", "jsonl"])
    front = context.socket(zmq.ROUTER)
    back = context.socket(zmq.DEALER)
    trainer = None
    try:
        for sock in (front, back):
            sock.setsockopt(zmq.LINGER, 0)
        collector.start()
        front.bind(proxy_address)
        back.connect(layout.data_address)
        env = dict(os.environ, STATBUS_AUTOSTART="0")
        trainer = subprocess.Popen([sys.executable, "-c", TRAINER, results, proxy_address],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        half = STEPS // 2
        forwarded = set()

        def exited() -> bool:
            while front.poll(20):
                _, payload = front.recv_multipart()
                seq = msgpack.unpackb(payload, raw=False)[2]
                if seq <= half:
                    back.send(payload)
                    forwarded.add(seq)
            return trainer.poll() is not None

        wait_for(exited, 120, "the trainer's exit")
        _, err = trainer.communicate(timeout=30)
        assert trainer.returncode == 0 and SPOOLED.match(err.strip()), err
        assert forwarded == set(range(1, half + 1))
        wait_for(lambda: not spool_files(layout), 30, "the collector taking the spool in")
        spool = spool_status(collector)
        assert spool["taken_files"] >= 1 and spool["duplicates"] == half
        assert collector.terminate(60) == 0
    finally:
        if trainer is not None and trainer.poll() is None:
            trainer.kill()
            trainer.wait()
        front.close()
        back.close()
        collector.close()
    assert_each_step_once(layout)


SPILLER = """
import json, sys, time
import statbus.pipeline as sp
from statbus.pipeline import StatsReporter, configure
results, marker = sys.argv[1:3]
configure(run_id="r", results_dir=results, linger=1.0)
reporter = StatsReporter("C")
for step in range(1, {steps} + 1):
    for i in range({values}):
        reporter.add_stat("k", step * 100_000.0 + i)
    reporter.write_stats(step)
    sp.flush(0.05)
open(marker, "w").close()
if sys.argv[3] == "exits":
    sys.exit(0)
deadline = time.monotonic() + 120
while not sp.flush(1.0) and time.monotonic() < deadline:
    pass  # the collector is not there yet
print(json.dumps({"delivered": sp.flush(0.1), **sp.client_counters()}), flush=True)
""".replace("{steps}", str(STEPS)).replace("{values}", "5000")


SPILL_ENV = dict(os.environ, STATBUS_AUTOSTART="0", STATBUS_BUFFER_BYTES=str(256 << 10))


def test_a_long_outage_spills_past_the_buffer_to_the_spool_and_loses_nothing(tmp_path):
    """A live trainer whose buffer (256 KiB) overflows while no collector runs: its oldest frames go to the
    spool whole; a collector started later takes them in, then the frames the trainer still holds."""
    results = str(tmp_path / "results")
    layout = RunLayout(results, "r")
    marker = str(tmp_path / "recorded")
    trainer = subprocess.Popen([sys.executable, "-c", SPILLER, results, marker, "waits"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SPILL_ENV)
    collector = CollectorProcess(results, "r", extra=["--plugins", "jsonl"])
    try:
        wait_for(lambda: os.path.exists(marker) or trainer.poll() is not None, 120, "the trainer's recording")
        assert trainer.poll() is None
        spilled = spool_files(layout)
        assert spilled  # 800 KB of values against a 256 KiB buffer, and no collector
        collector.start()
        out, err = trainer.communicate(timeout=180)
        assert trainer.returncode == 0, err
        counters = json.loads(out)
        assert counters["delivered"] is True and counters["values_dropped"] == 0, counters
        assert counters["frames_spilled"] >= len(spilled)
        assert all("go to the spool" in line for line in err.splitlines()), err
        wait_for(lambda: not spool_files(layout), 30, "the spool taken in")
        assert spool_status(collector)["duplicates"] == 0
        assert collector.terminate(60) == 0
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.communicate()
        collector.close()
    assert_each_step_once(layout, values=5000)


def test_a_trainer_that_spilled_and_then_exits_leaves_everything_to_the_next_collector(tmp_path):
    results = str(tmp_path / "results")
    layout = RunLayout(results, "r")
    trainer = subprocess.run([sys.executable, "-c", SPILLER, results, str(tmp_path / "recorded"), "exits"],
                             capture_output=True, text=True, timeout=120, env=SPILL_ENV)
    assert trainer.returncode == 0, trainer.stderr
    last = trainer.stderr.splitlines()[-1]
    assert re.match(r"statbus: \d+ values and \d+ summaries recorded by this process wait in the spool \S+ "
                    r"\(1 files, [\d.]+ MiB, beside \d+ frames it spilled there while the collector was away\): "
                    r".*; the run's next collector takes them in$", last), trainer.stderr
    assert len(spool_files(layout)) > 1
    collector = CollectorProcess(results, "r", extra=["--plugins", "jsonl"])
    try:
        collector.start()
        wait_for(lambda: not spool_files(layout), 30, "the spool taken in")
        assert spool_status(collector)["set_aside"] == 0
        assert collector.terminate(60) == 0
    finally:
        collector.close()
    assert_each_step_once(layout, values=5000)
