"""The journal position of the entry being delivered: how a writer tells a replay from a late summary.

A worker host restarted after a crash delivers again what its predecessor had not
committed, some of which its writers may already have written.  A step number cannot
tell such a replay from a legitimate second summary at a step already written (a
process that joined a ``SummaryWriter`` log_dir late, see the README); the entry's
position in the journal can: positions are unique and a plugin gets its entries in
position order.  So a writer that must write nothing twice records, in its own
output, the position of each summary it writes, reads back the highest at start,
and skips an entry at or below it.

The worker host sets the position before it hands an entry to the writers (one
thread delivers, so a module global is enough); outside a worker host (a writer
used in-process, in a unit test) there is none and :func:`journal_position` is None.
"""

from __future__ import annotations

from typing import Optional

_position: Optional[int] = None


def journal_position() -> Optional[int]:
    """The journal position of the entry being delivered now; None outside a worker host."""
    return _position


def set_journal_position(position: Optional[int]) -> None:
    """Called by the worker host before each entry it delivers."""
    global _position
    _position = position


def already_written(position: Optional[int], highest: int) -> bool:
    """True when the entry at ``position`` is at or below ``highest``, the highest one the output holds."""
    return position is not None and position <= highest
