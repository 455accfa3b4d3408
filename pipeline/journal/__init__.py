"""The journal: append-only, CRC-checked segment files (``segments``), the single writer
(``writer``), readers (``reader``) and per-consumer quotas (``retention``).  A storage library:
it imports nothing of statbus but the error root; what its entries mean (replay at
recovery, the snapshot) is the collector's (``pipeline/collector/recovery.py``)."""
