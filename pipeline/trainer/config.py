"""Trainer-side configuration: ``configure()`` and the environment variables.

A launcher configures child processes it does not own through the environment
(``STATBUS_RUN_ID``, ``STATBUS_RESULTS_DIR``, ``STATBUS_ADDRESS``,
``STATBUS_BUFFER_BYTES``, ``STATBUS_MEDIA_BYTES``, ``STATBUS_AUTOSTART``, ``STATBUS_FORCE``, ``STATBUS_CONFIG``,
``STATBUS_RAY``); an
explicit ``configure()`` call overrides them.  A process that never calls ``configure()`` gets the
environment's settings (or the defaults) lazily, on its first stat.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Callable, List, Mapping, MutableMapping, Optional, Tuple

from ...plugins import ConfigError
from ..layout import RunLayout

logger = logging.getLogger(__name__)

ENV_RUN_ID = "STATBUS_RUN_ID"
ENV_RESULTS_DIR = "STATBUS_RESULTS_DIR"
ENV_ADDRESS = "STATBUS_ADDRESS"
ENV_BUFFER_BYTES = "STATBUS_BUFFER_BYTES"
ENV_MEDIA_BYTES = "STATBUS_MEDIA_BYTES"
ENV_AUTOSTART = "STATBUS_AUTOSTART"
ENV_FORCE = "STATBUS_FORCE"
ENV_RAY = "STATBUS_RAY"
ENV_CONFIG = "STATBUS_CONFIG"
"""The per-plugin settings file (TOML) of a collector started on demand."""

DEFAULT_RUN_ID = "ppo"
DEFAULT_RESULTS_DIR = "results"
DEFAULT_BUFFER_BYTES = 64 << 20
DEFAULT_MEDIA_BYTES = 256 << 20
DEFAULT_BATCH_INTERVAL = 0.05
DEFAULT_LINGER = 2.0

# A buffer smaller than this could not hold even one ordinary frame.
MIN_BUFFER_BYTES = 4096
_ADDRESS_SCHEMES = ("ipc://", "tcp://", "inproc://")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Everything the trainer client needs; frozen, so a running client's view never changes."""

    run_id: str = DEFAULT_RUN_ID
    results_dir: str = DEFAULT_RESULTS_DIR
    address: str = ""
    buffer_bytes: int = DEFAULT_BUFFER_BYTES
    media_bytes: int = DEFAULT_MEDIA_BYTES
    """Raw bytes of media values (``add_media``) queued and not yet acknowledged past which a new
    one is dropped and counted; apart from ``buffer_bytes``, which bounds everything else."""
    batch_interval: float = DEFAULT_BATCH_INTERVAL
    prompt_summaries: bool = True
    """Send a ``write_stats`` at once; False: with the next batch, at most ``batch_interval`` later
    (one wake-up of every statbus process fewer per summary)."""
    linger: float = DEFAULT_LINGER
    """Seconds an exiting client waits for acks without a sign of life from its collector
    (it waits while a busy one repeats its acks, 60 s at most: ``sender.Client.close``)."""
    autostart: bool = True
    collector_args: Tuple[str, ...] = ()
    """Extra arguments for a collector this trainer starts on demand (e.g. ``--set ...``)."""
    ray: bool = False
    """Find the run's collector through Ray (its named actor) instead of ``address``."""

    def __post_init__(self) -> None:
        layout = RunLayout(self.results_dir, self.run_id)  # validates run_id
        if not self.address:
            object.__setattr__(self, "address", layout.data_address)
        if not self.address.startswith(_ADDRESS_SCHEMES):
            raise ConfigError(f"address {self.address!r} must start with one of {', '.join(_ADDRESS_SCHEMES)}")
        if type(self.buffer_bytes) is not int or self.buffer_bytes < MIN_BUFFER_BYTES:
            raise ConfigError(f"buffer_bytes must be an integer >= {MIN_BUFFER_BYTES}, got {self.buffer_bytes!r}")
        if type(self.media_bytes) is not int or self.media_bytes < 0:
            raise ConfigError(f"media_bytes must be an integer >= 0, got {self.media_bytes!r}")
        if not 0.001 <= float(self.batch_interval) <= 10.0:
            raise ConfigError(f"batch_interval must be between 0.001 and 10 seconds, got {self.batch_interval!r}")
        if not 0.0 <= float(self.linger) <= 3600.0:
            raise ConfigError(f"linger must be between 0 and 3600 seconds, got {self.linger!r}")


def _env_autostart(environ: Mapping[str, str]) -> bool:
    # Only an explicit "0" (or false/no/off) disables: an unset variable means "on".
    return environ.get(ENV_AUTOSTART, "1").strip().lower() not in ("0", "false", "no", "off")


def _env_ray(environ: Mapping[str, str]) -> bool:
    return environ.get(ENV_RAY, "0").strip().lower() in ("1", "true", "yes", "on")


