"""Which collector socket directories under ``statbus-<uid>/`` a test session left behind."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Set

from statbus.pipeline.layout import socket_root
from statbus.pipeline.collector.lifecycle.socket_dirs import OWNER_FILE


def socket_dirs_now() -> Set[str]:
    try:
        return set(os.listdir(socket_root()))
    except FileNotFoundError:
        return set()


def _owner(directory: str) -> Dict[str, object]:
    try:
        with open(os.path.join(directory, OWNER_FILE), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def leftover_socket_dirs(before: Set[str], base: str) -> List[str]:
    """Directories made since ``before`` whose owner's pidfile lies under ``base`` (this session's runs)."""
    base = os.path.realpath(base) + os.sep
    left = []
    for name in sorted(socket_dirs_now() - before):
        directory = os.path.join(socket_root(), name)
        pidfile = _owner(directory).get("pidfile")
        if isinstance(pidfile, str) and os.path.realpath(pidfile).startswith(base):
            left.append(f"{directory} (pidfile {pidfile})")
    return left
