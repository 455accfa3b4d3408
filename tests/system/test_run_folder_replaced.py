"""A run folder deleted or replaced under its on-demand collector, then the same training again.

Real trainer processes start the run's collector on demand; the folder goes (``rm -rf``,
or moved away and a new one made in its place) while that collector waits out its idle
period; a second training must land in the folder now at the path, and the old
collector and its workers must be gone.  And the ``statbus`` command finds a collector
whose pidfile is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Dict, Iterator, List

import psutil
import pytest

from chaos_helpers import tensorboard_steps
from collector_helpers import end_daemon, remove_socket_dir_if_dead
from statbus.pipeline.collector.lifecycle.pidfile import running_pid
from statbus.pipeline.collector.lifecycle.socket_dirs import owner_pid
from statbus.pipeline.layout import RunLayout
from statbus.plugins.discovery import discover_plugins
from waiting import wait_for

KEEP = ("jsonl", "tensorboard")

TRAINER = """
import sys
from statbus.pipeline import StatsReporter, flush, shutdown
base, steps = float(sys.argv[1]), int(sys.argv[2])
reporter = StatsReporter("Cat")
for step in range(1, steps + 1):
    for i in range(10):
        reporter.add_stat("v", base + step * 10 + i)
    reporter.write_stats(step)
ok = flush(60)
shutdown()
sys.exit(0 if ok else 3)
"""


def statbus(*args: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "statbus.pipeline.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run(tmp_path) -> Iterator[Dict]:
    """The run's layout and the trainers' environment; every collector (and worker) seen is killed at the end."""
    layout = RunLayout(str(tmp_path / "results"), "exp")
    others = sorted({p.name for p in discover_plugins()} - {*KEEP, "default"})
    settings = tmp_path / "plugins.toml"
    settings.write_text("".join(f"[plugins.{name}]\nenabled = false\n\n" for name in others))
    env = dict(os.environ, STATBUS_RUN_ID=layout.run_id, STATBUS_RESULTS_DIR=layout.results_dir,
               STATBUS_CONFIG=str(settings), STATBUS_IDLE_EXIT="300")
    env.pop("STATBUS_AUTOSTART", None)
    seen: List[psutil.Process] = []
    try:
        yield {"layout": layout, "env": env, "seen": seen}
    finally:
        end_daemon(layout)
        for process in seen:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(seen, timeout=10)
        remove_socket_dir_if_dead(layout)  # what a collector killed here could not remove


def train(run: Dict, base: float, steps: int) -> None:
    trainer = subprocess.run([sys.executable, "-c", TRAINER, str(base), str(steps)], env=run["env"], timeout=120)
    assert trainer.returncode == 0, "the training's values were not all acknowledged"


def collector_family(run: Dict) -> List[psutil.Process]:
    """The run's live collector and its workers, remembered for the cleanup."""
    layout = run["layout"]
    pid = wait_for(lambda: running_pid(layout.pid_file), timeout=30, what="the on-demand collector")
    collector = psutil.Process(pid)
    # Its workers: one per plugin kept (wait until both started).
    wait_for(lambda: len(collector.children(recursive=True)) >= len(KEEP), timeout=60, what="its workers")
    family = [collector, *collector.children(recursive=True)]
    run["seen"].extend(family)
    return family


def read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def jsonl_rows(run_dir: str) -> List[Dict]:
    """The rows of the run's stats.jsonl (none before the writer made it)."""
    try:
        with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def expected_rows(base: float, steps: int) -> List[tuple]:
    return [(step, 10, sum(base + step * 10 + i for i in range(10)) / 10) for step in range(1, steps + 1)]


def summaries(run_dir: str) -> List[tuple]:
    return [(row["step"], row["values"]["v"]["num"], row["values"]["v"]["mean"])
            for row in jsonl_rows(run_dir) if row["category"] == "Cat"]


def event_steps(run_dir: str) -> tuple:
    """The steps of Cat/v as TensorBoard shows them and as the event files hold them (none yet: empty)."""
    if not os.path.isdir(os.path.join(run_dir, "Cat")):
        return [], []
    return tensorboard_steps(os.path.join(run_dir, "Cat"), "v")


