"""The worker host as a real process (host_process.Host), against a stand-in collector in the test.

Its heartbeat (parent gone, a stuck call) is in test_heartbeat.py, its plugin loading in test_loading.py.
"""

from __future__ import annotations

import os
import signal
from typing import List, Tuple

import msgpack
import pytest

from host_process import BATCH, Host, batch, prop, read_lines, start, stat, summary
from statbus.plugins import StatsAggregationMethod, StatsPropertyType, StatsWriter
from statbus.plugins.records import pack_values
from statbus.workers.exits import ExitCode
from statbus.workers.host.dispatch import Writers, overrides
from statbus.workers.statepage import NO_INFLIGHT, HostState, StatePage
from waiting import wait_for
from zoo import zoo_output, zoo_plugin


# --- delivery -------------------------------------------------------------------------

def test_delivery_order_commit_and_graceful_stop(tmp_path, fake_collector, hosts):
    fake_collector.add(*batch(
        stat("A", "x", [1.0, 2.0]),
        prop("A", {"lr": 0.1}),
        [4, {"pid": 1}],  # a pipeline marker (hello) inside the batch: not for writers
        stat("A", "y", [3.0], StatsAggregationMethod.SUM),
    ))
    fake_collector.add(BATCH, b"\xc1 not msgpack")  # malformed: skipped, not fatal
    summary_position = fake_collector.add(*summary("A", 10, x=[1.0, 2.0], y=[3.0]))
    host = start(hosts, tmp_path, zoo_plugin("recorder"), fake_collector.address, options={"writers": 2})
    host.wait_ready()
    wait_for(lambda: host.page.committed == fake_collector.end, what="commit of everything")
    snap = host.page.snapshot()
    assert snap.delivered == 3 and snap.summaries == 1 and snap.inflight == NO_INFLIGHT
    assert fake_collector.fetches[0] == 0
    wait_for(lambda: fake_collector.fetches[-1] == fake_collector.end, what="the next fetch after the commit")

    host.proc.send_signal(signal.SIGTERM)
    assert host.wait_exit() == ExitCode.OK, host.log()
    assert host.page.state == HostState.STOPPING
    calls = [c for c in read_lines(zoo_output(host.results, "run1", "recorder"))]
    delivered = [c for c in calls if c["call"] not in ("flush", "close")]
    assert [(c["call"], c["writer"], c.get("key"), c.get("value")) for c in delivered] == [
        ("on_add_stat", 0, "x", 1.0), ("on_add_stat", 1, "x", 1.0),
        ("on_add_stat", 0, "x", 2.0), ("on_add_stat", 1, "x", 2.0),
        ("add_property", 0, None, {"lr": 0.1}), ("add_property", 1, None, {"lr": 0.1}),
        ("on_add_stat", 0, "y", 3.0), ("on_add_stat", 1, "y", 3.0),
        ("write_stats", 0, None, None), ("write_stats", 1, None, None),
    ]
    assert delivered[-1]["values"] == {"x": [1.0, 2.0], "y": [3.0]} and delivered[-1]["step"] == 10
    assert delivered[0]["aggregation"] == "AVERAGE" and delivered[6]["aggregation"] == "SUM"
    # flush() after the deliveries, close() at the end, each writer.
    last_write = max(i for i, c in enumerate(calls) if c["call"] == "write_stats")
    assert {c["writer"] for c in calls[last_write:] if c["call"] == "flush"} == {0, 1}
    assert [c["call"] for c in calls[-2:]] == ["close", "close"]
    assert "skipping malformed entry" in host.log()
    assert summary_position < fake_collector.end


