"""``python -m statbus.workers``: the worker host process of one plugin.

    python -m statbus.workers --plugin NAME --group G --target module:function
        --address ADDR --state-file PATH --run-options JSON
        [--call-timeout S] [--heartbeat-interval S] [--parent-pid PID] [--max-bytes N] [--log-level L]

``--run-options`` is ``RunOptions.as_dict()`` as JSON (the plugin's own options
in ``plugin_options``), or ``@path`` of a file holding that JSON.  Exit codes:
:class:`statbus.workers.exits.ExitCode`.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import sys
from typing import Any, List, NoReturn, Optional

from .exits import ExitCode, HostExit, report_error
from .host.config import HostConfig
from .host.loop import run_host


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad arguments; a worker host says BAD_CONFIG (64)."""

    def error(self, message: str) -> NoReturn:
        raise HostExit(ExitCode.BAD_CONFIG, f"bad arguments: {message}")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m statbus.workers", description="Run one statbus plugin in this process.")
    parser.add_argument("--plugin", required=True, help="entry point name")
    parser.add_argument("--group", required=True, help="entry point group")
    parser.add_argument("--target", required=True, help="module:function of the registration function")
    parser.add_argument("--address", required=True, help="the collector's work socket (zmq address)")
    parser.add_argument("--state-file", required=True, help="this plugin's state page")
    parser.add_argument("--run-options", required=True, help="RunOptions as JSON, or @file")
    parser.add_argument("--call-timeout", type=_positive_float, default=None, help="seconds one writer call may take")
    parser.add_argument("--heartbeat-interval", type=_positive_float, default=None,
                        help="seconds between two heartbeats on the state page (default 0.75)")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this is no longer our parent")
    parser.add_argument("--max-bytes", type=int, default=None, help="entry bytes asked for per fetch")
    parser.add_argument("--log-level", default="INFO", help="logging level (stderr)")
    return parser


def _run_options(text: str) -> Any:
    try:
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as handle:
                return json.load(handle)
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise HostExit(ExitCode.BAD_CONFIG, f"bad --run-options: {exc}") from None


def parse_config(argv: Optional[List[str]]) -> tuple[HostConfig, str]:
    args = _parser().parse_args(argv)
    if ":" not in args.target:
        raise HostExit(ExitCode.BAD_CONFIG, f"--target must be module:function, got {args.target!r}")
    options = _run_options(args.run_options)
    if options is not None and not isinstance(options, dict):
        raise HostExit(ExitCode.BAD_CONFIG, "--run-options must be a JSON object")
    extra: dict = {} if args.max_bytes is None else {"max_bytes": args.max_bytes}
    if args.heartbeat_interval is not None:
        extra["heartbeat_interval"] = args.heartbeat_interval
    config = HostConfig(
        plugin=args.plugin,
        group=args.group,
        target=args.target,
        address=args.address,
        state_file=args.state_file,
        run_options=options or {},
        call_timeout=args.call_timeout,
        parent_pid=args.parent_pid,
        **extra,
    )
    return config, args.log_level


def main(argv: Optional[List[str]] = None) -> int:
    faulthandler.enable()  # a segfaulting plugin leaves its Python traceback in the log
    try:
        config, level = parse_config(argv)
    except HostExit as exc:
        report_error(exc.code, exc.message)
        return exc.code
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper() if isinstance(logging.getLevelName(level.upper()), int) else logging.INFO,
        format=f"%(asctime)s %(levelname)s worker[{config.plugin} %(process)d] %(name)s: %(message)s",
    )
    return run_host(config)


def _exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if code != ExitCode.OK:
        # After a crash, do not wait for threads or atexit hooks of a plugin
        # in an unknown state: the supervisor is waiting for this exit.
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
