"""One live worker host per plugin of a run (workers/host/plugin_lock.py).

A collector killed with SIGKILL leaves its hosts running for a while; the next collector's
host of the same plugin must not deliver beside them.  Two real hosts of the built-in
``jsonl`` plugin on one state page, against one stand-in collector: the second waits, says
for whom, and delivers only once the first has ended; every summary is in stats.jsonl once.
"""

from __future__ import annotations

import collections
import os
import signal

from host_process import read_lines, start, summary
from statbus.plugins.discovery import PluginInfo
from statbus.plugins.groups import STATBUS_STATS_WRITER
from statbus.workers.exits import ExitCode
from statbus.workers.host.plugin_lock import lock_path
from statbus.workers.statepage import HostState
from waiting import holds_for, wait_for

JSONL = PluginInfo(STATBUS_STATS_WRITER, "jsonl", "statbus.plugins.writers.jsonl:get_jsonl_writer", None, None)


def steps_written(path: str):
    return collections.Counter(line["step"] for line in read_lines(path) if "step" in line)


def test_a_second_host_of_a_plugin_waits_for_the_first_and_nothing_is_written_twice(tmp_path, fake_collector, hosts):
    for step in range(1, 6):
        fake_collector.add(*summary("A", step, x=[float(step)]))
    first = start(hosts, tmp_path, JSONL, fake_collector.address)
    first.wait_ready()
    stats = os.path.join(first.results, "run1", "stats.jsonl")
    wait_for(lambda: first.page.committed == fake_collector.end, what="the first host's delivery")

    # The second host of the plugin (a next collector's, say) on the same page, while the first lives.
    second = start(hosts, tmp_path, JSONL, fake_collector.address, state_file=first.state_file)
    wait_for(lambda: f"(pid {first.proc.pid}) is still running" in second.log(), what="the second host saying it waits")
    for step in range(6, 11):
        fake_collector.add(*summary("A", step, x=[float(step)]))
    wait_for(lambda: first.page.committed == fake_collector.end, what="the first host delivering the new summaries")
    # Both would have fetched the new summaries and written them; the second only waits.
    once = {step: 1 for step in range(1, 11)}
    holds_for(lambda: steps_written(stats) == once and second.page.state == HostState.STARTING, 1.0,
              what=lambda: f"the second host waiting, not delivering: steps written {steps_written(stats)}")

    first.proc.send_signal(signal.SIGKILL)  # a death the host cannot clean up after: the kernel frees the lock
    first.wait_exit()
    second.wait_ready()
    assert "the earlier worker host ended" in second.log()
    for step in range(11, 14):
        fake_collector.add(*summary("A", step, x=[float(step)]))
    wait_for(lambda: second.page.committed == fake_collector.end, what="the second host's delivery")
    assert steps_written(stats) == {step: 1 for step in range(1, 14)}
    with open(lock_path(first.state_file), encoding="ascii") as handle:
        assert handle.read().strip() == str(second.proc.pid)

    second.proc.send_signal(signal.SIGTERM)
    assert second.wait_exit() == ExitCode.OK, second.log()


def test_a_host_told_to_stop_while_it_waits_exits_at_once_and_writes_nothing(tmp_path, fake_collector, hosts):
    fake_collector.add(*summary("A", 1, x=[1.0]))
    first = start(hosts, tmp_path, JSONL, fake_collector.address)
    first.wait_ready()
    wait_for(lambda: first.page.committed == fake_collector.end, what="the first host's delivery")
    second = start(hosts, tmp_path, JSONL, fake_collector.address, state_file=first.state_file)
    wait_for(lambda: "is still running" in second.log(), what="the second host saying it waits")
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait_exit() == ExitCode.OK, second.log()
    assert "stopped while waiting for an earlier worker host" in second.log()
    assert first.proc.poll() is None
    assert steps_written(os.path.join(first.results, "run1", "stats.jsonl")) == {1: 1}
