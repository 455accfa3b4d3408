"""``statbus status`` and the per-plugin commands ``restart``, ``enable``, ``disable``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from ...plugins import StatbusError
from ...workers.exits import ExitCode
from .. import spool_file
from ..collector.lifecycle.daemon import default_layout
from ..ray.cli import add_ray_arguments
from .collector import add_run_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    status = subparsers.add_parser(
        "status",
        help="show a running collector's trainers, intake, journal and plugins",
        description="Show the run, address and uptime; connected trainers; intake rate; journal "
        "size; a spool that exited trainers left for the collector; and per plugin its state, pid, "
        "restarts, last error, lag, RSS and CPU.  With no collector answering, a waiting spool is still shown.",
    )
    add_run_arguments(status)
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    status.add_argument("--watch", action="store_true", help="refresh in place until interrupted (like top)")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes with --watch")
    add_ray_arguments(status)
    status.set_defaults(func=run_status)

    for op, text in (
        ("restart", "restart one plugin's worker (e.g. after upgrading it); others are untouched"),
        ("enable", "enable a plugin and start its worker"),
        ("disable", "stop a plugin's worker and keep it stopped"),
    ):
        parser = subparsers.add_parser(op, help=text, description=text[0].upper() + text[1:] + ".")
        parser.add_argument("plugin", metavar="PLUGIN", help="plugin name, as `statbus status` shows it")
        add_run_arguments(parser)
        parser.set_defaults(func=run_plugin_op, op=op)


def _request(args: argparse.Namespace, request: Dict[str, Any]) -> Dict[str, Any]:
    from ..control import control_request

    layout = default_layout(args.run_id, args.results_dir)
    return control_request(layout.control_address, request, timeout=5.0)


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _table(rows: List[List[str]]) -> List[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "-"
    if spec and isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def _stall_lines(stall: Any) -> List[str]:
    """The journal's stall, first of all: a run that cannot write loses nothing only as long as trainers hold on."""
    if not isinstance(stall, dict):
        return []
    return [
        f"journal: {stall.get('reason')} since {stall.get('since_text')} ({stall.get('message')}); "
        f"{_fmt((stall.get('pending_bytes') or 0) / 2**20, '.1f')} MiB wait to be written, "
        f"{_fmt((stall.get('free_bytes') or 0) / 2**20, '.1f')} MiB free; trainers keep their data until then"
    ]


def _spool_line(spool: Any, answering: bool) -> List[str]:
    """Frames exited trainers left for the run's collector (pipeline/spool_file.py), when there are any."""
    if not isinstance(spool, dict) or not (spool.get("files") or spool.get("set_aside")):
        return []
    line = (f"spool: {_fmt(spool.get('files'))} files ({_fmt((spool.get('bytes') or 0) / 2**20, '.1f')} MiB) "
            f"that exited trainers could not deliver wait in {spool.get('dir')}, "
            + ("being taken in" if answering else "for the run's next collector (`statbus collector start`)"))
    if spool.get("set_aside"):
        line += f"; {spool['set_aside']} files set aside (see the collector log)"
    return [line]


def _plugin_state(plugin: Dict[str, Any]) -> str:
    since = plugin.get("disk_full_since")
    if isinstance(since, (int, float)) and since > 0:
        return f"{_fmt(plugin.get('state'))} (disk full since {time.strftime('%H:%M:%S', time.localtime(since))})"
    return _fmt(plugin.get("state"))


def _media_drops(trainer: Dict[str, Any]) -> str:
    """Media values the trainer dropped past its media bound, and their size (``0`` when none)."""
    count = trainer.get("media_dropped") or 0
    return f"{count} ({(trainer.get('media_dropped_bytes') or 0) / 2**20:.0f} MiB)" if count else "0"


def _trainer_state(trainer: Dict[str, Any]) -> str:
    if trainer.get("bye"):
        return "gone"
    # Its process ended without a goodbye (killed, crashed): what it had not sent is lost with it.
    return "ended, no bye" if trainer.get("gone") else "connected"


