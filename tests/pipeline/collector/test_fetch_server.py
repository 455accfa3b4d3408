"""The collector's fetch server (collector/fetch_server.py): a worker's fetch parks at the head and
wakes on data; plugins asking for the same positions share one read, each with its own skips."""

from __future__ import annotations

import msgpack
import zmq

from collector_helpers import RawTrainer, Worker, settle
from statbus.pipeline.collector.fetch_server import FetchServer
from statbus.pipeline.control import control_request
from statbus.pipeline.journal.writer import EntryType, Journal, JournalReader
from statbus.pipeline.wire import property_record, stat_record, write_record
from statbus.plugins.records import PropertyRecord, decode_batch, pack_values


def stat(category, key, values, agg=0, op=0):
    return stat_record(category, key, agg, op, pack_values(values))


def test_fetch_round_trip_parks_and_wakes(collector, context):
    layout = collector.layout
    t = RawTrainer(context, layout.data_address, "t")
    worker = Worker(context, layout.worker_address, "probe")
    try:
        t.frame([property_record("C", "hyperparameters", {"lr": 0.5}), stat("C", "k", [1, 2]), write_record("C", 7)])
        settle([t])
        entries, next_after, head, skipped = worker.fetch(0)
        assert skipped == 0 and next_after == head
        assert [e.kind for e in entries] == [0, 1]  # the snapshot is never sent
        batch = decode_batch(entries[0].data)
        assert isinstance(batch[0], PropertyRecord) and batch[0].value == {"lr": 0.5}
        assert batch[1].values == [1.0, 2.0]
        summary = msgpack.unpackb(entries[1].data, raw=False)
        assert summary[:3] == [1, "C", 7]
        # small max_bytes: one entry at a time, and next_after resumes exactly
        collected, after, replies = [], 0, 0
        while after < head:
            got, after, _, _ = worker.fetch(after, max_bytes=1)
            assert len(got) <= 1
            collected += got
            replies += 1
        assert collected == entries and after == head and replies == 3  # snapshot, batch, summary
        # a fetch at the head parks; data arriving wakes it
        worker.request(head)
        assert not worker.socket.poll(100)
        t.frame([stat("C", "k", [3])])
        woke, woke_next, woke_head, _ = worker.reply()
        assert [e.kind for e in woke] == [0] and woke_next == woke_head > head
        # with nothing arriving, the parked fetch is answered empty (the liveness signal)
        assert worker.fetch(woke_next).entries == []
        status = control_request(layout.control_address, {"op": "status"}, timeout=10)
        assert [c["plugin"] for c in status["consumers"]] == ["probe"]
    finally:
        t.close()
        worker.close()


class _CountingReader(JournalReader):
    """A real reader that counts its reads (to see which fetches were served from memory)."""

    reads = 0

    def read(self, after, max_bytes=1 << 20, max_entries=10_000):
        self.reads += 1
        return super().read(after, max_bytes, max_entries)


def test_plugins_asking_for_the_same_positions_share_one_read_with_their_own_skips(tmp_path, context):
    journal = Journal(str(tmp_path / "journal"))
    journal.open()
    journal.rotate(b"snapshot")
    positions = [journal.append(EntryType.SUMMARY, msgpack.packb([1, "C", step, []])) for step in range(40)]
    journal.commit()
    reader = _CountingReader(str(tmp_path / "journal"))
    router = context.socket(zmq.ROUTER)
    address = "ipc://" + str(tmp_path / "work")
    router.bind(address)
    poison = {"b": frozenset({positions[1]})}
    server = FetchServer(router, reader, head=lambda: journal.end_position,
                         skip=lambda plugin: poison.get(plugin, frozenset()))
    a, b = Worker(context, address, "a"), Worker(context, address, "b")

    def fetch(worker, after, max_bytes):
        worker.request(after, max_bytes)
        assert router.poll(10_000)
        server.on_readable()
        return worker.reply()

    try:
        got_a, next_a, head, skipped_a = fetch(a, positions[0], 200)
        got_b, next_b, _, skipped_b = fetch(b, positions[0], 200)
        assert reader.reads == 1  # stopped at its byte limit, short of the head: kept for b
        assert next_a == next_b < head and len(got_a) > 2
        assert (skipped_a, skipped_b) == (0, 1)
        assert got_b == [e for e in got_a if e.position != positions[1]]
        # A read that reached the head is not kept: what is appended later is served.
        rest, end, _, _ = fetch(a, next_a, 1 << 20)
        assert end == head and rest[-1].position == positions[-1]
        more = journal.append(EntryType.SUMMARY, msgpack.packb([1, "C", 99, []]))
        journal.commit()
        again, _, _, _ = fetch(a, next_a, 1 << 20)
        assert [e.position for e in again] == [e.position for e in rest] + [more]
    finally:
        a.close()
        b.close()
        router.close(linger=0)
        reader.close()
        journal.close()

