"""Figure ``soak`` — a day in ten minutes: kills all along, and nothing lost, nothing growing.

``trainers`` trainer processes (:mod:`..soak.trainer`, each its own category)
record ``12 × per_key`` values a step, a step (and a ``write_stats``) every
``step_seconds``, with the default plugins and the example plugin (a
third-party one) in their workers.  Meanwhile, on a schedule drawn from ``seed``:

* the collector is SIGKILLed every ``collector_every`` s (uniform) and started
  again — by the soak itself, as a script or service manager would
  (``restart_by="script"``: ``statbus collector start``'s own code, at once or
  after a pause in which ``statbus status`` must say that no collector answers), or by the
  trainers (``"trainers"``: a client starts one whenever none serves its run);
* a plugin worker, chosen at random, is SIGKILLed every ``worker_every`` s;
* a trainer, chosen at random, is SIGKILLed every ``trainer_every`` s and
  replaced by a new process with a category of its own.

Throughout, RSS and open descriptors of the collector and of each worker and
the journal's size are sampled (the journal rotates at ``segment_mb``: a day's
worth of rotations), and the control socket's status is checked about once a
second against what the soak knows (:mod:`..soak.watch`).  At the end the
trainers stop, the plugins catch up, the collector stops, and every output is
read back (:mod:`..soak.outputs`, which says exactly what must land).
The same seed replays the same schedule of kills and victims.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ...layout import RunLayout
from ..collector import BenchError
from ..soak.fleet import Collector, Fleet, kill_leftovers
from ..soak.outputs import (check_example, check_stats_jsonl, check_tensorboard, disagreements, dropped_values,
                            expected_of)
from ..soak.watch import MB, Known, Sampler, StatusCheck, cli_status, journal_bytes
from ..stats import spread

PLUGINS = ("console", "tensorboard", "gauges", "jsonl", "example")
CLI_PAUSE = 1.0
"""Pauses before a restart at least this long (seconds) are used to check that ``statbus status`` says no
collector answers; shorter ones restart at once, while the killed collector's workers may still be leaving."""
RUN_ID = "soak"


@dataclasses.dataclass(frozen=True)
class SoakConfig:
    seconds: float = 600.0
    trainers: int = 16
    per_key: int = 25
    step_seconds: float = 1.0
    collector_every: Tuple[float, float] = (20.0, 40.0)
    worker_every: Tuple[float, float] = (20.0, 40.0)
    trainer_every: float = 60.0
    restart_pause: Tuple[float, float] = (0.0, 3.0)
    """Seconds between a collector's kill and the script's restart (``restart_by="script"``)."""
    restart_by: str = "script"
    segment_mb: float = 1.0
    settle: float = 60.0
    """Slopes are fitted to the samples after this many seconds."""
    sample_every: float = 2.0
    status_every: float = 1.0
    cli_every: float = 30.0
    seed: Optional[int] = None
    timeout: float = 120.0
    enabled: bool = True


class Event(NamedTuple):
    at: float
    kind: str  # "collector" | "worker" | "trainer"
    victim: Any  # plugin name, trainer slot, or the restart pause


def schedule(config: SoakConfig, plugins: List[str], rng: random.Random) -> List[Event]:
    """Every kill of the soak, drawn from ``rng`` alone: the same seed, the same kills of the same victims."""
    events: List[Event] = []
    at = rng.uniform(*config.collector_every)
    while at < config.seconds:
        events.append(Event(at, "collector", rng.uniform(*config.restart_pause)))
        at += rng.uniform(*config.collector_every)
    at = rng.uniform(*config.worker_every)
    while at < config.seconds:
        events.append(Event(at, "worker", rng.choice(plugins)))
        at += rng.uniform(*config.worker_every)
    at = config.trainer_every
    while at < config.seconds:
        events.append(Event(at, "trainer", rng.randrange(config.trainers)))
        at += config.trainer_every
    return sorted(events)


def _environment() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATBUS_")}
    env["STATBUS_LOG_LEVEL"] = "WARNING"
    return env


