"""Collector recovery: kill -9 and restart, torn and corrupt journals, open periods across restarts."""

from __future__ import annotations

import os
import random
import shutil

from collector_helpers import CollectorProcess, RawTrainer, journal_frames, journal_summaries, settle
from statbus.pipeline.collector.aggregator import Aggregator
from statbus.pipeline.collector.intake import Intake
from statbus.pipeline.control import control_request
from statbus.pipeline.collector.recovery import encode_snapshot, replay_newest_segment
from statbus.pipeline.journal.writer import EntryType, Journal, iter_entries
from statbus.pipeline.wire import decode_frame, encode_frame, hello_record, stat_record, write_record
from statbus.plugins.records import pack_summary, pack_values

TRAINERS = 4


def stat(category, key, values, agg=0, op=0):
    return stat_record(category, key, agg, op, pack_values(values))


def trainer_values(trainer: int, step: int, part: int):
    return [trainer * 1000 + step + part / 10 + i / 100 for i in range(3 + (trainer + step + part) % 4)]


def normalized(summaries):
    """Values of a key sorted: trainers run concurrently, so only order *within* a trainer is fixed."""
    return [(c, s, {k: (a, sorted(v)) for k, (a, v) in d.items()}) for c, s, d in summaries]


# --- in-process: replay equals the live state ------------------------------------------------


def test_replay_rebuilds_senders_and_open_periods_and_reemits_a_torn_summary(tmp_path):
    directory = str(tmp_path / "journal")
    intake, aggregator = Intake(), Aggregator()
    journal = Journal(directory, segment_bytes=600)
    journal.open()
    replay_newest_segment(journal, intake, aggregator)  # fresh: writes the first snapshot
    rng = random.Random(7)
    for seq in range(1, 60):
        records = [stat("C", rng.choice("abc"), [rng.random() for _ in range(rng.randint(1, 4))])]
        if seq % 7 == 0:
            records.append(write_record("C", seq))
        payload = encode_frame("s", seq, 1, 0, records)
        frame = decode_frame(payload)
        assert intake.judge(frame).ack == seq
        journal.append(EntryType.FRAME, payload)
        for summary in aggregator.apply(frame.records):
            journal.append(EntryType.SUMMARY, pack_summary(summary))
        journal.commit()
        if journal.needs_rotation():
            journal.rotate(encode_snapshot(intake, aggregator))
    # the last frame closes a period; then its summary is torn off
    payload = encode_frame("s", 60, 1, 0, [stat("C", "a", [1.0]), write_record("C", 60), stat("C", "b", [2.0])])
    frame = decode_frame(payload)
    intake.judge(frame)
    journal.append(EntryType.FRAME, payload)
    (summary,) = aggregator.apply(frame.records)
    summary_position = journal.append(EntryType.SUMMARY, pack_summary(summary))
    journal.commit()
    journal.close()
    assert len(journal.segment_starts()) > 2
    newest = os.path.join(directory, f"{journal.segment_starts()[-1]:020d}.seg")
    with open(newest, "r+b") as handle:
        handle.truncate(summary_position - journal.segment_starts()[-1] + 5)

    intake2, aggregator2 = Intake(), Aggregator()
    journal2 = Journal(directory, segment_bytes=600)
    journal2.open()
    report = replay_newest_segment(journal2, intake2, aggregator2)
    journal2.commit()
    assert report.summaries_reemitted == 1 and report.had_snapshot
    assert intake2.senders["s"].last_seq == 60
    # the open period equals the live one: what frame 60 added after its write
    assert aggregator2.snapshot() == aggregator.snapshot() == {"C": [["b", 0, pack_values([2.0])]]}
    journal2.close()
    summaries = [e.payload for e in iter_entries(directory) if e.type == EntryType.SUMMARY]
    assert summaries[-1] == pack_summary(summary)
    assert len(summaries) == len(set(summaries)) == 60 // 7 + 1


# --- kill -9 of a collector process ----------------------------------------------------------


