"""A journal entry as a JSON-safe dict: what the dead-letter file keeps of a record set aside."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ...plugins.records import MediaRecord, decode_batch, finite_or_none, unpack_summary, unpack_values
from ..journal.writer import EntryType
from ..wire import frame_records_bytes


def read_entry_record(payload: bytes, kind: EntryType) -> Optional[Dict[str, Any]]:
    """A journal entry as a JSON-safe dict (the dead-letter file's ``record``)."""
    def values(packed: bytes) -> list:
        return [finite_or_none(v) for v in unpack_values(packed)]

    try:
        if kind == EntryType.SUMMARY:
            summary = unpack_summary(payload)
            return {
                "kind": "summary",
                "category": summary.category,
                "step": summary.step,
                "values": {key: {"aggregation": agg.name, "values": values(p)} for key, agg, p in summary.entries},
            }
        if kind == EntryType.FRAME:
            records = []
            for record in decode_batch(frame_records_bytes(payload)):
                if hasattr(record, "packed"):
                    records.append({
                        "kind": "stat", "category": record.category, "key": record.key,
                        "aggregation": record.aggregation.name, "op": record.op.name, "values": values(record.packed),
                    })
                elif type(record) is MediaRecord:
                    media = record.media  # its bytes stay in the journal: the dead letter says what it was
                    records.append({
                        "kind": "media", "category": record.category, "tag": record.tag, "step": record.step,
                        "media": media.kind.value, "shape": list(media.shape), "dtype": media.dtype,
                        "nbytes": media.nbytes,
                    })
                else:
                    records.append({
                        "kind": "property", "category": record.category,
                        "property_type": record.property_type.value, "value": repr(record.value)[:10_000],
                    })
            return {"kind": "batch", "records": records}
    except Exception as exc:  # noqa: BLE001 — a dead letter is evidence, never a reason to fail
        return {"kind": "unreadable", "error": repr(exc)[:500]}
    return None