class Soak:
    """One soak run: its processes, its watchers and its tallies."""

    def __init__(self, root: str, config: SoakConfig, plugins: List[str], seed: int) -> None:
        self.config = config
        self.plugins = plugins
        self.seed = seed
        self.env = _environment()
        self.layout = RunLayout(os.path.join(root, "results"), RUN_ID)
        collector_args = ["--plugins", ",".join(plugins), "--segment-mb", repr(config.segment_mb)]
        self.collector = Collector(self.layout, collector_args, self.env)
        trainer_args = ["--per-key", str(config.per_key), "--step-seconds", repr(config.step_seconds)]
        if config.restart_by == "trainers":
            trainer_args += ["--autostart", *(f"--collector-arg={a}" for a in collector_args)]
        self.fleet = Fleet(root, self.layout, trainer_args, self.env)
        self.sampler = Sampler(self.collector)
        self.status = StatusCheck(self.collector)
        self.t0 = time.monotonic()
        self.pid: Optional[int] = None
        self.kills: Dict[str, Any] = {"collector": 0, "workers": {}, "worker_not_running": 0, "trainers": 0}
        self.down_s: List[float] = []
        self.restart_s: List[float] = []
        self.killed_trainers: Dict[int, float] = {}
        self.killed_workers: Dict[int, float] = {}
        self.cli: Dict[str, Any] = {"runs": 0, "wrong": []}
        self.acked_pids: set = set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    # --- the kills ---------------------------------------------------------------

    def kill_collector(self, pause: float) -> None:
        assert self.pid is not None
        killed = self.pid
        self.collector.kill9(killed)
        self.pid = None
        self.kills["collector"] += 1
        started = restarted = time.monotonic()
        if self.config.restart_by == "script":
            if pause >= CLI_PAUSE:
                self._cli_check(expect_running=False)
            time.sleep(max(0.0, pause - (time.monotonic() - started)))
            restarted = time.monotonic()
            self.collector.start(self.config.timeout)
        self.pid = self.collector.wait_serving(self.config.timeout, not_pid=killed)
        self.down_s.append(time.monotonic() - started)
        self.restart_s.append(time.monotonic() - restarted)

    def kill_worker(self, name: str) -> None:
        process = self.collector.workers(self.pid).get(name)
        if process is None:
            self.kills["worker_not_running"] += 1  # being restarted after a kill, or the collector just came up
            return
        try:
            process.kill()
        except Exception:  # noqa: BLE001 — it ended meanwhile
            self.kills["worker_not_running"] += 1
            return
        self.killed_workers[process.pid] = self.now()
        self.kills["workers"][name] = self.kills["workers"].get(name, 0) + 1

    def kill_trainer(self, slot: int) -> None:
        trainer = self.fleet.kill(slot)
        self.killed_trainers[trainer.proc.pid] = self.now()
        self.acked_pids.discard(trainer.proc.pid)
        self.kills["trainers"] += 1
        self.fleet.start(slot)

    # --- the watching ------------------------------------------------------------

    def _cli_check(self, expect_running: bool) -> None:
        code, text = cli_status(self.env, self.layout.run_id, self.layout.results_dir)
        self.cli["runs"] += 1
        answered = code == 0 and f"run {RUN_ID}" in text
        said_none = code == 1 and "no collector answers" in text
        if (expect_running and not answered) or (not expect_running and not said_none):
            if len(self.cli["wrong"]) < 10:
                self.cli["wrong"].append(f"{self.now():.1f} s: exit {code}: {text.strip()[-300:]}")

    def _poll(self) -> None:
        for trainer in self.fleet.live.values():
            if trainer.proc.pid not in self.acked_pids and trainer.last("acked") > 0:
                self.acked_pids.add(trainer.proc.pid)
        assert self.pid is not None
        self.status.poll(Known(self.pid, self.now(), set(self.acked_pids), self.killed_trainers, self.killed_workers))

    def loop(self, events: List[Event]) -> None:
        config = self.config
        next_sample = next_status = 0.0
        next_cli = config.cli_every
        while True:
            now = self.now()
            if now >= config.seconds:
                return
            if events and events[0].at <= now:
                event = events.pop(0)
                getattr(self, f"kill_{event.kind}")(event.victim)
            elif now >= next_sample:
                self.sampler.sample(now, self.pid)
                next_sample = now + config.sample_every
            elif now >= next_status:
                self._poll()
                next_status = now + config.status_every
            elif now >= next_cli:
                self._cli_check(expect_running=True)
                next_cli = now + config.cli_every
            else:
                time.sleep(0.05)

    # --- the end -----------------------------------------------------------------

    def caught_up(self) -> Dict[str, Any]:
        deadline = time.monotonic() + self.config.timeout
        while True:
            status = self.collector.status()
            head = status["journal"]["head"]
            if all(p["state"] == "READY" and p["committed"] >= head for p in status["plugins"]):
                return status
            if time.monotonic() > deadline:
                raise BenchError(f"plugins not caught up within {self.config.timeout:.0f} s: "
                                 f"{[(p['name'], p['state'], p['committed'], head) for p in status['plugins']]}")
            time.sleep(0.2)

    def journal_after_retention(self, wait: float = 10.0) -> float:
        """The journal's MB once every plugin has caught up: retention leaves the newest segments only
        (it runs as cursors commit; given ``wait`` s to get there)."""
        deadline = time.monotonic() + wait
        while True:
            size = journal_bytes(self.layout.journal_dir) / MB
            if size <= 2 * self.config.segment_mb or time.monotonic() > deadline:
                return size
            time.sleep(0.2)

    def finish(self) -> Dict[str, Any]:
        """Stop the trainers, let the plugins catch up, compare status with the trainers' counts, stop."""
        self.pid = self.collector.wait_serving(self.config.timeout)
        failed = self.fleet.stop(self.config.timeout)
        status = self.caught_up()  # not sampled: without trainers the collector holds fewer sockets
        journal_mb = self.journal_after_retention()
        self.status.check(status, Known(self.pid, self.now(), set(), self.killed_trainers, {}))
        by_sender = {t.get("sender"): t for t in status.get("trainers", [])}
        mismatches = []
        for trainer in self.fleet.live.values():
            done = expected_of(trainer.lines(), killed=False)[1]
            entry = by_sender.get(done.get("sender")) if done else None
            if done is None or entry is None or entry.get("values") != done["values_recorded"] or not entry.get("bye"):
                mismatches.append(f"{trainer.category}: trainer said {done}, status {entry}")
        stopped = self.collector.stop(self.config.timeout)
        return {"failed_to_stop": [t.category for t in failed], "status_count_mismatches": mismatches,
                "journal_mb_caught_up": journal_mb,
                "stopped_pid": stopped, "strays_end": len(self.collector.strays(None))}

    def outputs(self) -> Dict[str, Any]:
        expected = {}
        reports = []
        dropped = 0
        for trainer in self.fleet.all:
            lines = trainer.lines()
            expected[trainer.category], done = expected_of(lines, killed=trainer.killed_at is not None)
            dropped += dropped_values(lines)
            if done is not None:
                reports.append(done)
        per_key = self.config.per_key
        tallies = {"stats.jsonl": check_stats_jsonl(os.path.join(self.layout.run_dir, "stats.jsonl"), expected,
                                                    per_key),
                   "tensorboard": check_tensorboard(self.layout.run_dir, expected, per_key)}
        if "example" in self.plugins:
            tallies["example"] = check_example(os.path.join(self.layout.run_dir, "example_plugin.txt"), expected)
        landed = tallies["stats.jsonl"].landed
        return {
            "outputs": {name: tally.as_dict() for name, tally in tallies.items()},
            "disagreements": disagreements(tallies),
            "summaries": sum(landed.values()),
            "values": sum(landed.values()) * per_key * 12,
            "acked_summaries_of_killed": sum(e.low for c, e in expected.items()
                                             if any(t.category == c and t.killed_at for t in self.fleet.all)),
            "not_flushed": sum(1 for r in reports if not r["flushed"]),
            "values_dropped": dropped,
        }