def test_committed_advances_only_after_writers_return_and_restart_resumes(tmp_path, fake_collector, hosts):
    gate = tmp_path / "gate"
    first = fake_collector.add(*summary("A", 1, x=[1.0]))
    fake_collector.add(*summary("A", 2, x=[2.0]))
    host = start(hosts, tmp_path, zoo_plugin("recorder"), fake_collector.address, options={"block_on": str(gate)})
    host.wait_ready()
    wait_for(lambda: host.page.inflight == first and host.page.busy_since > 0, what="the blocked write")
    heartbeat = host.page.heartbeat
    wait_for(lambda: host.page.heartbeat > heartbeat, what="heartbeats while a writer is busy")
    assert host.page.committed == 0
    assert set(fake_collector.fetches) == {0}
    gate.touch()
    wait_for(lambda: host.page.committed == fake_collector.end, what="the commit")
    end_one = fake_collector.end
    host.proc.send_signal(signal.SIGTERM)
    assert host.wait_exit() == ExitCode.OK, host.log()

    # A new host on the same page resumes after the committed cursor.
    third = fake_collector.add(*summary("A", 3, x=[3.0]))
    fetches_before = len(fake_collector.fetches)
    again = start(hosts, tmp_path, zoo_plugin("recorder"), fake_collector.address, options={"block_on": str(gate)},
                  state_file=host.state_file)
    again.wait_ready()
    wait_for(lambda: again.page.committed == fake_collector.end, what="the resumed commit")
    assert fake_collector.fetches[fetches_before] == end_one
    steps = [c["step"] for c in read_lines(zoo_output(host.results, "run1", "recorder")) if c["call"] == "write_stats"]
    assert steps == [1, 2, 3]
    assert third == end_one


def test_sigterm_finishes_the_current_entry_commits_and_exits_0(tmp_path, fake_collector, hosts):
    gate = tmp_path / "gate"
    first = fake_collector.add(*summary("A", 1, x=[1.0]))
    second = fake_collector.add(*summary("A", 2, x=[2.0]))
    host = start(hosts, tmp_path, zoo_plugin("recorder"), fake_collector.address, options={"block_on": str(gate)})
    host.wait_ready()
    wait_for(lambda: host.page.inflight == first, what="the blocked write")
    host.proc.send_signal(signal.SIGTERM)
    assert host.proc.poll() is None
    gate.touch()
    assert host.wait_exit() == ExitCode.OK, host.log()
    # The entry in hand was finished, flushed and committed; the next one was left for later.
    assert host.page.committed == second and host.page.inflight == NO_INFLIGHT
    calls = read_lines(zoo_output(host.results, "run1", "recorder"))
    assert [c["call"] for c in calls] == ["write_stats", "flush", "close"]


# --- failures and their exit codes -------------------------------------------------------

@pytest.mark.parametrize(
    "plugin, code, message",
    [
        ("import_error", ExitCode.IMPORT_FAILURE, "fails to import on purpose"),
        ("register_raises", ExitCode.REGISTRATION_FAILURE, "raises in its registration function"),
        ("not_a_writer", ExitCode.REGISTRATION_FAILURE, "not a StatsWriter"),
        ("write_raises", ExitCode.WRITER_CRASH, "raises in write_stats"),
    ],
)
def test_failures_exit_with_their_code_and_error_line(tmp_path, fake_collector, hosts, plugin, code, message):
    fake_collector.add(*batch(stat("A", "x", [1.0])))
    position = fake_collector.add(*summary("A", 1, x=[1.0]))
    host = start(hosts, tmp_path, zoo_plugin(plugin), fake_collector.address)
    assert host.wait_exit() == code, host.log()
    error = host.last_error()
    assert error is not None and error.startswith(f"{code.name}: ") and message in error, host.log()
    if code == ExitCode.WRITER_CRASH:
        assert host.page.inflight == position
        assert f"position {position}" in error
        assert "Traceback" in host.log()


@pytest.mark.parametrize("plugin, returncode", [("segfault", -signal.SIGSEGV), ("exit_now", 3)])
def test_hard_deaths_leave_the_inflight_position(tmp_path, fake_collector, hosts, plugin, returncode):
    position = fake_collector.add(*summary("A", 1, x=[1.0]))
    host = start(hosts, tmp_path, zoo_plugin(plugin), fake_collector.address)
    assert host.wait_exit() == returncode, host.log()
    assert host.page.inflight == position and host.page.committed == 0


def test_poison_record_kills_at_its_position(tmp_path, fake_collector, hosts):
    fake_collector.add(*summary("Good", 1, x=[1.0]))
    poison = fake_collector.add(*summary("Poison", 2, x=[2.0]))
    host = start(hosts, tmp_path, zoo_plugin("poison"), fake_collector.address)
    assert host.wait_exit() == ExitCode.WRITER_CRASH, host.log()
    assert host.page.inflight == poison
    assert [c["category"] for c in read_lines(zoo_output(host.results, "run1", "poison"))] == ["Good"]


