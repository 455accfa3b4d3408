"""Child processes of one benchmark step: started together, released together, always reaped."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from .collector import BenchError


class Child:
    """One ``bench_procs`` role with JSON lines on stdout and a ``go`` line on stdin."""

    def __init__(self, args: Sequence[str], env: Optional[Mapping[str, str]] = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "statbus.pipeline.bench.procs", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=None if env is None else dict(env), close_fds=True,
        )
        self._pending = b""

    def read(self, timeout: float) -> Dict[str, Any]:
        """The next JSON line, or BenchError (with the child's stderr) if it exits or is silent."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"child {self.proc.args[3:5]} silent for {timeout:.0f} s")
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(5)
                    err = self.proc.stderr.read().decode("utf-8", "replace")[-1500:] if self.proc.stderr else ""
                    raise BenchError(f"child {self.proc.args[3:5]} exited with {self.proc.returncode}: {err}")
                self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


class Children:
    """A group of children; ``with`` kills and reaps every one of them on the way out."""

    def __init__(self) -> None:
        self.children: List[Child] = []

    def start(self, args: Sequence[str], env: Optional[Mapping[str, str]] = None) -> Child:
        child = Child(args, env)
        self.children.append(child)
        return child

    def wait_ready(self, timeout: float = 60.0) -> None:
        for child in self.children:
            reply = child.read(timeout)
            if not reply.get("ready"):
                raise BenchError(f"child said {reply} instead of ready")

    def go(self) -> None:
        for child in self.children:
            child.go()

    def results(self, timeout: float) -> List[Dict[str, Any]]:
        return [child.read(timeout) for child in self.children]

    def close(self) -> None:
        for child in self.children:
            child.kill()
        self.children.clear()

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_json_child(module: str, args: Sequence[str], out_path: str, env: Mapping[str, str],
                   timeout: float = 600.0) -> Any:
    """Run ``python -m module *args`` to its end (killed and reaped past ``timeout``) and return the
    JSON it wrote to ``out_path``; BenchError with the end of its output if it fails."""
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=dict(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"bench child {module} exited {proc.returncode}: {output.decode(errors='replace')[-2000:]}")
    with open(out_path, encoding="utf-8") as handle:
        return json.load(handle)