def _env_bytes(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


_OFF = ("", "0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


def _process_start_time() -> float:
    """This process's creation, as a Unix time to ~10 ms (psutil's counts from a boot time in whole seconds)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            ticks = int(handle.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().create_time()


def force_before(environ: MutableMapping[str, str] = os.environ) -> Optional[float]:
    """The time an on-demand start must not clear a run started at or after, or None (no ``STATBUS_FORCE``)."""
    raw = environ.get(ENV_FORCE, "").strip().lower()
    if raw in _OFF:
        return None
    if raw in _ON:
        moment = _process_start_time()
        environ[ENV_FORCE] = repr(moment)  # processes started from here on share this training's start
        return moment
    try:
        return float(raw)
    except ValueError:
        logger.warning("%s=%r is neither 1 nor a Unix time; not starting the run over", ENV_FORCE, raw)
        return None


def build_config(
    run_id: Optional[str] = None,
    results_dir: Optional[str] = None,
    address: Optional[str] = None,
    *,
    buffer_bytes: Optional[int] = None,
    media_bytes: Optional[int] = None,
    batch_interval: float = DEFAULT_BATCH_INTERVAL,
    prompt_summaries: bool = True,
    linger: float = DEFAULT_LINGER,
    autostart: Optional[bool] = None,
    ray: Optional[bool] = None,
    environ: Optional[Mapping[str, str]] = None,
    collector_args: Tuple[str, ...] = (),
) -> TrainerConfig:
    """Arguments first, then the environment, then the defaults; raises ConfigError."""
    env = os.environ if environ is None else environ
    if environ is None:
        force_before(os.environ)  # STATBUS_FORCE=1 becomes this training's start, for the processes it starts
    return TrainerConfig(
        run_id=run_id or env.get(ENV_RUN_ID) or DEFAULT_RUN_ID,
        results_dir=results_dir or env.get(ENV_RESULTS_DIR) or DEFAULT_RESULTS_DIR,
        address=address or env.get(ENV_ADDRESS) or "",
        buffer_bytes=_env_bytes(env, ENV_BUFFER_BYTES, DEFAULT_BUFFER_BYTES) if buffer_bytes is None else buffer_bytes,
        media_bytes=_env_bytes(env, ENV_MEDIA_BYTES, DEFAULT_MEDIA_BYTES) if media_bytes is None else media_bytes,
        batch_interval=batch_interval,
        prompt_summaries=prompt_summaries,
        linger=linger,
        autostart=_env_autostart(env) if autostart is None else bool(autostart),
        collector_args=tuple(collector_args),
        ray=_env_ray(env) if ray is None else bool(ray),
    )


_lock = threading.Lock()
_configured: Optional[TrainerConfig] = None
_listeners: List[Callable[[TrainerConfig], None]] = []


def on_configure(listener: Callable[[TrainerConfig], None]) -> None:
    """Called with the new config after each ``configure()`` (the client restarts itself)."""
    _listeners.append(listener)


def configure(
    run_id: Optional[str] = None,
    results_dir: Optional[str] = None,
    address: Optional[str] = None,
    *,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    media_bytes: int = DEFAULT_MEDIA_BYTES,
    batch_interval: float = DEFAULT_BATCH_INTERVAL,
    prompt_summaries: bool = True,
    linger: float = DEFAULT_LINGER,
    autostart: Optional[bool] = None,
    collector_args: Tuple[str, ...] = (),
    ray: Optional[bool] = None,
) -> None:
    """Set this process's statbus settings; arguments left ``None`` come from the environment.

    ``ray=True`` (or ``STATBUS_RAY=1``): find the run's collector through Ray — its named
    actor, started by ``statbus collector start --ray`` — from any node of the cluster
    (:mod:`statbus.pipeline.ray`); ``address`` is then ignored.

    ``buffer_bytes`` left at its default still yields to ``STATBUS_BUFFER_BYTES``, and
    ``media_bytes`` (the bound of media queued and not yet acknowledged, 256 MiB; past it a new
    media value is dropped and counted) to ``STATBUS_MEDIA_BYTES``.
    Calling it after stats were recorded shuts the running client down (sending
    what it holds, bounded by its linger) and the next stat starts a new one.
    Raises :class:`~statbus.plugins.ConfigError` on a bad setting.
    """
    global _configured
    config = build_config(
        run_id,
        results_dir,
        address,
        buffer_bytes=None if buffer_bytes == DEFAULT_BUFFER_BYTES else buffer_bytes,
        media_bytes=None if media_bytes == DEFAULT_MEDIA_BYTES else media_bytes,
        batch_interval=batch_interval,
        prompt_summaries=prompt_summaries,
        linger=linger,
        autostart=autostart,
        collector_args=collector_args,
        ray=ray,
    )
    with _lock:
        _configured = config
    for listener in list(_listeners):
        listener(config)


def current_config() -> TrainerConfig:
    """The configured settings, or the environment's; never raises (bad env → defaults, logged)."""
    global _configured
    with _lock:
        if _configured is not None:
            return _configured
        try:
            _configured = build_config()
        except ConfigError as exc:
            logger.error("statbus: bad environment settings (%s); using the defaults", exc)
            _configured = build_config(environ={})
        return _configured


def forget_configuration() -> None:
    """Undo ``configure()``: the next client reads the environment again (tests, embedding)."""
    global _configured
    with _lock:
        _configured = None


def reset_for_fork() -> None:
    """In a forked child the lock may have been held by a parent thread: replace it."""
    global _lock
    _lock = threading.Lock()
