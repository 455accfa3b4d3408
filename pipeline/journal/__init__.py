"""The journal: append-only, CRC-checked segment files (``segments``), the single writer
(``writer``), readers (``reader``), per-consumer quotas (``retention``) and the rebuild of
the collector's state from the journal tail (``recovery``)."""
