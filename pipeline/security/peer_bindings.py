"""Which CURVE key a sender belongs to: bound by the first key that used it, for the run's life.

On ``tcp://`` with CURVE every frame carries its connection's ``User-Id`` — the
allow-list name ZAP gave the peer's key (:mod:`.zap`; one name per key).  The
first accepted frame of a sender binds the sender to that name; a frame of the
same sender from another key is refused (``wrong_key``), so an authorized peer
that learns another trainer's sender id cannot forge its next sequence numbers.

Bindings outlive the collector: each new one is appended to
``statbus/peers.jsonl`` and read back at start.  The table is bounded
(:data:`MAX_BINDINGS`, the least recently used binding goes, counted), like the
sender table; the file is rewritten compactly at start when it holds more than
twice the bindings in use.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from typing import Optional

logger = logging.getLogger(__name__)

MAX_BINDINGS = 10_000
"""Sender → key bindings kept (the sender table's bound): past it the least recently used goes."""


class PeerBindings:
    def __init__(self, max_bindings: int = MAX_BINDINGS) -> None:
        self.max_bindings = max_bindings
        self._bound: "OrderedDict[str, str]" = OrderedDict()
        self._path: Optional[str] = None
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._bound)

    def get(self, sender: str) -> Optional[str]:
        return self._bound.get(sender)

    def touch(self, sender: str) -> None:
        self._bound.move_to_end(sender)

    def bind(self, sender: str, peer: str) -> None:
        self._put(sender, peer)
        if self._path is not None:
            try:
                with open(self._path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps([sender, peer]) + "\n")
            except OSError as exc:
                logger.warning("could not record that sender %s is bound to key %r: %s", sender, peer, exc)

    def _put(self, sender: str, peer: str) -> None:
        self._bound[sender] = peer
        self._bound.move_to_end(sender)
        while len(self._bound) > self.max_bindings:
            self._bound.popitem(last=False)
            self.evicted += 1

    def load(self, path: str) -> None:
        """Read the bindings of earlier collectors of the run, and record new ones in ``path``."""
        lines = 0
        try:
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    lines += 1
                    try:
                        sender, peer = json.loads(line)
                    except (ValueError, TypeError):
                        continue  # a torn last line
                    if isinstance(sender, str) and isinstance(peer, str):
                        self._put(sender, peer)
        except FileNotFoundError:
            pass
        self._path = path
        self.evicted = 0  # this collector's evictions, not the history's
        if lines > 2 * max(len(self._bound), 1):
            temporary = f"{path}.{os.getpid()}.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                for sender, peer in self._bound.items():
                    handle.write(json.dumps([sender, peer]) + "\n")
            os.replace(temporary, path)
