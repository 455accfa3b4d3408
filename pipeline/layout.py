"""Where a run's files and sockets live.

Everything statbus writes for a run sits under ``<results_dir>/<run_id>/statbus``.
Local sockets live elsewhere: AF_UNIX paths are limited to 107 bytes, so they go
in a short per-user directory (mode 0700) named by a digest of the run
directory; a deep results directory still works.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from typing import TYPE_CHECKING

from ..plugins import ConfigError

if TYPE_CHECKING:
    from ..workers.supervision.context import WorkerPaths


def socket_root() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"statbus-{os.getuid()}")


def make_private_dir(path: str) -> str:
    """Create ``path`` (and parents) and make sure only this user can enter it."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.stat(path)
    if info.st_uid != os.getuid():
        raise ConfigError(f"{path} belongs to uid {info.st_uid}, not to you; refusing to put sockets there")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


@dataclasses.dataclass(frozen=True)
class RunLayout:
    results_dir: str
    run_id: str

    def __post_init__(self) -> None:
        if not self.run_id or "/" in self.run_id or self.run_id in (".", ".."):
            raise ConfigError(f"run id {self.run_id!r} must be a non-empty name without '/'")

    @property
    def run_dir(self) -> str:
        return os.path.join(self.results_dir, self.run_id)

    @property
    def statbus_dir(self) -> str:
        return os.path.join(self.run_dir, "statbus")

    @property
    def journal_dir(self) -> str:
        return os.path.join(self.statbus_dir, "journal")

    @property
    def consumers_dir(self) -> str:
        """One state page per plugin (cursor, heartbeat, in-flight record)."""
        return os.path.join(self.statbus_dir, "consumers")

    @property
    def dead_letter_dir(self) -> str:
        return os.path.join(self.statbus_dir, "dead-letter")

    @property
    def worker_logs_dir(self) -> str:
        """Each worker host's output (the console writer's lines are in ``console.log``)."""
        return os.path.join(self.statbus_dir, "logs")

    @property
    def worker_paths(self) -> "WorkerPaths":
        """The supervisor's per-plugin files, in this run's folders."""
        # Imported on use: a trainer imports this module and must not load statbus.workers.
        from ..workers.supervision.context import WorkerPaths

        return WorkerPaths(self.consumers_dir, self.worker_logs_dir, self.dead_letter_dir)

    def dead_letter_file(self, plugin: str) -> str:
        return self.worker_paths.dead_letter_file(plugin)

    def consumer_state_file(self, plugin: str) -> str:
        return self.worker_paths.state_file(plugin)

    def worker_log_file(self, plugin: str) -> str:
        return self.worker_paths.log_file(plugin)

    @property
    def peers_file(self) -> str:
        """tcp with CURVE: which key each sender belongs to (:mod:`.security.peer_bindings`)."""
        return os.path.join(self.statbus_dir, "peers.jsonl")

    @property
    def ray_dir(self) -> str:
        """The Ray collector's keys, allow-list and endpoint on its node (:mod:`.ray.names`)."""
        return os.path.join(self.statbus_dir, "ray")

    @property
    def spool_dir(self) -> str:
        """Frames trainers could not get acknowledged before they exited (:mod:`.spool_file`)."""
        return os.path.join(self.statbus_dir, "spool")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.statbus_dir, "collector.pid")

    @property
    def autostart_lock(self) -> str:
        """Held by whoever is starting the run's collector, until it answers (``daemon.ensure_running``)."""
        return os.path.join(self.statbus_dir, "autostart.lock")

    @property
    def log_file(self) -> str:
        return os.path.join(self.statbus_dir, "collector.log")

    @property
    def socket_dir(self) -> str:
        digest = hashlib.sha256(os.path.realpath(self.run_dir).encode()).hexdigest()[:12]
        return os.path.join(socket_root(), digest)

    def ensure_socket_dir(self) -> str:
        make_private_dir(socket_root())
        return make_private_dir(self.socket_dir)

    @property
    def data_address(self) -> str:
        """Trainers → collector (ROUTER)."""
        return "ipc://" + os.path.join(self.socket_dir, "data")

    @property
    def worker_address(self) -> str:
        """Worker hosts → collector: fetch requests (ROUTER)."""
        return "ipc://" + os.path.join(self.socket_dir, "work")

    @property
    def control_address(self) -> str:
        """CLI → collector: status, stop, restart, enable, disable (ROUTER)."""
        return "ipc://" + os.path.join(self.socket_dir, "ctl")
