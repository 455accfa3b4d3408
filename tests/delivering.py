"""A writer call as a worker host makes it: with the journal position of the entry it delivers."""

from __future__ import annotations

from typing import Any, Dict

from statbus.plugins.delivery import set_journal_position


def write_at(writer: Any, position: int, category: str, values: Dict[str, Any], step: int) -> None:
    """``writer.write_stats(category, values, step)`` while delivering the journal entry at ``position``."""
    set_journal_position(position)
    try:
        writer.write_stats(category, values, step)
    finally:
        set_journal_position(None)