def test_flaky_writes_every_summary_before_it_crashes(tmp_path, fake_collector, hosts):
    fake_collector.add(*summary("A", 7, x=[1.0]))
    host = start(hosts, tmp_path, zoo_plugin("flaky"), fake_collector.address, options={"one_in": 1, "seed": 3})
    assert host.wait_exit() in (ExitCode.WRITER_CRASH, 1, -signal.SIGKILL), host.log()
    assert [c["step"] for c in read_lines(zoo_output(host.results, "run1", "flaky"))] == [7]


def test_a_restarted_host_commits_a_backlog_summary_by_summary(tmp_path, fake_collector, hosts):
    # A plugin that dies at its third summary of every life, given six at once: with the
    # backlog committed as one, every life would redo summaries 1 and 2 and die at 3.
    positions = [fake_collector.add(*summary("A", step, x=[float(step)])) for step in range(1, 7)]
    first = start(hosts, tmp_path, zoo_plugin("exit_third"), fake_collector.address)
    assert first.wait_exit() == 1, first.log()
    assert first.page.committed == positions[2]
    again = start(hosts, tmp_path, zoo_plugin("exit_third"), fake_collector.address, state_file=first.state_file)
    assert again.wait_exit() == 1, again.log()
    assert again.page.committed == positions[4]
    steps = [c["step"] for c in read_lines(zoo_output(first.results, "run1", "exit_third"))]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("args", [["--run-options", "{not json"], ["--run-options", '{"nope": 1}'], ["--bogus"]])
def test_bad_config_exits_64(tmp_path, fake_collector, hosts, args):
    host = Host(tmp_path, zoo_plugin("good"), fake_collector.address)
    index = host.args.index("--run-options")
    host.args = host.args[:index] + args
    if "--run-options" not in args:
        host.args += ["--run-options", "{}"]
    host.start()
    hosts.append(host)
    assert host.wait_exit() == ExitCode.BAD_CONFIG
    assert host.last_error().startswith("BAD_CONFIG: ")


def test_lost_collector_exits_68(tmp_path, fake_collector, hosts):
    fake_collector.add(*summary("A", 1, x=[1.0]))
    host = start(hosts, tmp_path, zoo_plugin("good"), fake_collector.address)
    host.wait_ready()
    wait_for(lambda: host.page.committed == fake_collector.end, what="the first commit")
    fake_collector.serving = False
    assert host.wait_exit(timeout=60) == ExitCode.LOST_COLLECTOR, host.log()
    assert host.last_error().startswith("LOST_COLLECTOR: ")


def test_sigterm_while_waiting_for_data_exits_0(tmp_path, fake_collector, hosts):
    host = start(hosts, tmp_path, zoo_plugin("good"), fake_collector.address)
    host.wait_ready()
    wait_for(lambda: len(fake_collector.fetches) >= 2, what="parked fetches")
    host.proc.send_signal(signal.SIGTERM)
    assert host.wait_exit() == ExitCode.OK, host.log()


# --- ML-Agents-style plugins, unmodified ---------------------------------------------------

def test_mlagents_style_plugins_run_unmodified(tmp_path, fake_collector, hosts):
    from statbus.plugins.discovery import find_plugin

    fake_collector.add(*batch(prop("Env", {"lr": 0.5})))
    fake_collector.add(*summary("Env", 5, reward=[1.0, 3.0]))
    fake_collector.add(*summary("Env", 6, reward=[4.0]))
    zoo_host = start(hosts, tmp_path / "zoo", zoo_plugin("mlagents_style"), fake_collector.address)
    try:
        example = find_plugin("example", "mlagents.stats_writer")
    except Exception:  # noqa: BLE001 — the example distribution is installed by another part of the project
        example = None
    example_host = start(hosts, tmp_path / "example", example, fake_collector.address) if example else None
    for host in filter(None, (zoo_host, example_host)):
        host.wait_ready()
        wait_for(lambda: host.page.committed == fake_collector.end, what="everything committed")
        host.proc.send_signal(signal.SIGTERM)
        assert host.wait_exit() == ExitCode.OK, host.log()
    lines = read_lines(zoo_output(zoo_host.results, "run1", "mlagents_style"))
    assert lines == [
        {"category": "Env", "property": "hyperparameters"},
        {"category": "Env", "step": 5, "means": {"reward": 2.0}, "sums": {}},
        {"category": "Env", "step": 6, "means": {"reward": 4.0}, "sums": {}},
    ]
    if example_host is None:
        pytest.skip("the example plugin distribution is not installed")
    with open(os.path.join(example_host.results, "run1", "example_plugin.txt"), encoding="utf-8") as handle:
        text = handle.read().splitlines()
    # Every summary, once; whether it also logs properties is the example's own business.
    assert [line for line in text if " property " not in line] == ["Env 5 reward=2", "Env 6 reward=4"]


