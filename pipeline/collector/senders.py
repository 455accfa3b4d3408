"""What the collector knows of each trainer process: one :class:`SenderState` per sender.

The states live in :class:`.intake.Intake`'s table (bounded in count and bytes); their
snapshot form goes into the journal's snapshots, so a restarted collector knows its
senders again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping

SENDER_OVERHEAD = 600
"""Bytes counted per sender beside its name and info (its state object and table slot)."""
MAX_INFO_CHARS = 256
"""A sender's info fields (pid, host, run id, argv0) are kept up to this many characters each."""

INFO_FIELDS = ("pid", "host", "run_id", "argv0")


def info_value(value: Any) -> Any:
    """A hello info value as kept: strings cut to :data:`MAX_INFO_CHARS`, numbers as they are, the rest dropped."""
    return value[:MAX_INFO_CHARS] if isinstance(value, (str, bytes)) else value if isinstance(value, (int, float, bool)) else None


@dataclasses.dataclass
class SenderState:
    """What the collector knows of one trainer process (mutable: the loop updates it)."""

    sender: str
    last_seq: int = 0
    info: Dict[str, Any] = dataclasses.field(default_factory=dict)
    first_seen: float = 0.0
    last_seen: float = 0.0
    frames: int = 0
    values: int = 0
    duplicates: int = 0
    gaps: int = 0
    rejects: int = 0
    dropped: int = 0
    """Values the trainer's own buffer dropped (from its envelope)."""
    media_dropped: int = 0
    media_dropped_bytes: int = 0
    """Media values (raw bytes) the trainer dropped past its media bound (its MEDIA_DROPS markers)."""
    bye: bool = False
    size: int = 0
    """Bytes counted against the table's bound (``intake.MAX_SENDER_BYTES``), as :meth:`measure` last found."""

    def measure(self) -> int:
        """Count this sender's bytes again (its name and info change them); the new :attr:`size`."""
        info = sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in self.info.values())
        self.size = SENDER_OVERHEAD + len(self.sender) + info
        return self.size

    def to_snapshot(self) -> Dict[str, Any]:
        """The journal snapshot form: ``seq`` is what recovery needs, the rest is for status."""
        return {
            "seq": self.last_seq,
            "info": {k: v for k, v in self.info.items() if k in INFO_FIELDS},
            "frames": self.frames,
            "values": self.values,
            "dropped": self.dropped,
            "media_dropped": self.media_dropped,
            "media_dropped_bytes": self.media_dropped_bytes,
            "bye": self.bye,
        }

    @classmethod
    def from_snapshot(cls, sender: str, data: Mapping[str, Any]) -> "SenderState":
        def count(name: str) -> int:
            value = data.get(name, 0)
            return value if type(value) is int and value >= 0 else 0

        info = data.get("info")
        return cls(
            sender=sender,
            last_seq=count("seq"),
            info={k: info_value(v) for k, v in info.items() if k in INFO_FIELDS} if isinstance(info, Mapping) else {},
            frames=count("frames"),
            values=count("values"),
            dropped=count("dropped"),
            media_dropped=count("media_dropped"),
            media_dropped_bytes=count("media_dropped_bytes"),
            bye=data.get("bye") is True,
        )
