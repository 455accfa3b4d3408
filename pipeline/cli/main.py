"""The ``statbus`` command: one argparse front door, one module per subcommand.

Each subcommand lives in its own module ``pipeline/cli/<name>.py`` exposing

* ``add_parser(subparsers)`` — registers its parser(s) and sets
  ``set_defaults(func=run)`` where ``run(args: argparse.Namespace) -> int``.

To add a subcommand, write the module and add its name to :data:`COMMAND_MODULES`.
Modules are imported when the parser is built, so a slow import in one
subcommand costs every invocation: keep heavy imports inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import List, Optional, Sequence

from ...plugins import StatbusError
from ...workers.exits import ExitCode

logger = logging.getLogger(__name__)

COMMAND_MODULES: List[str] = ["plugins", "collector", "status", "demo", "keys", "bench", "learn"]
"""The modules of this package (``cli/<name>.py``) that register subcommands, in help order."""


def _load_command_module(name: str):  # -> module or None
    module_name = f"{__package__}.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # A subcommand listed before its module is written must not take the
        # whole command down; any other import error is a real bug and raises.
        if exc.name != module_name:
            raise
        logger.debug("subcommand module %s is not there; skipping it", module_name)
        return None


def build_parser(command_modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="statbus",
        description="Move ML-Agents-style training stats out of the trainer: a collector daemon "
        "journals them and feeds every StatsWriter plugin in a worker process of its own.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in command_modules:
        module = _load_command_module(name)
        if module is not None:
            module.add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``statbus`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["learn"]:
        # Every argument is mlagents-learn's, and so is its logging: none of ours.
        from .learn import run_learn

        return run_learn(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        return int(func(args) or ExitCode.OK)
    except StatbusError as exc:
        print(f"statbus {args.command}: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `statbus plugins | head`: the reader left; not worth a traceback.
        # Point stdout at devnull so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.ERROR


if __name__ == "__main__":
    sys.exit(main())
