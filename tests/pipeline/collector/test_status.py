"""The collector's status (collector/status.py) as a collector process answers it, and as the CLI shows it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from collector_helpers import RawTrainer, settle
from statbus.pipeline.control import control_request
from statbus.pipeline.wire import hello_record


def test_status_tells_a_trainer_that_ended_without_a_bye_from_a_connected_one(collector, context):
    from statbus.pipeline.cli.status import format_status
    from statbus.pipeline.wire import bye_record

    layout = collector.layout
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    host = socket.gethostname()
    names = ("alive", "killed", "left", "elsewhere")
    trainers = {name: RawTrainer(context, layout.data_address, name) for name in names}
    try:
        pids = {"alive": os.getpid(), "killed": dead_pid.pid, "left": dead_pid.pid, "elsewhere": dead_pid.pid}
        for name, trainer in trainers.items():
            trainer.frame([hello_record({"pid": pids[name], "host": "other-host" if name == "elsewhere" else host})])
        trainers["left"].frame([bye_record({"pid": dead_pid.pid})])
        settle(list(trainers.values()))
        status = control_request(layout.control_address, {"op": "status"}, timeout=10)
        gone = {t["sender"]: (t["gone"], t["bye"]) for t in status["trainers"]}
        # Killed (its pid on this host is dead, no bye) is gone; on another host it cannot be told from a quiet one.
        assert gone == {"alive": (False, False), "killed": (True, False), "left": (True, True),
                        "elsewhere": (False, False)}
        states = [line.rsplit("  ", 1)[-1] for line in format_status(status).splitlines()
                  if line.startswith(f"  {host} ") or line.startswith("  other-host ")]
        assert sorted(states) == ["connected", "connected", "ended, no bye", "gone"], states
    finally:
        for trainer in trainers.values():
            trainer.close()

