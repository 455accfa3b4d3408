"""The run's collector as a Ray actor: the keeper of an ordinary collector process on its node.

The actor does not run the collector in its own process.  It starts the same
program ``statbus collector start`` runs (``python -m statbus.pipeline``, through
:mod:`.child`) and keeps it, because:

* the collector stays what it is everywhere else: its own main thread (signal
  handlers, graceful and fast stop), pidfile, log, exit codes and worker hosts,
  and ``statbus status`` on that node still works without Ray;
* it shares neither the GIL nor the memory of Ray's core worker (~100 MB and a
  dozen threads), so intake runs as fast as a collector started by hand;
* each side dies with the other: the child is SIGKILLed by the kernel when the
  actor's process dies (:mod:`.child`), and the actor ends its process when the
  collector exits unasked — either way Ray restarts the actor on the same node
  (hard node affinity) and the new collector resumes from the journal.

What a restarted actor must reuse so that connected trainers never notice lives
on the node's disk (:class:`.names.RayFiles`): the CURVE key pair, the allow-list
and the tcp endpoint.  The actor's methods carry discovery and public keys only.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from zmq.utils import z85

from ...plugins import ConfigError, StatbusError
from ...workers.exits import ExitCode
from ..collector.lifecycle.daemon import StartFailed, _log_tail, is_ready
from ..collector.lifecycle.ready import ready_path
from ..layout import RunLayout, make_private_dir
from ..security.keyfiles import KeyPair, generate_key_pair, public_file, read_public_key, secret_file, write_key_file
from .names import RayFiles, check_client_name

logger = logging.getLogger(__name__)

RETRY_ALREADY_RUNNING = 0.2
"""Seconds between two tries while an earlier collector of the run still holds its pidfile."""


class _Keeper(threading.Thread):
    """Starts the collector and waits for it; the thread that started it must outlive it.

    (The kernel's parent-death signal follows the *thread* that forked the child.)
    """

    def __init__(self, command: List[str], log_file: str) -> None:
        super().__init__(name="statbus-ray-keeper", daemon=True)
        self.command = command
        self.log_file = log_file
        self.process: Optional[subprocess.Popen] = None
        self.spawned = threading.Event()
        self.error: Optional[BaseException] = None
        self.armed = False
        """Once the collector served: its unasked exit ends the actor's process."""
        self.stopping = False

    def run(self) -> None:
        try:
            with open(self.log_file, "ab") as log:
                self.process = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, close_fds=True,
                )
        except OSError as exc:
            self.error = exc
            return
        finally:
            self.spawned.set()
        code = self.process.wait()
        if self.armed and not self.stopping:
            logger.error(
                "the collector (pid %s) exited with code %s; ending this actor so that Ray restarts it",
                self.process.pid, code,
            )
            logging.shutdown()
            os._exit(ExitCode.LOST_COLLECTOR)  # and Ray restarts the actor

    def exit_code(self) -> Optional[int]:
        return None if self.process is None else self.process.poll()


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _check_public_key(value: Any) -> bytes:
    try:
        key = value.encode("ascii") if isinstance(value, str) else bytes(value)
        if len(key) == 40 and len(z85.decode(key)) == 32:
            return key
    except (TypeError, ValueError, KeyError, UnicodeEncodeError):
        pass
    raise ConfigError("a trainer's public key must be a 40-character Z85 CURVE key")