def test_kill_9_twice_mid_run_loses_and_doubles_nothing(tmp_path, context):
    collector = CollectorProcess(str(tmp_path / "results"), extra=["--no-plugins", "--segment-mb", "0.02"])
    trainers, learner = [], None
    try:
        collector.start()
        address = collector.layout.data_address
        trainers = [RawTrainer(context, address, f"env-{i}") for i in range(TRAINERS)]
        learner = RawTrainer(context, address, "learner")
        for t in trainers + [learner]:
            t.frame([hello_record({"pid": 1, "host": "test"})])
        settle(trainers + [learner])
        expected = []
        steps = 30
        kills = {9: "after trainers sent", 21: "after the learner's write"}
        for step in range(1, steps + 1):
            env = {}
            for i, t in enumerate(trainers):
                for part in range(1 + (i + step) % 3):
                    values = trainer_values(i, step, part)
                    agg = 2 if part == 2 else 0
                    t.frame([stat("Env", "reward", values), stat("Env", f"part{part}", values[:1], agg=agg)])
                    env.setdefault("reward", (0, []))[1].extend(values)
                    slot = env.setdefault(f"part{part}", (agg, []))
                    env[f"part{part}"] = (agg, slot[1] + values[:1])
            if kills.get(step) == "after trainers sent":
                collector.kill()
                collector.start()
            settle(trainers)
            learner.frame([
                stat("Policy", "loss", [step / 3]),
                stat("Policy", "lr", [step * 0.01], agg=1, op=1),
                write_record("Env", step),
                write_record("Policy", step),
            ])
            if kills.get(step) == "after the learner's write":
                collector.kill()
                collector.start()
            settle([learner])
            expected.append(("Env", step, env))
            expected.append(("Policy", step, {"loss": (0, [step / 3]), "lr": (1, [step * 0.01])}))
        assert collector.starts == 3
        journal_dir = collector.layout.journal_dir
        frames = journal_frames(journal_dir)
        assert len(frames) == len(set(frames)) == sum(t.seq for t in trainers + [learner])
        assert normalized(journal_summaries(journal_dir)) == normalized(expected)
        status = control_request(collector.layout.control_address, {"op": "status"}, timeout=10)
        assert status["journal"]["segments"] > 1
        assert "statbus collector ready" in collector.log()
    finally:
        for t in trainers + ([learner] if learner else []):
            t.close()
        collector.close()


def test_open_periods_and_dedupe_survive_a_restart(tmp_path, context):
    collector = CollectorProcess(str(tmp_path / "results"))
    t = None
    try:
        collector.start()
        t = RawTrainer(context, collector.layout.data_address, "a")
        t.frame([stat("C", "k", [1.0, 2.0])])
        first = t.unacked[1]
        t.frame([stat("C", "k", [3.0], agg=2)])
        settle([t])
        collector.kill()
        collector.start()
        t.send_raw(first)  # an old, acked frame again: a duplicate after the restart too
        t.frame([write_record("C", 5)])
        settle([t])
        assert journal_summaries(collector.layout.journal_dir) == [("C", 5, {"k": (2, [1.0, 2.0, 3.0])})]
        assert journal_frames(collector.layout.journal_dir) == [("a", 1), ("a", 2), ("a", 3)]
    finally:
        if t is not None:
            t.close()
        collector.close()


def test_a_torn_summary_is_reemitted_at_restart(tmp_path, context):
    collector = CollectorProcess(str(tmp_path / "results"))
    t = None
    try:
        collector.start()
        t = RawTrainer(context, collector.layout.data_address, "a")
        t.frame([stat("C", "k", [1.0]), write_record("C", 1)])
        t.frame([stat("C", "k", [2.0]), write_record("C", 2)])
        settle([t])
        collector.kill()
        journal_dir = collector.layout.journal_dir
        last = [e for e in iter_entries(journal_dir) if e.type == EntryType.SUMMARY][-1]
        segment = os.path.join(journal_dir, f"{0:020d}.seg")
        with open(segment, "r+b") as handle:
            handle.truncate(last.position + 3)  # the crash tore the summary's header
        collector.start()
        status = control_request(collector.layout.control_address, {"op": "status"}, timeout=10)
        assert status["journal"]["recovery"]["replay"]["summaries_reemitted"] == 1
        t.frame([stat("C", "k", [3.0]), write_record("C", 3)])
        settle([t])
        assert journal_summaries(journal_dir) == [
            ("C", 1, {"k": (0, [1.0])}),
            ("C", 2, {"k": (0, [2.0])}),
            ("C", 3, {"k": (0, [3.0])}),
        ]
    finally:
        if t is not None:
            t.close()
        collector.close()