def format_status(status: Dict[str, Any]) -> str:
    lines = [
        f"run {status.get('run_id')}  address {status.get('address')}"
        + (f" and {status['also_address']}" if status.get("also_address") else "")
        + f"  pid {status.get('pid')}  "
        f"uptime {_age(status.get('uptime'))}",
    ]
    if status.get("run_folder_lost"):
        lines.append(f"run folder: {status['run_folder_lost']}; this collector is stopping")
    if status.get("pidfile_ours") is False:
        lines.append(f"pidfile: {status.get('pidfile')} is not this collector's (deleted or replaced); "
                     "found through the run's socket directory")
    run = status.get("run") or {}
    if isinstance(run.get("start_time"), (int, float)):
        how = ("started over by this collector (--force)" if run.get("forced")
               else "continued by this collector" if run.get("continued") else "a new run")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["start_time"]))
        lines.append(f"run started {started}, {how}")
    intake = status.get("intake", {})
    journal = status.get("journal", {})
    lines += _stall_lines(journal.get("write_error"))
    lines += _spool_line(status.get("spool"), answering=True)
    lines.append(
        f"intake {_fmt(intake.get('values_per_second'), '.0f')} values/s, "
        f"{_fmt(intake.get('frames_per_second'), '.1f')} frames/s; "
        f"rejected {_fmt(intake.get('rejected'))}; "
        f"journal {_fmt((journal.get('size_bytes') or 0) / 2**20, '.1f')} MiB"
    )
    periods, senders = intake.get("open_periods") or {}, intake.get("senders") or {}
    if periods or senders:
        lines.append(
            f"open periods {_fmt(periods.get('categories'))} categories, {_fmt(periods.get('values'))} values "
            f"({_fmt((periods.get('bytes') or 0) / 2**20, '.1f')} MiB); dropped unwritten: "
            f"{_fmt(periods.get('dropped_periods'))} periods, {_fmt(periods.get('dropped_values'))} values; "
            f"senders {_fmt(senders.get('count'))} ({_fmt((senders.get('bytes') or 0) / 2**20, '.1f')} MiB), "
            f"forgotten {_fmt(senders.get('forgotten'))}"
        )
    trainers = status.get("trainers", [])
    lines.append("")
    lines.append(f"trainers ({len(trainers)})")
    if trainers:
        rows = [["HOST", "PID", "LAST SEEN", "VALUES", "FRAMES", "REJECTS", "DROPS", "MEDIA DROPS", "STATE"]]
        for t in trainers:
            rows.append([
                _fmt(t.get("host")), _fmt(t.get("pid")), _age(t.get("last_seen_ago")) + " ago",
                _fmt(t.get("values")), _fmt(t.get("frames")), _fmt(t.get("rejects")),
                _fmt(t.get("dropped")), _media_drops(t), _trainer_state(t),
            ])
        lines += ["  " + line for line in _table(rows)]
    plugins = status.get("plugins", [])
    lines.append("")
    lines.append(f"plugins ({len(plugins)})")
    if plugins:
        rows = [["PLUGIN", "STATE", "PID", "RESTARTS", "LAG", "LAG S", "RSS MB", "CPU %", "LAST ERROR"]]
        for p in plugins:
            rows.append([
                _fmt(p.get("name")), _plugin_state(p), _fmt(p.get("pid")), _fmt(p.get("restarts")),
                _fmt(p.get("lag_records")), _fmt(p.get("lag_seconds"), ".1f"), _fmt(p.get("rss_mb"), ".0f"),
                _fmt(p.get("cpu_percent"), ".0f"), (p.get("last_error") or "")[:60],
            ])
        lines += ["  " + line for line in _table(rows)]
    return "\n".join(lines)


def run_status(args: argparse.Namespace) -> int:
    if args.ray:
        from ..ray.cli import ray_line, status_source

        with status_source(args) as fetch:
            return _show_status(args, fetch, ray_line)
    return _show_status(args, lambda: _request(args, {"op": "status"}))


def _show_status(args: argparse.Namespace, fetch: Callable[[], Dict[str, Any]],
                 extra_line: Optional[Callable[[Dict[str, Any]], str]] = None) -> int:
    try:
        while True:
            try:
                status = fetch()
            except StatbusError as exc:
                layout = default_layout(args.run_id, args.results_dir)
                print(f"statbus: no collector answers for run {layout.run_id!r} ({exc})", file=sys.stderr)
                for line in _spool_line(spool_file.summary(layout.spool_dir), answering=False):
                    print(line, file=sys.stderr)
                return ExitCode.ERROR
            if args.json:
                text = json.dumps(status, indent=2, sort_keys=True)
            else:
                text = format_status(status)
                if extra_line is not None:
                    text = extra_line(status) + "\n" + text
            if args.watch:
                sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
                sys.stdout.flush()
                time.sleep(args.interval)
            else:
                print(text)
                return ExitCode.OK
    except KeyboardInterrupt:
        return ExitCode.OK


def run_plugin_op(args: argparse.Namespace) -> int:
    try:
        reply = _request(args, {"op": args.op, "plugin": args.plugin})
    except StatbusError as exc:
        print(f"statbus: {args.op} {args.plugin}: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    if not reply.get("ok"):
        print(f"statbus: {args.op} {args.plugin}: {reply.get('error', 'refused')}", file=sys.stderr)
        return ExitCode.ERROR
    print(f"{args.op}: {args.plugin}: done")
    return ExitCode.OK
