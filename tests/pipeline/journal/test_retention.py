"""The journal's retention bookkeeping (journal/retention.py): the entry index and quota positions."""

from __future__ import annotations


def test_entry_index_counts_exactly_at_anchors_and_prunes():
    from statbus.pipeline.journal.retention import EntryIndex, quota_position

    index = EntryIndex()
    position = 0
    for n in range(5000):
        end = position + 100
        index.appended(position, end, anchor=(n % 1000 == 0))
        position = end
    assert index.count(0, position) == 5000
    assert index.count(100_000, 300_000) == 2000  # both are anchors (entries 1000 and 3000)
    assert 3500 <= index.count(150_000, position) <= 3500 + EntryIndex.SAMPLE_ENTRIES  # off by less than a sample
    before = len(index)
    index.prune(300_000)
    assert len(index) < before and index.count(300_000, position) == 2000
    # quota positions fall on segment starts, never into the newest segment
    assert quota_position(0, 1000, [0, 400, 800], 1000) == 0
    assert quota_position(0, 1001, [0, 400, 800], 1000) == 400
    assert quota_position(0, 5000, [0, 400, 800], 1000) == 800