# --- in-process: what the host skips for speed -------------------------------------------------

class _SummariesOnly(StatsWriter):
    def write_stats(self, category, values, step):
        pass


class _PerValue(_SummariesOnly):
    def on_add_stat(self, category, key, value, aggregation=StatsAggregationMethod.AVERAGE):
        pass


class _DuckTyped:
    def write_stats(self, category, values, step):
        pass


def test_on_add_stat_is_skipped_for_writers_that_do_not_override_it(tmp_path):
    patched = _SummariesOnly()
    patched.on_add_stat = lambda *args: None
    assert not overrides(_SummariesOnly(), "on_add_stat")
    assert overrides(_PerValue(), "on_add_stat")
    assert not overrides(_DuckTyped(), "on_add_stat")
    assert overrides(patched, "on_add_stat")
    with StatePage(str(tmp_path / "p.state"), create=True) as page:
        assert not Writers([_SummariesOnly(), _DuckTyped()], page).needs_batches
        assert Writers([_SummariesOnly(), _PerValue()], page).needs_batches


class _PropertiesOnly(_SummariesOnly):
    def __init__(self) -> None:
        self.properties: List[Tuple[str, object, object]] = []

    def add_property(self, category, property_type, value):
        self.properties.append((category, property_type, value))


def test_a_writer_without_on_add_stat_gets_every_property_of_a_batch(tmp_path):
    from statbus.workers.fetch_protocol import EntryKind, FetchedEntry

    writer = _PropertiesOnly()
    batch = msgpack.packb(
        [[0, "c", "k", 0, 0, pack_values([1.0, 2.0])], [2, "c", "hyperparameters", {"lr": 1}], [3, "c", 4],
         [2, "c", "selfplay", True]],
        use_bin_type=True,
    )
    with StatePage(str(tmp_path / "p.state"), create=True) as page:
        writers = Writers([writer], page)
        assert writers.needs_batches
        assert writers.deliver(FetchedEntry(10, EntryKind.BATCH, batch)) is False
    assert writer.properties == [("c", StatsPropertyType.HYPERPARAMETERS, {"lr": 1}), ("c", StatsPropertyType.SELF_PLAY, True)]


class _MediaTaker(_PropertiesOnly):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.media: List[Tuple[str, str, object, int]] = []
        self.fail = fail

    def add_media(self, category, tag, media, step):
        if self.fail:
            raise RuntimeError("cannot encode")
        self.media.append((category, tag, media, step))


def test_media_go_to_the_writers_that_define_add_media_only_and_a_raise_is_a_crash(tmp_path):
    from statbus.plugins.media import Media, MediaKind
    from statbus.plugins.records import MediaRecord
    from statbus.workers.fetch_protocol import EntryKind, FetchedEntry
    from statbus.workers.host.dispatch import WriterCrash

    image = Media(MediaKind.IMAGE, (2, 2), "uint8", b"\x00\x01\x02\x03", {"dataformats": "HW"})
    record = MediaRecord("c", "img", 3, image)
    batch = msgpack.packb([[4, {"pid": 1}], record.to_msgpack(), [7, 2, 10]], use_bin_type=True)
    taker, summaries_only, properties_only = _MediaTaker(), _SummariesOnly(), _PropertiesOnly()
    assert not overrides(summaries_only, "add_media") and overrides(taker, "add_media")
    with StatePage(str(tmp_path / "p.state"), create=True) as page:
        writers = Writers([summaries_only, taker, properties_only], page)
        assert Writers([_MediaTaker()], page).needs_batches
        writers.deliver(FetchedEntry(10, EntryKind.BATCH, batch))
        assert taker.media == [("c", "img", record.media, 3)] and properties_only.properties == []
        with pytest.raises(WriterCrash, match=r"_MediaTaker.add_media raised RuntimeError\('cannot encode'\)"):
            Writers([_MediaTaker(fail=True)], page).deliver(FetchedEntry(11, EntryKind.BATCH, batch))
