"""``python -m statbus.pipeline.ray.child PARENT_PID ARGS...`` — the collector, tied to its actor.

The ordinary collector (``python -m statbus.pipeline ARGS...``), which first asks
the kernel to SIGKILL it when the thread that started it — the actor's keeper
thread — dies.  A SIGKILLed actor process thus takes its collector along, and the
actor Ray restarts starts a new one that resumes from the journal; an orphaned
collector would hold the run's pidfile and the new one could not start.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Optional, Sequence

from ...workers.exits import ExitCode

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def tie_to_parent(parent_pid: int) -> bool:
    """Die with the parent (Linux); False when the parent is gone already."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # Checked after the prctl: a parent that died before it went unnoticed.
    return os.getppid() == parent_pid


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or not args[0].isdigit():
        print("usage: python -m statbus.pipeline.ray.child PARENT_PID COLLECTOR_ARGS...", file=sys.stderr)
        return 2
    if not tie_to_parent(int(args[0])):
        return ExitCode.LOST_PARENT  # the actor died before the prctl: nothing to serve
    from ..__main__ import main as collector_main

    return collector_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
