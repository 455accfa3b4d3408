"""The ready file: ``<statbus_dir>/collector.ready``, written once a collector answers, removed at its exit.

It holds ``{pid, run_id, data, also, work, ctl, head}`` (``also``: the ``--also-bind``
address, or null): where a launcher (and a test)
finds the addresses of the collector it started.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

READY_FILE = "collector.ready"


def ready_path(statbus_dir: str) -> str:
    return os.path.join(statbus_dir, READY_FILE)


def write_ready(path: str, info: Dict[str, Any]) -> None:
    """Write ``info`` atomically: a reader sees the whole file or none."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    os.replace(tmp, path)


def remove_ready(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
