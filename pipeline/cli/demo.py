"""``statbus demo`` — a simulated training run through a real collector, checked end to end.

It starts a collector with the built-in writers, the example plugin and a
deliberately flaky plugin, runs the simulated training (env-worker processes and
a learner) with a progress bar, waits for every plugin to catch up, stops the
collector, and checks what the writers wrote against what was recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

from ...plugins import StatbusError
from ...plugins.writers.jsonl import FILE_NAME as JSONL_FILE
from ...workers.exits import ExitCode
from ..collector.lifecycle.daemon import start_detached, wait_for_exit
from ..layout import RunLayout
from ..simulation import BEHAVIOR

DEMO_PLUGINS = ("console", "tensorboard", "gauges", "jsonl", "example", "flaky")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a simulated training through a collector and check the results",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("--results-dir", default="results", help="where the run's results go (default ./results)")
    parser.add_argument("--run-id", help="run id (default demo-<date>-<time>)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of simulated training (default 20)")
    parser.add_argument("--env-workers", type=int, default=3, help="env-worker processes (default 3)")
    parser.add_argument("--crash-every", type=int, default=8000,
                        help="the flaky plugin crashes about once per this many calls (default 8000)")
    parser.set_defaults(func=run_demo)


def _make_flaky_discoverable(layout: RunLayout) -> str:
    """A dist-info that registers the flaky writer, seen only by this demo's collector."""
    root = os.path.join(layout.statbus_dir, "demo-plugins")
    info = os.path.join(root, "statbus_demo_flaky-0.1.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as handle:
        handle.write("Metadata-Version: 2.1\nName: statbus-demo-flaky\nVersion: 0.1\n")
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as handle:
        handle.write("[mlagents.stats_writer]\nflaky = statbus.plugins.writers.flaky:get_flaky_writer\n")
    return root


def _write_config(layout: RunLayout, crash_every: int) -> str:
    path = os.path.join(layout.statbus_dir, "demo.toml")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"[plugins.flaky]\noptions = {{ crash_every = {crash_every} }}\n")
    return path


def _progress(fraction: float, text: str) -> None:
    width = 30
    filled = int(width * min(1.0, fraction))
    sys.stdout.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {text}   ")
    sys.stdout.flush()


