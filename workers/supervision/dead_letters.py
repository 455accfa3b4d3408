"""A plugin's dead-letter file: one JSON line per record set aside as poison for it.

The positions listed there are never delivered to the plugin again, by this
collector or the next one of the run (they are read back at start).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Set

logger = logging.getLogger(__name__)


def read_dead_letter_positions(path: str) -> Set[int]:
    """Positions listed in a dead-letter file (none when it does not exist)."""
    positions: Set[int] = set()
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    positions.add(int(json.loads(line)["position"]))
                except (ValueError, KeyError, TypeError):
                    logger.warning("ignoring a malformed line in %s", path)
    except FileNotFoundError:
        pass
    return positions


def append_dead_letter(path: str, line: Mapping[str, Any]) -> None:
    """Append one line; a file that cannot be written is logged: the record is set aside anyway."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line, default=repr) + "\n")
    except OSError:
        logger.exception("plugin %s: cannot write dead-letter file %s", line.get("plugin"), path)
