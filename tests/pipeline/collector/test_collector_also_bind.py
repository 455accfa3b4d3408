"""A collector with two trainer addresses (``--also-bind``): its private ipc socket and tcp with CURVE.

The Ray collector takes its own node's trainers on ipc and every other node's on
tcp; both feed one intake, one journal and one aggregation, and CURVE guards the
tcp socket only.
"""

from __future__ import annotations

import json
from collector_helpers import RawTrainer, journal_frames, journal_summaries, settle, wait_for
from statbus.pipeline.security import keyfiles
from statbus.pipeline.security.curve import ClientSecurity
from statbus.pipeline.wire import stat_record, write_record
from statbus.plugins.records import pack_values


def test_one_period_spans_the_ipc_and_the_curve_tcp_socket(tmp_path, context, collectors):
    server_dir, allow = str(tmp_path / "server"), str(tmp_path / "allow")
    keyfiles.generate_key_pair(server_dir)
    keyfiles.ensure_key_dir(allow)
    trainer_public, trainer_secret = keyfiles.generate_key_pair(str(tmp_path / "trainer"), "remote")
    keyfiles.write_key_file(keyfiles.public_file(allow, "remote"), keyfiles.KeyPair(keyfiles.read_public_key(trainer_public), None))
    stranger_dir = str(tmp_path / "stranger")
    keyfiles.generate_key_pair(stranger_dir, "stranger")
    collector = collectors(extra=[
        "--no-plugins", "--also-bind", "tcp://127.0.0.1:0", "--key-dir", server_dir, "--allow-dir", allow,
    ])
    trainers = []
    try:
        with open(collector.ready_file, encoding="utf-8") as handle:
            ready = json.load(handle)
        assert ready["data"] == collector.layout.data_address and ready["also"].startswith("tcp://127.0.0.1:")
        server_public = keyfiles.public_file(server_dir)
        local = RawTrainer(context, ready["data"], "local:1")
        remote = RawTrainer(context, ready["also"], "remote:1", ClientSecurity(trainer_secret, server_public))
        stranger = RawTrainer(
            context, ready["also"], "stranger:1", ClientSecurity(keyfiles.secret_file(stranger_dir, "stranger"), server_public)
        )
        trainers = [local, remote, stranger]
        local.frame([stat_record("Both", "v", 0, 0, pack_values([1.0, 2.0]))])
        remote.frame([stat_record("Both", "v", 0, 0, pack_values([3.0]))])
        stranger.frame([stat_record("Both", "v", 0, 0, pack_values([100.0]))])
        settle([local, remote])
        remote.frame([write_record("Both", 7)])
        settle([remote])
        wait_for(lambda: journal_summaries(collector.layout.journal_dir), what="the summary in the journal")
        assert journal_summaries(collector.layout.journal_dir) == [("Both", 7, {"v": (0, [1.0, 2.0, 3.0])})]
        assert {sender for sender, _ in journal_frames(collector.layout.journal_dir)} == {"local:1", "remote:1"}
        stranger.pump()
        assert stranger.acked == 0
    finally:
        for trainer in trainers:
            trainer.close()
