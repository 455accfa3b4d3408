"""The benchmark's child processes: ``python -m statbus.pipeline.bench.procs ROLE ...``.

Each role prints JSON lines on stdout (``{"ready": true}`` once set up, then its
result) and, where it takes part in a timed run, waits for a ``go`` line on
stdin first, so that interpreter start-up and imports are never timed.  Times
are ``time.monotonic()``, which is one system-wide clock on Linux: the parent
compares the instants of several children directly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from . import fleet

PPO_KEYS = (
    "Environment/Cumulative Reward",
    "Environment/Episode Length",
    "Environment/Group Cumulative Reward",
    "Policy/Entropy",
    "Policy/Extrinsic Value Estimate",
    "Policy/Extrinsic Reward",
    "Policy/Learning Rate",
    "Policy/Epsilon",
    "Policy/Beta",
    "Losses/Policy Loss",
    "Losses/Value Loss",
    "Is Training",
)
"""Twelve keys a PPO trainer of ML-Agents reports per summary period."""


def rss_bytes() -> int:
    """This process's resident set size, from /proc (no psutil import in a measured trainer)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def emit(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def wait_go() -> None:
    emit({"ready": True})
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(3)


# --- roles -----------------------------------------------------------------------

def role_trainer(args: argparse.Namespace) -> int:
    """Record ``--values`` values over the 12 PPO keys, a write_stats every ``--write-every`` values."""
    from statbus.pipeline.trainer.config import configure
    from statbus.pipeline.trainer.reporter import StatsReporter, client_counters, flush, shutdown

    configure(args.run_id, args.results_dir, autostart=False)
    reporter = StatsReporter(args.category)
    reporter.add_stat("warmup", 1.0)
    flush(30.0)  # connected, HELLO acked: the timed part is pure steady state
    keys = PPO_KEYS
    nkeys = len(keys)
    rounds = max(1, args.values // nkeys)
    write_every = max(1, args.write_every // nkeys)
    add_stat = reporter.add_stat
    write_stats = reporter.write_stats
    wait_go()
    started = time.monotonic()
    step = 0
    for i in range(rounds):
        value = float(i)
        for key in keys:
            add_stat(key, value)
        if (i + 1) % write_every == 0:
            step += 1
            write_stats(step)
    recorded = time.monotonic()
    ok = flush(args.timeout)
    done = time.monotonic()
    counters = client_counters()
    shutdown(1.0)
    emit({"started": started, "recorded": recorded, "done": done, "flushed": ok,
          "values": rounds * nkeys, "summaries": step, "frames": counters.get("frames_sent", 0),
          "values_dropped": counters.get("values_dropped", 0)})
    return 0


def role_stream(args: argparse.Namespace) -> int:
    """Record a steady stream (12 keys x 20 values and a write_stats every 50 ms) for ``--duration`` s."""
    from statbus.pipeline.trainer.config import configure
    from statbus.pipeline.trainer.reporter import StatsReporter, client_counters, flush, shutdown

    configure(args.run_id, args.results_dir, autostart=False)
    reporter = StatsReporter(args.category)
    emit({"ready": True})
    deadline = time.monotonic() + args.duration
    step = 0
    while time.monotonic() < deadline:
        for i in range(20):
            for key in PPO_KEYS:
                reporter.add_stat(key, float(i))
        step += 1
        reporter.write_stats(step)
        time.sleep(0.05)
    ok = flush(10.0)
    emit({"summaries": step, "flushed": ok, "values_dropped": client_counters().get("values_dropped", 0)})
    shutdown(1.0)
    return 0


def role_raw_push(args: argparse.Namespace) -> int:
    """Push pre-encoded frames (length-prefixed in ``--frames``) over plain PUSH as fast as zmq takes them."""
    import zmq

    frames = read_frames(args.frames)
    context = zmq.Context()
    try:
        with context.socket(zmq.PUSH) as sock:
            sock.setsockopt(zmq.IMMEDIATE, 1)  # the warm-up send blocks until the puller is connected
            sock.setsockopt(zmq.LINGER, int(args.timeout * 1000))
            sock.connect(args.address)
            wait_go()
            sock.send(b"")
            started = time.monotonic()
            send = sock.send
            for frame in frames:
                send(frame, copy=False)
            emit({"started": started, "frames": len(frames), "bytes": sum(len(f) for f in frames)})
            # Stay connected until the puller has everything: a PUSH that closes early can
            # leave its last frames in flight, and the puller would never see them.
            sys.stdin.readline()
    finally:
        context.term()
    return 0


def role_replay(args: argparse.Namespace) -> int:
    """Send journaled frames again to a collector, as one new sender (re-encoded before the clock
    starts), and wait for the ack of the last: the collector's intake alone, no trainer-side Python."""
    import uuid

    import msgpack
    import zmq

    from statbus.pipeline.wire import decode_ack, encode_frame

    sender = f"bench-replay:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    frames = []
    for seq, data in enumerate(read_frames(args.frames), start=1):
        envelope = msgpack.unpackb(data, raw=False)
        frames.append(encode_frame(sender, seq, 1, 0, envelope[5]))
    context = zmq.Context()
    try:
        with context.socket(zmq.DEALER) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, 0)  # all of them queued at once: no window to tune
            sock.connect(args.address)
            if not sock.poll(int(args.timeout * 1000), zmq.POLLOUT):
                emit({"error": "no collector to connect to"})
                return 1
            wait_go()
            started = time.monotonic()
            for frame in frames:
                sock.send(frame, copy=False)
            acked = 0
            while acked < len(frames):
                if not sock.poll(int(args.timeout * 1000)):
                    emit({"error": f"acked {acked} of {len(frames)}"})
                    return 1
                acked = max(acked, decode_ack(sock.recv()))
            emit({"started": started, "done": time.monotonic(), "frames": len(frames)})
    finally:
        context.term()
    return 0


def role_raw_pull(args: argparse.Namespace) -> int:
    """Receive the warm-up message and ``--count`` frames; report when the last arrived."""
    import zmq

    context = zmq.Context()
    try:
        with context.socket(zmq.PULL) as sock:
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(args.address)
            emit({"ready": True})
            if not sock.poll(int(args.timeout * 1000)):
                emit({"error": "no warm-up message"})
                return 1
            sock.recv()
            received = nbytes = 0
            recv = sock.recv
            while received < args.count:
                if not sock.poll(int(args.timeout * 1000)):
                    emit({"error": f"only {received} of {args.count} frames"})
                    return 1
                nbytes += len(recv(copy=False))
                received += 1
            emit({"done": time.monotonic(), "frames": received, "bytes": nbytes})
    finally:
        context.term()
    return 0


def role_buffer_fill(args: argparse.Namespace) -> int:
    """With no collector, record values until the trainer's buffer overflows, then as many again."""
    from statbus.pipeline.trainer.config import configure
    from statbus.pipeline.trainer.reporter import StatsReporter, client_counters, shutdown

    base = rss_bytes()
    configure(args.run_id, args.results_dir, address=args.address, autostart=False,
              buffer_bytes=args.buffer_bytes, linger=0.0)
    reporter = StatsReporter("Memory")
    add_stat = reporter.add_stat
    keys = PPO_KEYS
    peak = rss_bytes()
    recorded = 0
    full_at: Optional[int] = None
    rss_full = 0
    queued_max = 0  # events recorded but not yet taken by the sender thread (outside the buffer)
    deadline = time.monotonic() + args.timeout
    chunk = 12_000
    while time.monotonic() < deadline:
        for i in range(chunk // len(keys)):
            value = float(i)
            for key in keys:
                add_stat(key, value)
        recorded += chunk
        time.sleep(0.002)  # let the sender drain, as training's own pauses would
        peak = max(peak, rss_bytes())
        counters = client_counters()
        queued_max = max(queued_max, counters.get("values_queued", 0))
        if full_at is None and counters.get("values_dropped", 0) > 0:
            full_at = recorded
            rss_full = rss_bytes()
        if full_at is not None and recorded >= 2 * full_at:
            break
    counters = client_counters()
    emit({"rss_base": base, "rss_full": rss_full, "rss_peak": peak, "rss_end": rss_bytes(),
          "recorded": recorded, "full_at": full_at, "buffer_bytes": args.buffer_bytes,
          "buffer_bytes_max": counters.get("buffer_bytes_max", 0),
          "values_dropped": counters.get("values_dropped", 0), "queued_max": queued_max})
    shutdown(0.0)
    return 0


# --- frames files ----------------------------------------------------------------

def write_frames(path: str, frames: Sequence[bytes]) -> None:
    with open(path, "wb") as handle:
        for frame in frames:
            handle.write(len(frame).to_bytes(4, "little"))
            handle.write(frame)


def read_frames(path: str) -> List[bytes]:
    frames: List[bytes] = []
    with open(path, "rb") as handle:
        data = handle.read()
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos:pos + 4], "little")
        frames.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return frames


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m statbus.pipeline.bench.procs")
    roles = parser.add_subparsers(dest="role", required=True)
    trainer = roles.add_parser("trainer")
    trainer.add_argument("--run-id", required=True)
    trainer.add_argument("--results-dir", required=True)
    trainer.add_argument("--category", default="Bench")
    trainer.add_argument("--values", type=int, default=120_000)
    trainer.add_argument("--write-every", type=int, default=1200)
    trainer.add_argument("--timeout", type=float, default=120.0)
    trainer.set_defaults(func=role_trainer)
    stream = roles.add_parser("stream")
    stream.add_argument("--run-id", required=True)
    stream.add_argument("--results-dir", required=True)
    stream.add_argument("--category", default="Stream")
    stream.add_argument("--duration", type=float, default=600.0)
    stream.set_defaults(func=role_stream)
    push = roles.add_parser("raw-push")
    push.add_argument("--address", required=True)
    push.add_argument("--frames", required=True)
    push.add_argument("--timeout", type=float, default=60.0)
    push.set_defaults(func=role_raw_push)
    replay = roles.add_parser("replay")
    replay.add_argument("--address", required=True)
    replay.add_argument("--frames", required=True)
    replay.add_argument("--timeout", type=float, default=60.0)
    replay.set_defaults(func=role_replay)
    pull = roles.add_parser("raw-pull")
    pull.add_argument("--address", required=True)
    pull.add_argument("--count", type=int, required=True)
    pull.add_argument("--timeout", type=float, default=60.0)
    pull.set_defaults(func=role_raw_pull)
    fill = roles.add_parser("buffer-fill")
    fill.add_argument("--run-id", required=True)
    fill.add_argument("--results-dir", required=True)
    fill.add_argument("--address", required=True)
    fill.add_argument("--buffer-bytes", type=int, required=True)
    fill.add_argument("--timeout", type=float, default=60.0)
    fill.set_defaults(func=role_buffer_fill)
    fleet.add_parser(roles)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
