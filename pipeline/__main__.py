"""``python -m statbus.pipeline`` — run a run's collector in the foreground.

``statbus collector start`` runs this detached (output to ``collector.log``);
readiness: the run's pidfile is locked, ``<statbus_dir>/collector.ready`` holds
the addresses, a log line starts with "statbus collector ready", and the
control socket answers ``{"op": "ping"}``.  Exit codes: :class:`ExitCode`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from typing import List, Optional, Sequence

from ..plugins import ConfigError, StatbusError
from ..plugins.discovery import PluginInfo, discover_plugins
from ..plugins.groups import REPLACED_PLUGINS
from ..plugins.settings import RunOptions
from ..workers.exits import ExitCode
from .security.arguments import add_transport_security_arguments, transport_security_from_args
from .collector.loop import Collector
from .collector.options import CollectorOptions, SupervisorFactory, SupervisorHooks
from .journal.writer import FsyncPolicy
from .layout import RunLayout

logger = logging.getLogger("statbus.pipeline.collector")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m statbus.pipeline",
        description="Run the statbus collector of one run in the foreground.",
    )
    parser.add_argument("--run-id", default=os.environ.get("STATBUS_RUN_ID", "ppo"))
    parser.add_argument("--results-dir", default=os.environ.get("STATBUS_RESULTS_DIR", "results"))
    parser.add_argument("--bind", metavar="ADDR", help="trainer address (default: the run's private ipc socket)")
    parser.add_argument(
        "--also-bind", metavar="ADDR",
        help="a second trainer address, e.g. tcp:// with CURVE next to the private ipc socket (the Ray collector)",
    )
    add_transport_security_arguments(parser)
    parser.add_argument("--fsync", choices=[p.value for p in FsyncPolicy], default=FsyncPolicy.INTERVAL.value)
    parser.add_argument("--fsync-interval", type=float, default=1.0, metavar="S")
    parser.add_argument("--segment-mb", type=float, default=64.0, help="journal segment size (MiB)")
    parser.add_argument("--quota-mb", type=float, default=1024.0, help="per-plugin journal backlog quota (MiB)")
    parser.add_argument("--stop-timeout", type=float, default=30.0, metavar="S")
    parser.add_argument("--config", metavar="FILE", help="TOML file with per-plugin settings")
    parser.add_argument("--plugins", metavar="A,B", help="run only these plugins (comma-separated names)")
    parser.add_argument("--exclude", metavar="C,D", help="do not run these plugins")
    parser.add_argument("--no-plugins", action="store_true", help="journal and aggregate only; start no workers")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME.KEY=VALUE", help="override a plugin setting"
    )
    parser.add_argument(
        "--on-demand", action="store_true",
        help="started by a trainer: exit once every trainer is gone, every plugin caught up, "
        "and nothing arrived for --idle-exit seconds",
    )
    parser.add_argument(
        "--idle-exit", type=float, metavar="S", default=float(os.environ.get("STATBUS_IDLE_EXIT", "30")),
        help="quiet seconds before an on-demand collector exits (default: $STATBUS_IDLE_EXIT, else 30)",
    )
    parser.add_argument(
        "--owner-pid", type=int, metavar="PID",
        help="with --on-demand: not idle while process PID on this host runs, even before its first "
        "frame (statbus learn passes its own)",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="start the run over: remove its earlier outputs first (what `statbus collector start --help` "
        "lists); without it an existing run is continued and nothing of it is removed",
    )
    parser.add_argument(
        "--force-before", type=float, metavar="TIME",
        help="on-demand starts with STATBUS_FORCE: start the run over unless it began at or after TIME "
        "(a Unix time: the forcing training's start)",
    )
    parser.add_argument("--log-level", default=os.environ.get("STATBUS_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--nice", type=int, choices=range(0, 20), default=0, metavar="N",
        help="lower this collector's CPU priority by N (0-19) before it starts anything; its workers "
        "go N plus their own 'nice' setting lower (statbus learn uses 5: training comes first)",
    )
    parser.add_argument(
        "--run-options", metavar="FILE",
        help="JSON of the RunOptions handed to plugins (statbus learn writes ML-Agents' there); "
        "the run id and results dir stay this collector's",
    )
    return parser


def _names(text: Optional[str]) -> List[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def select_plugins(found: Sequence[PluginInfo], only: List[str], exclude: List[str]) -> List[PluginInfo]:
    known = {p.name for p in found} | {f"{p.group}:{p.name}" for p in found}
    unknown = [name for name in only + exclude if name not in known]
    if unknown:
        raise ConfigError(f"unknown plugins {unknown}; installed: {sorted(p.name for p in found)}")

    def named(plugin: PluginInfo, names: List[str]) -> bool:
        return plugin.name in names or f"{plugin.group}:{plugin.name}" in names

    # ML-Agents' own `default` entry point (its in-process TensorBoard, gauge and console
    # writers) is what statbus's built-ins replace: run it only when asked for by name.
    chosen = [
        p for p in found
        if (named(p, only) if only else f"{p.group}:{p.name}" not in REPLACED_PLUGINS) and not named(p, exclude)
    ]
    return chosen


def load_run_options(path: Optional[str]) -> Optional[RunOptions]:
    """``--run-options``' file (raises ConfigError): what plugins get on top of the run's identity.

    The run's paths, start time and resume flag stay the identity's; the file gives
    the trainer's own options (``statbus learn``: ML-Agents' behaviors, env settings and
    its whole RunOptions).
    """
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--run-options {path}: {exc}") from None
    return RunOptions.from_dict(data)


def supervisor_factory(layout: RunLayout, plugins: List[PluginInfo], args: argparse.Namespace) -> SupervisorFactory:
    from ..workers.supervision.config import load_plugin_config, parse_overrides
    from ..workers.supervision.supervisor import Supervisor

    config = load_plugin_config(plugins, args.config, parse_overrides(args.set), named=_names(args.plugins))
    overlay = load_run_options(args.run_options)

    def make(hooks: SupervisorHooks) -> Supervisor:
        return Supervisor(
            layout.worker_paths,
            plugins,
            config,
            hooks.run_options if overlay is None else dataclasses.replace(
                hooks.run_options, behaviors=overlay.behaviors, env_settings=overlay.env_settings,
                debug=overlay.debug, mlagents_options=overlay.mlagents_options,
            ),
            hooks.worker_address,
            on_dead_letter=hooks.on_dead_letter,
            count_entries=hooks.count_entries,
            log_level=args.log_level,
        )

    return make


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nice:
        os.nice(args.nice)  # before any thread: every thread and process it starts inherits it
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        layout = RunLayout(args.results_dir, args.run_id)
        options = CollectorOptions(
            bind=args.bind,
            also_bind=args.also_bind,
            security=transport_security_from_args(args),
            segment_bytes=max(4096, int(args.segment_mb * (1 << 20))),
            fsync=FsyncPolicy(args.fsync),
            fsync_interval=args.fsync_interval,
            quota_bytes=int(args.quota_mb * (1 << 20)),
            stop_timeout=args.stop_timeout,
            idle_exit=args.idle_exit if args.on_demand else None,
            owner_pid=args.owner_pid,
            force=args.force,
            force_before=args.force_before,
        )
        factory = None
        if not args.no_plugins:
            plugins = select_plugins(discover_plugins(), _names(args.plugins), _names(args.exclude))
            if not plugins:
                raise ConfigError("no plugins to run (pass --no-plugins to run a collector that only journals)")
            factory = supervisor_factory(layout, plugins, args)
    except (ConfigError, ValueError) as exc:
        logger.error("statbus collector: bad configuration: %s", exc)
        return ExitCode.BAD_CONFIG
    except (StatbusError, ImportError) as exc:
        logger.error("statbus collector cannot start: %s", exc)
        return ExitCode.ERROR
    code = int(Collector(layout, options, supervisor_factory=factory).run())
    # The journal is closed: a late SIGTERM (a second `stop`) must not turn a clean
    # exit into death by signal while the interpreter winds down.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(main())
