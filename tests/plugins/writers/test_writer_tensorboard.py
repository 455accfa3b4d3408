"""The tensorboard writer's output, read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import subprocess
import sys
import time

import pytest

from statbus.plugins import RunOptions, StatsAggregationMethod, StatsPropertyType, StatsSummary
from delivering import write_at
from statbus.plugins.writers.tensorboard import (POSITION_MESSAGE, TensorboardWriter, get_tensorboard_writer,
                                                 histogram_proto, position_event)

A = StatsAggregationMethod


def accumulator(directory):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(directory), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def event_files(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith("events.out.tfevents"))


@pytest.fixture
def writer(tmp_path):
    w = TensorboardWriter(str(tmp_path), clear_past_data=True)
    try:
        yield w
    finally:
        w.close()


def test_scalars_histograms_and_steps(tmp_path, writer):
    writer.write_stats(
        "3DBall",
        {
            "Environment/Cumulative Reward": StatsSummary([1.0, 2.0, 3.0], A.AVERAGE),
            "Env/Count": StatsSummary([2.0, 5.0], A.SUM),
            "Policy/Action": StatsSummary([0.0, 1.0, 1.0, 4.0], A.HISTOGRAM),
        },
        100,
    )
    writer.write_stats("3DBall", {"Environment/Cumulative Reward": StatsSummary([5.0], A.MOST_RECENT)}, 200)
    writer.write_stats("Other", {"x": StatsSummary([9.0], A.AVERAGE)}, 100)
    writer.close()

    acc = accumulator(tmp_path / "3DBall")
    assert scalars(acc, "Environment/Cumulative Reward") == [(100, 2.0), (200, 5.0)]
    assert scalars(acc, "Env/Count") == [(100, 7.0)]  # SUM: the sum, not the mean
    assert scalars(acc, "Policy/Action") == [(100, 1.5)]
    [hist] = acc.Histograms("Policy/Action_hist")
    assert hist.step == 100
    value = hist.histogram_value
    assert (value.min, value.max, value.num, value.sum, value.sum_squares) == (0.0, 4.0, 4, 6.0, 18.0)
    assert sum(value.bucket) == 4 and value.bucket_limit[-1] == 4.0
    assert acc.Tags()["histograms"] == ["Policy/Action_hist"]  # only HISTOGRAM keys get one
    assert scalars(accumulator(tmp_path / "Other"), "x") == [(100, 9.0)]


def test_hidden_keys_are_matched_exactly(tmp_path, writer):
    writer.write_stats(
        "c",
        {
            "Is Training": StatsSummary([1.0], A.AVERAGE),
            "Step": StatsSummary([5.0], A.AVERAGE),
            "Is Training Done": StatsSummary([1.0], A.AVERAGE),
            "Policy/Step Size": StatsSummary([0.1], A.AVERAGE),
        },
        1,
    )
    writer.close()
    assert sorted(accumulator(tmp_path / "c").Tags()["scalars"]) == ["Is Training Done", "Policy/Step Size"]


def test_custom_hidden_keys(tmp_path):
    writer = TensorboardWriter(str(tmp_path), hidden_keys=["Secret"])
    writer.write_stats("c", {"Secret": StatsSummary([1.0], A.AVERAGE), "Step": StatsSummary([1.0], A.AVERAGE)}, 1)
    writer.close()
    assert accumulator(tmp_path / "c").Tags()["scalars"] == ["Step"]


def test_nan_and_empty_histograms_do_not_crash(tmp_path, writer):
    writer.write_stats(
        "c",
        {
            "mixed": StatsSummary([1.0, math.nan, math.inf, 3.0], A.HISTOGRAM),
            "all_nan": StatsSummary([math.nan, -math.inf], A.HISTOGRAM),
            "empty": StatsSummary([], A.HISTOGRAM),
        },
        1,
    )
    assert writer.nonfinite_dropped == 4
    writer.close()
    acc = accumulator(tmp_path / "c")
    assert acc.Tags()["histograms"] == ["mixed_hist"]
    value = acc.Histograms("mixed_hist")[0].histogram_value
    assert (value.num, value.min, value.max, value.sum) == (2, 1.0, 3.0, 4.0)
    assert math.isnan(acc.Scalars("all_nan")[0].value)


def test_values_past_the_float_range_of_a_sum_do_not_crash(tmp_path, writer):
    # math.fsum raises on these; one extreme value must not crash the plugin.
    writer.write_stats(
        "c",
        {
            "huge": StatsSummary([1e308, 1e308], A.HISTOGRAM),
            "opposed": StatsSummary([math.inf, -math.inf], A.AVERAGE),
            "total": StatsSummary([1e308, 1e308], A.SUM),
        },
        1,
    )
    writer.close()
    acc = accumulator(tmp_path / "c")
    assert math.isinf(acc.Scalars("huge")[0].value)  # 1e308 is past float32, the scalar's type
    assert math.isnan(acc.Scalars("opposed")[0].value)
    assert acc.Scalars("total")[0].value == math.inf
    histogram = acc.Histograms("huge_hist")[0].histogram_value
    assert (histogram.num, histogram.min, histogram.max, histogram.sum) == (2, 1e308, 1e308, math.inf)


def test_histogram_proto_edges():
    proto, dropped = histogram_proto([2.0, 2.0, 2.0])
    assert dropped == 0 and list(proto.bucket_limit) == [2.0] and list(proto.bucket) == [3.0]
    proto, _ = histogram_proto(list(range(1000)))
    assert len(proto.bucket) <= 30 and sum(proto.bucket) == 1000
    assert list(proto.bucket_limit) == sorted(proto.bucket_limit)
    assert histogram_proto([]) == (None, 0)


def test_hyperparameters_text(tmp_path, writer):
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"batch_size": 64, "network": {"hidden_units": 128}})
    writer.add_property("c", StatsPropertyType.SELF_PLAY, True)  # ignored, as in ML-Agents
    writer.close()
    acc = accumulator(tmp_path / "c")
    assert acc.Tags()["tensors"] == ["Hyperparameters"]
    [event] = acc.Tensors("Hyperparameters")
    text = event.tensor_proto.string_val[0].decode()
    assert "| batch_size | 64 |" in text and "| network.hidden_units | 128 |" in text
    assert acc.SummaryMetadata("Hyperparameters").plugin_data.plugin_name == "text"


def test_flushed_on_flush_not_per_key(tmp_path):
    writer = TensorboardWriter(str(tmp_path), flush_secs=3600)
    try:
        writer.write_stats("c", {f"k{i}": StatsSummary([float(i)], A.AVERAGE) for i in range(5)}, 1)
        writer.flush()
        acc = accumulator(tmp_path / "c")
        assert len(acc.Tags()["scalars"]) == 5
    finally:
        writer.close()


def test_flushed_at_a_write_once_flush_secs_passed(tmp_path):
    # No thread: a write after flush_secs flushes itself and what came before.
    now = [0.0]
    writer = TensorboardWriter(str(tmp_path), flush_secs=0.2, clock=lambda: now[0])
    try:
        writer.write_stats("c", {"k": StatsSummary([1.0], A.AVERAGE)}, 1)
        now[0] += 0.3
        writer.write_stats("c", {"k": StatsSummary([2.0], A.AVERAGE)}, 2)
        assert scalars(accumulator(tmp_path / "c"), "k") == [(1, 1.0), (2, 2.0)]
    finally:
        writer.close()


def test_not_flushed_per_write_but_visible_after_flush_without_close(tmp_path):
    writer = TensorboardWriter(str(tmp_path), flush_secs=3600)
    try:
        for step in range(1, 4):
            writer.write_stats("c", {"k": StatsSummary([float(step)], A.AVERAGE)}, step)
        assert accumulator(tmp_path / "c").Tags()["scalars"] == []  # still buffered
        writer.flush()
        assert scalars(accumulator(tmp_path / "c"), "k") == [(1, 1.0), (2, 2.0), (3, 3.0)]
        writer.write_stats("c", {"k": StatsSummary([4.0], A.AVERAGE)}, 4)
        writer.flush()
        assert scalars(accumulator(tmp_path / "c"), "k")[-1] == (4, 4.0)
    finally:
        writer.close()


def _float32(value):
    # simple_value is a float in the proto: TensorBoard reads back its float32 rounding.
    return struct.unpack("<f", struct.pack("<f", value))[0]


def test_many_writes_read_back_exactly(tmp_path):
    summaries = {}
    writer = TensorboardWriter(str(tmp_path), clear_past_data=True, flush_secs=3600)
    try:
        for step in range(1, 1001):
            values = {
                "Policy/Entropy": StatsSummary([step * 0.001, step * 0.003], A.AVERAGE),
                "Env/Count": StatsSummary([step, 1e-3, -0.0], A.SUM),
                "Env/Last": StatsSummary([-step / 7.0], A.MOST_RECENT),
                "Env/Empty": StatsSummary([], A.AVERAGE),
                "Step": StatsSummary([float(step)], A.AVERAGE),  # hidden
            }
            summaries[step] = values
            writer.write_stats("c", values, step)
    finally:
        writer.close()
    acc = accumulator(tmp_path / "c")
    assert sorted(acc.Tags()["scalars"]) == ["Env/Count", "Env/Empty", "Env/Last", "Policy/Entropy"]
    for tag in ("Policy/Entropy", "Env/Count", "Env/Last"):
        expected = [(step, _float32(float(v[tag].aggregated_value))) for step, v in summaries.items()]
        assert scalars(acc, tag) == expected
    empty = scalars(acc, "Env/Empty")
    assert [s for s, _ in empty] == list(range(1, 1001)) and all(math.isnan(v) for _, v in empty)


def test_torn_last_record_keeps_earlier_events_readable(tmp_path):
    writer = TensorboardWriter(str(tmp_path))
    for step in range(1, 11):
        write_at(writer, step * 10, "c", {"k": StatsSummary([float(step)], A.AVERAGE)}, step)
    writer.close()
    [name] = event_files(tmp_path / "c")
    path = tmp_path / "c" / name
    os.truncate(path, os.path.getsize(path) - 3)  # a crash mid-record
    assert scalars(accumulator(tmp_path / "c"), "k") == [(s, float(s)) for s in range(1, 10)]

    # A restarted worker of the run reads back position 90 (the torn summary's position
    # record is whole, the summary is not) and goes on in a new file.
    restarted = TensorboardWriter(str(tmp_path), start_time=time.time() - 60)
    write_at(restarted, 90, "c", {"k": StatsSummary([9.5], A.AVERAGE)}, 9)  # replayed: dropped
    write_at(restarted, 100, "c", {"k": StatsSummary([10.0], A.AVERAGE)}, 10)  # torn off: written again
    write_at(restarted, 110, "c", {"k": StatsSummary([11.0], A.AVERAGE)}, 11)
    restarted.close()
    assert len(event_files(tmp_path / "c")) == 2
    assert scalars(accumulator(tmp_path / "c"), "k")[-3:] == [(9, 9.0), (10, 10.0), (11, 11.0)]


def test_two_writers_in_one_second_get_distinct_files(tmp_path):
    values = {"k": StatsSummary([1.0], A.AVERAGE)}
    first, second = TensorboardWriter(str(tmp_path)), TensorboardWriter(str(tmp_path))
    first.write_stats("c", values, 1)
    second.write_stats("c", values, 2)
    first.close()
    second.close()
    names = event_files(tmp_path / "c")
    assert len(names) == 2
    assert sorted(s for s, _ in scalars(accumulator(tmp_path / "c"), "k")) == [1, 2]


def test_replays_are_dropped_by_journal_position_across_restart_late_summaries_are_not(tmp_path):
    start = time.time() - 1
    values = {"k": StatsSummary([1.0], A.AVERAGE)}
    first = TensorboardWriter(str(tmp_path), clear_past_data=True, start_time=start)
    first.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(first, 100, "c", values, 10)
    write_at(first, 200, "c", {"k": StatsSummary([3.0], A.AVERAGE)}, 10)  # a second summary at step 10
    write_at(first, 200, "c", values, 10)  # the same entry again: a replay
    write_at(first, 300, "c", values, 9)  # an older step in a newer entry: written
    first.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(first, 400, "d", values, 1)
    first.close()

    # A restarted worker of the same run: keeps the files, reads back the positions (per category).
    restarted = TensorboardWriter(str(tmp_path), clear_past_data=True, start_time=start)
    restarted.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(restarted, 300, "c", values, 9)
    write_at(restarted, 400, "d", values, 1)
    write_at(restarted, 500, "c", {"k": StatsSummary([2.0], A.AVERAGE)}, 20)
    restarted.close()
    acc = accumulator(tmp_path / "c")
    assert scalars(acc, "k") == [(10, 1.0), (10, 3.0), (9, 1.0), (20, 2.0)]
    assert len(acc.Tensors("Hyperparameters")) == 1
    assert scalars(accumulator(tmp_path / "d"), "k") == [(1, 1.0)]


@pytest.mark.parametrize("step, position", [(0, 0), (5, 127), (128, 2**40 + 3), (2**48 - 1, 2**63 - 1)])
def test_the_hand_encoded_position_record_is_the_protobuf_event(step, position):
    from tensorboard.compat.proto import event_pb2

    want = event_pb2.Event(wall_time=1700000000.25, step=step, log_message=event_pb2.LogMessage(
        level=event_pb2.LogMessage.DEBUGGING, message=f"{POSITION_MESSAGE}{position}"))
    assert event_pb2.Event.FromString(position_event(1700000000.25, step, position)) == want


def test_outside_a_worker_host_every_summary_is_written(tmp_path, writer):
    for step in (3, 3, 1):
        writer.write_stats("c", {"k": StatsSummary([float(step)], A.AVERAGE)}, step)
    writer.flush()
    assert scalars(accumulator(tmp_path / "c"), "k") == [(3, 3.0), (3, 3.0), (1, 1.0)]


FRESH_THEN_RESTARTED = """
import sys, time
from statbus.plugins import StatsAggregationMethod, StatsPropertyType, StatsSummary
from statbus.plugins.delivery import set_journal_position
from statbus.plugins.writers.tensorboard import TensorboardWriter
set_journal_position(5)  # both deliver the entry at 5: the restarted one drops it
LOADER = "tensorboard.backend.event_processing.event_file_loader"
start = time.time() - 1
fresh = TensorboardWriter(sys.argv[1], clear_past_data=True, start_time=start)
fresh.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
fresh.write_stats("c", {"k": StatsSummary([1.0], StatsAggregationMethod.AVERAGE)}, 10)
fresh.close()
print(LOADER in sys.modules)
restarted = TensorboardWriter(sys.argv[1], clear_past_data=True, start_time=start)
restarted.write_stats("c", {"k": StatsSummary([1.0], StatsAggregationMethod.AVERAGE)}, 10)
restarted.close()
print(LOADER in sys.modules)
"""


def test_only_a_restarted_writer_imports_tensorboards_reader(tmp_path):
    # The reader costs a worker 0.4 s of CPU at start (fsspec, the tensorflow stub): a
    # fresh run has nothing of its own to read back, so it must not import it.
    done = subprocess.run([sys.executable, "-c", FRESH_THEN_RESTARTED, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
    assert [step for step, _ in scalars(accumulator(tmp_path / "c"), "k")] == [10]


def test_past_runs_cleared_unless_resume(tmp_path):
    values = {"k": StatsSummary([1.0], A.AVERAGE)}
    old = TensorboardWriter(str(tmp_path), start_time=time.time() - 10)
    old.write_stats("c", values, 10)
    old.close()
    [old_file] = event_files(tmp_path / "c")

    resumed = TensorboardWriter(str(tmp_path), clear_past_data=False, start_time=time.time() + 1)
    resumed.write_stats("c", values, 10)  # not a replay: the old file is another run's
    resumed.close()
    assert old_file in event_files(tmp_path / "c")
    assert [s for s, _ in scalars(accumulator(tmp_path / "c"), "k")] == [10, 10]

    fresh = TensorboardWriter(str(tmp_path), clear_past_data=True, start_time=time.time() + 2)
    fresh.write_stats("c", values, 5)
    fresh.close()
    assert old_file not in event_files(tmp_path / "c")
    assert scalars(accumulator(tmp_path / "c"), "k") == [(5, 1.0)]


def test_registration(tmp_path):
    options = RunOptions.create("r", results_dir=str(tmp_path)).with_plugin_options(
        {"hidden_keys": ["Secret"], "flush_secs": 1}
    )
    [writer] = get_tensorboard_writer(options)
    try:
        # A run not started over on purpose keeps its past event files.
        assert writer.hidden_keys == {"Secret"} and not writer.clear_past_data and writer.flush_secs == 1.0
        writer.write_stats("c", {"Secret": StatsSummary([1.0], A.AVERAGE), "k": StatsSummary([2.0], A.AVERAGE)}, 3)
    finally:
        writer.close()
    assert accumulator(tmp_path / "r" / "c").Tags()["scalars"] == ["k"]


def test_registration_clears_past_data_only_when_forced(tmp_path):
    forced = RunOptions.create("r", results_dir=str(tmp_path))
    forced = dataclasses.replace(
        forced, checkpoint_settings=dataclasses.replace(forced.checkpoint_settings, force=True)
    )
    continued = RunOptions.create("r", results_dir=str(tmp_path), resume=False)
    [writer] = get_tensorboard_writer(forced)
    [kept] = get_tensorboard_writer(continued)
    try:
        assert writer.clear_past_data and not kept.clear_past_data
    finally:
        writer.close()
        kept.close()
