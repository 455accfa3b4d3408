"""``statbus collector start|stop`` — run a collector as a daemon or in the foreground."""

from __future__ import annotations

import argparse
import os
import sys

from ...plugins import StatbusError
from ...workers.exits import ExitCode
from ..collector.lifecycle.daemon import (
    collector_command, default_layout, find_collector, start_detached, wait_for_exit,
)
from ..collector.lifecycle.pidfile import AlreadyRunning
from ..ray.cli import add_ray_arguments
from ..security.arguments import add_transport_security_arguments, transport_security_argv


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-id", help="the run's id (default: $STATBUS_RUN_ID, else 'ppo')"
    )
    parser.add_argument(
        "--results-dir", help="results directory (default: $STATBUS_RESULTS_DIR, else ./results)"
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collector", help="start or stop a run's collector daemon")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    start = actions.add_parser(
        "start",
        help="start the collector (detached unless --foreground)",
        description="Start the run's collector. Without --foreground it detaches, waits until it is "
        "ready, prints the run, address and pid, and exits 0; its log is "
        "<results-dir>/<run-id>/statbus/collector.log. It exits 75 when the run's collector is "
        "already running (a script can treat that as success), and 1 with the reason for any other "
        "failure to start (address in use, bad config, no plugins).",
    )
    add_run_arguments(start)
    start.add_argument("--bind", metavar="ADDR", help="trainer address to bind (default: a private ipc:// socket)")
    start.add_argument("--config", metavar="FILE", help="TOML file with per-plugin settings")
    start.add_argument("--plugins", metavar="A,B", help="run only these plugins (comma-separated names)")
    start.add_argument("--exclude", metavar="C", help="do not run these plugins (comma-separated names)")
    start.add_argument(
        "--set", action="append", default=[], metavar="NAME.KEY=VALUE",
        help="override one plugin setting of the config file, e.g. tensorboard.enabled=false or "
        "my_plugin.options.level=2 (repeatable)",
    )
    start.add_argument(
        "--force", action="store_true",
        help="start the run over: remove its earlier outputs first (statbus/ but the collector's log and "
        "pidfile, every events.out.tfevents.* file, stats.jsonl, run_logs/timers.json and "
        "run_logs/console_writer.json). Without it an existing run is continued and nothing of it is removed",
    )
    add_transport_security_arguments(start)
    start.add_argument("--foreground", action="store_true", help="stay attached (for systemd-like supervisors)")
    start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for readiness (default 30)")
    add_ray_arguments(start, placement=True)
    start.set_defaults(func=run_start)

    stop = actions.add_parser(
        "stop",
        help="stop the collector gracefully",
        description="Stop intake, let every live plugin catch up (bounded by --timeout), stop the "
        "workers and exit. A collector whose pidfile is gone (its run folder deleted or replaced, or "
        "the file replaced by another) is found through the run's socket directory. Exits 0 when the "
        "collector is gone or was not running.",
    )
    add_run_arguments(stop)
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds plugins get to catch up (default 30)")
    add_ray_arguments(stop)
    stop.set_defaults(func=run_stop)


def _passthrough(args: argparse.Namespace) -> list:
    extra = []
    for flag in ("bind", "config", "plugins", "exclude"):
        value = getattr(args, flag)
        if value:
            extra += [f"--{flag}", value]
    for override in args.set:
        extra += ["--set", override]
    if args.force:
        extra.append("--force")
    return extra + transport_security_argv(args)


def run_start(args: argparse.Namespace) -> int:
    if args.ray:
        from ..ray.cli import run_start as run_start_ray

        return run_start_ray(args, _passthrough(args))
    layout = default_layout(args.run_id, args.results_dir)
    command = collector_command(layout, _passthrough(args))
    if args.foreground:
        sys.stdout.flush()
        os.execv(command[0], command)
    try:
        started = start_detached(layout, _passthrough(args), timeout=args.timeout)
    except AlreadyRunning as exc:
        print(f"statbus: {exc}", file=sys.stderr)
        return ExitCode.ALREADY_RUNNING
    except StatbusError as exc:
        print(f"statbus: cannot start the collector: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    print(f"collector for run {layout.run_id!r} is ready")
    print(f"  address: {started.address}")
    print(f"  pid:     {started.pid}")
    print(f"  log:     {layout.log_file}")
    return ExitCode.OK


def run_stop(args: argparse.Namespace) -> int:
    if args.ray:
        from ..ray.cli import run_stop as run_stop_ray

        return run_stop_ray(args)
    from ..control import control_request

    layout = default_layout(args.run_id, args.results_dir)
    found = find_collector(layout)
    if found is None:
        print(f"no collector is running for run {layout.run_id!r}")
        return ExitCode.OK
    pid = found.pid
    if not found.by_pidfile:
        print(f"the collector of run {layout.run_id!r} (pid {pid}) has no pidfile at {layout.pid_file} (its run "
              f"folder was deleted or replaced, or the file is another's); found it through {layout.socket_dir}")
    try:
        control_request(layout.control_address, {"op": "stop", "timeout": args.timeout}, timeout=5.0)
    except StatbusError as exc:
        print(f"statbus: the collector (pid {pid}) did not take the stop request ({exc}); sending SIGTERM")
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass  # it stopped meanwhile
    if wait_for_exit(pid, args.timeout + 15.0):
        print(f"collector for run {layout.run_id!r} stopped (pid {pid})")
        return ExitCode.OK
    print(f"statbus: the collector (pid {pid}) is still running after {args.timeout + 15:.0f} s", file=sys.stderr)
    return ExitCode.ERROR