class CollectorActor:
    """One per run, named ``statbus-collector:<run_id>`` (see :mod:`.control` for how it is created)."""

    def __init__(
        self,
        run_id: str,
        results_dir: str,
        bind_host: str,
        port: int = 0,
        collector_args: Sequence[str] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.failure = ""
        """Why the collector could not start (the actor then serves only this, for the starter to report)."""
        self._keeper: Optional[_Keeper] = None
        try:
            self._setup(run_id, results_dir, bind_host, port, collector_args, start_timeout)
        except (StatbusError, OSError) as exc:
            # Not raised: Ray would wrap it in its own traceback; the starter reports it and ends the actor.
            self.failure = str(exc)
            logger.error("%s", exc)

    def _setup(
        self, run_id: str, results_dir: str, bind_host: str, port: int, collector_args: Sequence[str], start_timeout: float
    ) -> None:
        import ray

        self.layout = RunLayout(results_dir, run_id)
        self.files = RayFiles(self.layout)
        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        self.node_ip = ray.util.get_node_ip_address()
        os.makedirs(self.layout.statbus_dir, exist_ok=True)
        make_private_dir(self.files.directory)
        self.server_key = self._ensure_keys()
        self.starts = self._count_start()
        if context.was_current_actor_reconstructed:
            # Ray re-runs the constructor with the first start's arguments: a restart continues the
            # run its first start began, even when that one started it over.
            collector_args = [arg for arg in collector_args if arg != "--force"]
        saved = self._read_text(self.files.endpoint_file)
        host = f"[{bind_host}]" if ":" in bind_host else bind_host
        endpoint = saved or f"tcp://{host}:{int(port)}"
        self._command = [
            sys.executable, "-m", "statbus.pipeline.ray.child", str(os.getpid()),
            "--run-id", self.layout.run_id, "--results-dir", self.layout.results_dir,
            "--also-bind", endpoint, "--key-dir", self.files.key_dir, "--allow-dir", self.files.allow_dir,
            *collector_args,
        ]
        self._keeper = self._start(start_timeout)
        ready = _read_json(ready_path(self.layout.statbus_dir))
        self.collector_pid = int(ready.get("pid") or self._keeper.process.pid)
        self.ipc_address = str(ready.get("data") or self.layout.data_address)
        self.tcp_address = str(ready.get("also") or endpoint)
        if saved != self.tcp_address:
            _write_text(self.files.endpoint_file, self.tcp_address)
        logger.info(
            "statbus collector for run %s on node %s (start %d): pid %s, %s and %s",
            run_id, self.node_id, self.starts, self.collector_pid, self.ipc_address, self.tcp_address,
        )

    # --- start ----------------------------------------------------------------------------

    @staticmethod
    def _read_text(path: str) -> str:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except FileNotFoundError:
            return ""

    def _ensure_keys(self) -> bytes:
        make_private_dir(self.files.allow_dir)
        if not os.path.exists(secret_file(self.files.key_dir)):
            generate_key_pair(self.files.key_dir)
        return read_public_key(public_file(self.files.key_dir))

    def _count_start(self) -> int:
        text = self._read_text(self.files.starts_file)
        starts = (int(text) if text.isdigit() else 0) + 1
        _write_text(self.files.starts_file, str(starts))
        return starts

    def _start(self, timeout: float) -> _Keeper:
        """Start the collector and return once it answers; raises StartFailed otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            keeper = _Keeper(self._command, self.layout.log_file)
            keeper.start()
            keeper.spawned.wait()
            if keeper.error is not None:
                raise StartFailed(f"cannot start the collector: {keeper.error}")
            while time.monotonic() < deadline:
                code = keeper.exit_code()
                if code is not None:
                    break
                if is_ready(self.layout, timeout=0.5):
                    keeper.armed = True
                    if keeper.exit_code() is None:
                        return keeper
                    break
                time.sleep(0.05)
            code = keeper.exit_code()
            if code == ExitCode.ALREADY_RUNNING and time.monotonic() < deadline:
                # The collector of the actor Ray just replaced may still be on its way out.
                time.sleep(RETRY_ALREADY_RUNNING)
                continue
            if code is None:
                keeper.stopping = True
                keeper.process.kill()
                keeper.join()
                raise StartFailed(
                    f"the collector was not ready within {timeout:.0f} s and was killed; "
                    f"end of {self.layout.log_file}:\n{_log_tail(self.layout.log_file)}"
                )
            raise StartFailed(
                f"the collector exited with code {code} before it was ready; "
                f"end of {self.layout.log_file}:\n{_log_tail(self.layout.log_file)}"
            )

    # --- what the cluster asks ------------------------------------------------------------

    def info(self) -> Dict[str, Any]:
        """Where the collector is and how to reach it (public values only); ``{"failure": why}`` if nowhere."""
        if self.failure:
            return {"failure": self.failure}
        return {
            "run_id": self.layout.run_id,
            "results_dir": self.layout.results_dir,
            "node_id": self.node_id,
            "node_ip": self.node_ip,
            "hostname": socket.gethostname(),
            "actor_pid": os.getpid(),
            "collector_pid": self.collector_pid,
            "ipc_address": self.ipc_address,
            "tcp_address": self.tcp_address,
            "server_key": self.server_key.decode("ascii"),
            "starts": self.starts,
        }

    def authorize(self, name: str, public_key: str) -> Dict[str, Any]:
        """Put a trainer's public key on the collector's allow-list (read on its next connection)."""
        if self.failure:
            raise StartFailed(self.failure)
        key = _check_public_key(public_key)
        path = public_file(self.files.allow_dir, check_client_name(name))
        write_key_file(path, KeyPair(key, None), overwrite=True)
        logger.info("authorized trainer key %s", name)
        return {"tcp_address": self.tcp_address, "server_key": self.server_key.decode("ascii")}

    def status(self) -> Dict[str, Any]:
        """The collector's own status (``statbus status --json``) plus where the actor runs."""
        from ..control import control_request

        if self.failure:
            return {"ok": False, "error": self.failure, "ray": self.info()}
        try:
            status = control_request(self.layout.control_address, {"op": "status"}, timeout=5.0)
        except StatbusError as exc:
            status = {"ok": False, "error": str(exc)}
        status["ray"] = self.info()
        return status

    def stop(self, timeout: float = 30.0) -> Dict[str, Any]:
        """Stop the collector gracefully (plugins catch up, bounded by ``timeout``); the actor stays."""
        from ..control import control_request

        keeper = self._keeper
        if keeper is None:
            return {"stopped": True, "pid": None, "exit_code": None}
        keeper.stopping = True
        if keeper.exit_code() is None:
            try:
                control_request(self.layout.control_address, {"op": "stop", "timeout": timeout}, timeout=5.0)
            except StatbusError as exc:
                logger.warning("the collector did not take the stop request (%s); sending SIGTERM", exc)
                keeper.process.terminate()
        try:
            code = keeper.process.wait(timeout + 15.0)
        except subprocess.TimeoutExpired:
            return {"stopped": False, "pid": keeper.process.pid}
        keeper.join()
        return {"stopped": True, "pid": keeper.process.pid, "exit_code": code}