def test_a_damaged_journal_tail_still_starts_and_keeps_intact_entries(tmp_path, context):
    source = CollectorProcess(str(tmp_path / "source"))
    t = None
    try:
        source.start()
        t = RawTrainer(context, source.layout.data_address, "a")
        for step in range(1, 25):
            t.frame([stat("C", "k", [step] * step), write_record("C", step)])
        settle([t])
    finally:
        if t is not None:
            t.close()
        source.close()
    entries = list(iter_entries(source.layout.journal_dir))
    end = entries[-1].end
    rng = random.Random(42)
    damages = [("cut", rng.randrange(entries[1].position, end)) for _ in range(3)]
    damages += [("flip", rng.randrange(entries[1].position, end)) for _ in range(2)]
    for index, (kind, offset) in enumerate(damages):
        results = str(tmp_path / f"copy{index}")
        copy = CollectorProcess(results)
        shutil.copytree(source.layout.journal_dir, copy.layout.journal_dir)
        segment = os.path.join(copy.layout.journal_dir, f"{0:020d}.seg")
        with open(segment, "r+b") as handle:
            if kind == "cut":
                handle.truncate(offset)
            else:
                handle.seek(offset)
                byte = handle.read(1)
                handle.seek(offset)
                handle.write(bytes([byte[0] ^ 0xFF]))
        try:
            copy.start()
            assert control_request(copy.layout.control_address, {"op": "ping"}, timeout=10)["ok"]
            after = {(e.position, e.type, e.payload) for e in iter_entries(copy.layout.journal_dir)}
            damaged = [e for e in entries if e.position <= offset < e.end]
            intact = [e for e in entries if e.end <= offset or (kind == "flip" and e.position > offset)]
            assert {(e.position, e.type, e.payload) for e in intact} <= after, (kind, offset)
            assert all((e.position, e.type, e.payload) not in after for e in damaged if kind == "flip")
        finally:
            copy.close()


# --- the whole path: real trainer processes through two kill -9 ------------------------

DRIVER = r"""
import sys
from statbus.pipeline import StatsAggregationMethod, StatsReporter, configure, flush, shutdown

role, results_dir, run_id = sys.argv[1], sys.argv[2], sys.argv[3]
configure(run_id=run_id, results_dir=results_dir, autostart=False)
env = StatsReporter("Env")
policy = StatsReporter("Policy")
for line in sys.stdin:
    command, step = line.split()
    step = int(step)
    if command == "add":
        index = int(role)
        for i in range(50 + 10 * index):
            env.add_stat("reward", index * 1000 + step + i / 1000)
        env.add_stat("episodes", 1.0, StatsAggregationMethod.SUM)
    elif command == "write":
        policy.add_stat("loss", step / 7)
        policy.set_stat("lr", 0.5 / step)
        env.write_stats(step)
        policy.write_stats(step)
    elif command == "quit":
        break
    print("ok" if flush(60.0) else "timeout", step, flush=True)
shutdown()
print("bye", flush=True)
"""


def expected_trainer_run(steps: int):
    expected = []
    for step in range(1, steps + 1):
        rewards = [index * 1000 + step + i / 1000 for index in range(TRAINERS) for i in range(50 + 10 * index)]
        expected.append(("Env", step, {"reward": (0, rewards), "episodes": (2, [1.0] * TRAINERS)}))
        expected.append(("Policy", step, {"loss": (0, [step / 7]), "lr": (1, [0.5 / step])}))
    return expected