def run(root: str, config: SoakConfig) -> Dict[str, Any]:
    from ....plugins.discovery import discover_plugins

    if not config.enabled:
        return {"skipped": "not run in this mode (the suite's soak is tests/system/test_soak.py)"}
    if config.restart_by not in ("script", "trainers"):
        raise BenchError(f"restart_by must be 'script' or 'trainers', not {config.restart_by!r}")
    installed = {p.name for p in discover_plugins()}
    plugins = [name for name in PLUGINS if name in installed]
    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(1 << 32)
    events = schedule(config, plugins, random.Random(seed))
    soak = Soak(root, config, plugins, seed)
    try:
        if config.restart_by == "script":
            soak.collector.start(config.timeout)
        for slot in range(config.trainers):
            soak.fleet.start(slot)
        soak.pid = soak.collector.wait_serving(config.timeout)
        soak.loop(events)
        end = soak.finish()
    finally:
        kill_leftovers(soak.collector, soak.fleet)
    found = soak.outputs()
    resources = soak.sampler.summary(after=min(config.settle, config.seconds / 2))
    return {
        "seed": seed, "seconds": config.seconds, "restart_by": config.restart_by, "trainers": config.trainers,
        "trainer_processes": len(soak.fleet.all), "plugins": plugins, "segment_mb": config.segment_mb,
        "values_per_s_per_trainer": 12 * config.per_key / config.step_seconds,
        **found, **end,
        "kills": soak.kills,
        "collector_kill_to_serving_s": spread(soak.down_s),
        "collector_start_to_serving_s": spread(soak.restart_s),
        "status": {**soak.status.summary(), "cli_runs": soak.cli["runs"], "cli_wrong": soak.cli["wrong"]},
        "resources": resources,
        "strays_max": soak.sampler.strays_max,
    }