def gone(family: List[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family)


def train_again_after(run: Dict, change_folder) -> List[psutil.Process]:
    """Train, ``change_folder()`` while the on-demand collector idles, train again; the old family."""
    layout = run["layout"]
    train(run, 1000.0, 3)
    old = collector_family(run)
    # As a user would: the first training's stats are there to see before the folder goes.
    wait_for(lambda: [s for s, _, _ in summaries(layout.run_dir)] == [1, 2, 3], timeout=60,
             what="the first training in stats.jsonl")
    wait_for(lambda: event_steps(layout.run_dir) == ([1, 2, 3],) * 2, timeout=60,
             what=lambda: f"the first training in TensorBoard, not {event_steps(layout.run_dir)}")
    change_folder()
    train(run, 2000.0, 5)
    # The old collector noticed, stopped its workers and left; the new one serves the new folder.
    wait_for(lambda: gone(old), timeout=30, what=lambda: f"the old collector and its workers {old} to exit")
    new = collector_family(run)
    assert new[0].pid != old[0].pid
    assert owner_pid(layout.socket_dir) == new[0].pid
    wait_for(lambda: len(summaries(layout.run_dir)) >= 5, timeout=60, what="the second training in stats.jsonl")
    assert summaries(layout.run_dir) == expected_rows(2000.0, 5)
    wait_for(lambda: event_steps(layout.run_dir) == ([1, 2, 3, 4, 5],) * 2, timeout=60,
             what=lambda: f"the second training in TensorBoard, not {event_steps(layout.run_dir)}")
    return old


def test_a_training_after_rm_rf_of_the_results_lands_in_the_new_folder(run) -> None:
    layout = run["layout"]
    train_again_after(run, lambda: shutil.rmtree(layout.results_dir))
    log = read_text(layout.log_file)
    assert log.count("statbus collector ready") == 1, log  # the new folder's log: one collector, the new one


def test_a_training_after_the_run_folder_was_replaced_lands_in_the_new_one(run) -> None:
    layout = run["layout"]
    moved = layout.run_dir + ".old"

    def replace() -> None:
        os.rename(layout.run_dir, moved)
        os.makedirs(layout.run_dir)

    train_again_after(run, replace)
    # Nothing of the second training went into the folder moved away, and its collector said why it left.
    assert summaries(moved) == expected_rows(1000.0, 3)
    assert event_steps(moved) == ([1, 2, 3],) * 2
    log = read_text(os.path.join(moved, "statbus", "collector.log"))
    # (Moved away, if its tick came between the move and the mkdir.)
    assert any(f"its run folder {layout.run_dir} {why}. Stopping" in log
               for why in ("was replaced by another folder", "was moved away")), log
    assert "statbus collector stopped" in log


def test_a_removed_pidfile_is_written_again_and_the_cli_finds_a_collector_without_one(run) -> None:
    layout = run["layout"]
    args = ["--run-id", layout.run_id, "--results-dir", layout.results_dir]
    started = statbus("collector", "start", *args, "--plugins", ",".join(KEEP))
    assert started.returncode == 0, started.stderr
    family = collector_family(run)
    pid = family[0].pid

    # Removed: the collector puts it back (locked), so trainers and the command see it alive.
    os.unlink(layout.pid_file)
    wait_for(lambda: running_pid(layout.pid_file) == pid, timeout=30, what="the pidfile written again")
    said = f"the pidfile {layout.pid_file} was removed under this collector; written again"
    wait_for(lambda: said in read_text(layout.log_file), timeout=30, what="the collector saying so")

    # Replaced by a file that is not the collector's (none to put back): the command still reaches it.
    foreign = layout.pid_file + ".foreign"
    with open(foreign, "w") as handle:
        handle.write("999999999\n")
    os.replace(foreign, layout.pid_file)
    status = statbus("status", *args, "--json")
    assert status.returncode == 0, status.stderr
    reply = json.loads(status.stdout)
    assert reply["pid"] == pid and reply["pidfile_ours"] is False and reply["run_folder_lost"] is None
    human = statbus("status", *args)
    assert human.returncode == 0 and f"pidfile: {layout.pid_file} is not this collector's" in human.stdout

    stopped = statbus("collector", "stop", *args)
    assert stopped.returncode == 0, stopped.stderr
    assert f"(pid {pid}) has no pidfile" in stopped.stdout and "stopped" in stopped.stdout
    assert gone(family)
    assert not os.path.exists(layout.socket_dir)
    assert read_text(layout.pid_file) == "999999999\n"  # not its own: left where it was
    again = statbus("collector", "stop", *args)
    assert again.returncode == 0 and "no collector is running" in again.stdout