def _train(layout: RunLayout, args: argparse.Namespace) -> Dict[str, Any]:
    env = dict(os.environ, STATBUS_RUN_ID=layout.run_id, STATBUS_RESULTS_DIR=layout.results_dir, STATBUS_AUTOSTART="0")
    command = [
        sys.executable, "-c", "import sys; from statbus.pipeline.simulation import main; sys.exit(main(sys.argv[1:]))",
        "--run-id", layout.run_id, "--results-dir", layout.results_dir,
        "--duration", str(args.duration), "--env-workers", str(args.env_workers),
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    result: Dict[str, Any] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("progress "):
                _, step, summaries = line.split()
                elapsed = time.monotonic() - started
                _progress(elapsed / args.duration, f"step {int(step):,}  summaries {summaries}")
            elif line.startswith("{"):
                result = json.loads(line)
        code = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    _progress(1.0, "done")
    print()
    if code != 0 or not result:
        raise StatbusError(f"the simulated training exited with code {code}")
    return result


def _wait_caught_up(layout: RunLayout, timeout: float) -> Dict[str, Any]:
    from ..control import control_request

    deadline = time.monotonic() + timeout
    status: Dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = control_request(layout.control_address, {"op": "status"}, timeout=5.0)
        live = [p for p in status.get("plugins", []) if p.get("state") not in ("FAILED", "STOPPED", "DISABLED")]
        if all(p.get("lag_records") == 0 for p in live):
            return status
        time.sleep(0.2)
    return status


def _read_jsonl(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _check(layout: RunLayout, expected: Dict[str, Any]) -> List[Tuple[str, bool, str]]:
    """(what, passed, detail) for each completeness check."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    checks: List[Tuple[str, bool, str]] = []
    summaries = expected["count"]["__summaries__"]
    lines = [l for l in _read_jsonl(os.path.join(layout.run_dir, JSONL_FILE)) if l.get("category") == BEHAVIOR and "step" in l]
    checks.append(("stats.jsonl: every summary exactly once", len(lines) == summaries, f"{len(lines)} of {summaries}"))
    counts: Dict[str, int] = {}
    sums: Dict[str, float] = {}
    for line in lines:
        for key, stats in line.get("values", {}).items():
            counts[key] = counts.get(key, 0) + stats["num"]
            sums[key] = sums.get(key, 0.0) + (stats["sum"] or 0.0)
    missing = {k: (expected["count"][k], counts.get(k, 0)) for k in expected["count"]
               if k != "__summaries__" and counts.get(k, 0) != expected["count"][k]}
    recorded = sum(v for k, v in expected["count"].items() if k != "__summaries__")
    checks.append(("stats.jsonl: every value recorded is in a summary", not missing,
                   f"{sum(counts.values()):,} of {recorded:,} values" + (f"; differing keys {missing}" if missing else "")))
    bad_sums = [k for k, v in expected["sum"].items() if not math.isclose(sums.get(k, 0.0), v, rel_tol=1e-9, abs_tol=1e-6)]
    checks.append(("stats.jsonl: per-key sums match", not bad_sums, "all keys" if not bad_sums else f"differ: {bad_sums}"))
    accumulator = EventAccumulator(os.path.join(layout.run_dir, BEHAVIOR), size_guidance={"scalars": 0})
    accumulator.Reload()
    points = len(accumulator.Scalars("Losses/Value Loss")) if "Losses/Value Loss" in accumulator.Tags()["scalars"] else 0
    checks.append(("TensorBoard: one point per summary", points == summaries, f"{points} of {summaries}"))
    example = os.path.join(layout.run_dir, "example_plugin.txt")
    example_lines = open(example, encoding="utf-8").read().splitlines() if os.path.exists(example) else []
    example_steps = {
        int(parts[1]) for parts in (line.split() for line in example_lines)
        if len(parts) > 1 and parts[0] == BEHAVIOR and parts[1].isdigit()
    }
    checks.append(("example plugin: every summary", len(example_steps) >= summaries, f"{len(example_steps)} of {summaries} steps"))
    flaky_path = os.path.join(layout.run_dir, "flaky_plugin.jsonl")
    flaky_steps = {l["step"] for l in _read_jsonl(flaky_path)} if os.path.exists(flaky_path) else set()
    all_steps = {l["step"] for l in lines}
    checks.append(("flaky plugin: every summary at least once", all_steps <= flaky_steps, f"{len(all_steps & flaky_steps)} of {len(all_steps)} steps"))
    return checks


def _console_lines(layout: RunLayout, count: int) -> List[str]:
    """ML-Agents' progress lines as the console writer printed them in its worker."""
    path = layout.worker_log_file("console")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.rstrip() for line in handle if "Step:" in line]
    except OSError:
        return []
    return [line.split("statbus.console: ", 1)[-1] for line in lines[-count:]]


def run_demo(args: argparse.Namespace) -> int:
    from ..control import control_request

    run_id = args.run_id or time.strftime("demo-%Y%m%d-%H%M%S")
    layout = RunLayout(args.results_dir, run_id)
    os.makedirs(layout.statbus_dir, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_make_flaky_discoverable(layout), env.get("PYTHONPATH")]))
    extra = ["--config", _write_config(layout, args.crash_every), "--plugins", ",".join(DEMO_PLUGINS)]
    print(f"statbus demo: run {run_id!r} in {layout.run_dir}")
    try:
        started = start_detached(layout, extra, env=env)
    except StatbusError as exc:
        print(f"statbus demo: cannot start the collector: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    print(f"  collector ready (pid {started.pid}); plugins: {', '.join(DEMO_PLUGINS)}")
    print(f"  simulating {args.duration:.0f} s of training with {args.env_workers} env workers and a learner")
    try:
        result = _train(layout, args)
        status = _wait_caught_up(layout, timeout=60.0)
    finally:
        try:
            control_request(layout.control_address, {"op": "stop", "timeout": 30.0}, timeout=5.0)
        except StatbusError:
            os.kill(started.pid, 15)
        if not wait_for_exit(started.pid, 60.0):
            os.kill(started.pid, 9)
    expected = result["expected"]
    restarts = {p["name"]: p.get("restarts", 0) for p in status.get("plugins", [])}
    checks = _check(layout, expected)
    values = sum(v for k, v in expected["count"].items() if k != "__summaries__")
    print()
    print("report")
    print(f"  steps simulated     {result['steps']:,}")
    print(f"  values recorded     {values:,}")
    print(f"  summaries written   {expected['count']['__summaries__']}")
    print("  plugin restarts     " + ", ".join(f"{name} {count}" for name, count in sorted(restarts.items())))
    for what, passed, detail in checks:
        print(f"  [{'ok' if passed else 'FAILED'}] {what}: {detail}")
    complete = all(passed for _, passed, _ in checks)
    console_lines = _console_lines(layout, 3)
    if console_lines:
        print("  the console plugin's last lines (its log: statbus/logs/console.log):")
        for line in console_lines:
            print("    " + line)
    print()
    print("nothing was lost." if complete else "DATA IS MISSING: see the checks above and the logs in " + layout.statbus_dir)
    print(f"open the curves with:  tensorboard --logdir {layout.run_dir}")
    return ExitCode.OK if complete else ExitCode.ERROR
