"""Every exit status of statbus's processes, in one table, and the host's last error line.

The worker host, the supervisor that reads its status, the collector, the
daemon launcher and the ``statbus`` command all use these codes: a number means
the same thing whichever process returned it.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
from typing import NoReturn, Optional

from ..plugins.errors import StatbusError


class ExitCode(enum.IntEnum):
    """Exit status of a statbus process (command, collector or worker host)."""

    OK = 0
    ERROR = 1
    """A command or the collector failed; its message says why."""
    USAGE = 2
    """Bad command-line arguments (what argparse itself exits with)."""
    BAD_CONFIG = 64
    IMPORT_FAILURE = 65
    REGISTRATION_FAILURE = 66
    LOST_PARENT = 67
    LOST_COLLECTOR = 68
    RUN_FOLDER_GONE = 69
    """The collector's run folder (or its journal) was deleted, moved or replaced under it."""
    WRITER_CRASH = 70
    ALREADY_RUNNING = 75
    """A collector found another one holding the run's pidfile."""
    INTERRUPTED = 130
    """The command was stopped with Ctrl-C (SIGINT)."""


HOST_EXITS = frozenset({
    ExitCode.OK, ExitCode.BAD_CONFIG, ExitCode.IMPORT_FAILURE, ExitCode.REGISTRATION_FAILURE,
    ExitCode.LOST_PARENT, ExitCode.LOST_COLLECTOR, ExitCode.WRITER_CRASH,
})
"""The codes a worker host ends with; the supervisor decides on restarts by these."""

ERROR_PREFIX = "statbus-worker-error: "
"""Prefix of the one line an abnormally ending host writes last to stderr."""


class HostExit(StatbusError):
    """Ends the host with ``code``; ``message`` becomes the error line."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_line(code: ExitCode, message: str) -> str:
    """The parseable last line of an abnormal exit (one line, bounded length)."""
    flat = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"{ERROR_PREFIX}{code.name}: {flat[:1000]}"


def parse_error_line(line: str) -> Optional[str]:
    """``CODE: message`` from a line written by :func:`report_error`, else ``None``."""
    line = line.rstrip("\n")
    return line[len(ERROR_PREFIX):] if line.startswith(ERROR_PREFIX) else None


def report_error(code: ExitCode, message: str) -> None:
    try:
        sys.stderr.flush()
        sys.stderr.write(error_line(code, message) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr gone: the exit code alone must do


def die(code: ExitCode, message: str) -> NoReturn:
    """End the process now, from any thread, with the error line last in the log.

    Logging is switched off and every root handler's lock held first, so that
    the main thread cannot write after (or into the middle of) the error line.
    """
    logging.disable(logging.CRITICAL)
    for handler in logging.getLogger().handlers:
        handler.acquire()
    report_error(code, message)
    os._exit(code)