def test_trainer_processes_and_a_learner_through_two_kill_9(tmp_path):
    import subprocess
    import sys

    from collector_helpers import REPO

    results = str(tmp_path / "results")
    collector = CollectorProcess(results, run_id="ppo")
    env = dict(os.environ, STATBUS_AUTOSTART="0", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    processes = []
    try:
        collector.start()
        for role in [str(i) for i in range(TRAINERS)] + ["learner"]:
            processes.append(subprocess.Popen(
                [sys.executable, "-c", DRIVER, role, results, "ppo"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            ))
        trainers, learner = processes[:TRAINERS], processes[TRAINERS]

        def command(targets, text, step, kill=False):
            for p in targets:
                p.stdin.write(f"{text} {step}\n")
                p.stdin.flush()
            if kill:  # while the trainers' frames are in flight
                collector.kill()
                collector.start()
            for p in targets:
                reply = p.stdout.readline().split()
                assert reply == ["ok", str(step)], f"driver said {reply}; collector log:\n{collector.log()}"

        steps = 12
        for step in range(1, steps + 1):
            command(trainers, "add", step, kill=step == 4)
            command([learner], "write", step, kill=step == 9)
        for p in processes:
            p.stdin.write("quit 0\n")
            p.stdin.flush()
            assert p.stdout.readline().strip() == "bye"
            assert p.wait(timeout=60) == 0
        assert collector.starts == 3
        journal_dir = collector.layout.journal_dir
        frames = journal_frames(journal_dir)
        assert len(frames) == len(set(frames))
        got = normalized(journal_summaries(journal_dir))
        want = normalized(expected_trainer_run(steps))
        assert [x[:2] for x in got] == [x[:2] for x in want], collector.log()
        for g, w in zip(got, want):
            assert g == w, (g[:2], {k: (len(v[1]), v[0]) for k, v in g[2].items()}, {k: (len(v[1]), v[0]) for k, v in w[2].items()})
        status = control_request(collector.layout.control_address, {"op": "status"}, timeout=10)
        # (BYE is best effort within the client's exit linger: not asserted here)
        assert len(status["trainers"]) == TRAINERS + 1
        assert sum(t["values"] for t in status["trainers"]) == sum(
            len(v) for _, _, d in expected_trainer_run(steps) for _, v in d.values()
        )
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    stream.close()
        collector.close()


def test_random_tail_cuts_replay_to_exactly_the_surviving_frames(tmp_path):
    """For many cut offsets: after recovery, the summaries in the journal are exactly those the
    surviving frames produce (torn ones re-emitted, none doubled), and the open periods match."""
    source = str(tmp_path / "source")
    intake, aggregator = Intake(), Aggregator()
    journal = Journal(source, segment_bytes=1 << 30)
    journal.open()
    replay_newest_segment(journal, intake, aggregator)
    rng = random.Random(99)
    for seq in range(1, 121):
        records = [stat(rng.choice("AB"), rng.choice("xyz"), [rng.random() for _ in range(rng.randint(1, 6))])]
        if rng.random() < 0.3:
            records.append(write_record(rng.choice("AB"), seq))
        payload = encode_frame("s", seq, 1, 0, records)
        frame = decode_frame(payload)
        intake.judge(frame)
        journal.append(EntryType.FRAME, payload)
        for summary in aggregator.apply(frame.records):
            journal.append(EntryType.SUMMARY, pack_summary(summary))
        journal.commit()
    journal.close()
    entries = list(iter_entries(source))
    segment = f"{0:020d}.seg"
    for trial in range(30):
        cut = rng.randrange(entries[1].position, entries[-1].end)
        directory = str(tmp_path / f"cut{trial}")
        shutil.copytree(source, directory)
        with open(os.path.join(directory, segment), "r+b") as handle:
            handle.truncate(cut)
        # the model: replay the frames wholly before the cut with a fresh aggregator
        model = Aggregator()
        expected = []
        for entry in entries:
            if entry.type == EntryType.FRAME and entry.end <= cut:
                expected += [pack_summary(s) for s in model.apply(decode_frame(entry.payload).records)]
        intake2, aggregator2 = Intake(), Aggregator()
        recovered = Journal(directory)
        recovered.open()
        replay_newest_segment(recovered, intake2, aggregator2)
        recovered.close()
        got = [e.payload for e in iter_entries(directory) if e.type == EntryType.SUMMARY]
        assert got == expected, cut
        assert aggregator2.snapshot() == model.snapshot(), cut
        frames_kept = sum(1 for e in entries if e.type == EntryType.FRAME and e.end <= cut)
        assert intake2.senders["s"].last_seq == frames_kept
