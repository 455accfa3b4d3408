"""The trainer API: ML-Agents' ``StatsReporter`` calls, sent to the collector.

Each call validates its arguments (bad input raises ``TypeError``/``ValueError``
naming the key, at the call) and hands its data to the process client:
``add_stat`` appends to the key's current entry (without a lock: see :mod:`.handoff`),
the other calls queue one event (see :mod:`.handoff`); nothing else ever raises
into training or blocks it.

Accepted values: ``int``, ``float``, ``bool`` (it is an ``int`` in Python) and
anything ``float()`` converts that is not text (numpy scalars, 0-d tensors);
refused: ``str``, ``bytes``, ``None``, and what ``float()`` refuses.  NaN and
infinities are passed through, as ML-Agents does.  Steps are non-negative
integers (``bool`` and ``float`` refused).  Property values are made
msgpack-safe: unknown objects become ``str(obj)``, over-long strings are cut.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from enum import Enum
from typing import Any, Dict, List, Optional, Tuple

import msgpack

from ...plugins.errors import RecordError
from ...plugins.media import MAX_MEDIA_BYTES, Media, decode_media
from ...plugins.records import MAX_NAME_LENGTH, MediaRecord
from ...plugins.stats import StatsAggregationMethod, StatsPropertyType
from ..wire import MAX_FRAME_BYTES, MAX_MAP_ENTRIES, MAX_NESTING, MAX_RECORDS_PER_FRAME, MAX_STRING_BYTES
from . import config as trainer_config
from .clock import MONOTONIC, Clock
from .framing import MediaEvent, PropertyEvent, SetStatEvent, WriteEvent
from .handoff import ENTRY_VALUES
from .sender import Client
from .spool import spool_unacked

logger = logging.getLogger(__name__)

MAX_PROPERTY_BYTES = 1 << 20
"""Largest encoded property value accepted (a frame holds at most 8 MiB)."""
MAX_CACHED_KEYS = 4096
"""Keys per reporter whose checked ``(category, key)`` is kept for the next ``add_stat``."""
_MAX_STEP = 2**63
_AVERAGE = StatsAggregationMethod.AVERAGE
_AGGREGATIONS = {m.value: m for m in StatsAggregationMethod}
_PROPERTY_TYPES = {p.value: p for p in StatsPropertyType}


# --- validation (the slow paths; the fast ones are inline in the methods) ---

def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"statbus: {what} must be a str, got {type(name).__name__} ({name!r:.80})")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"statbus: {what} {name!r:.80} must have 1 to {MAX_NAME_LENGTH} characters")
    return name


def _to_float(key: str, value: Any) -> float:
    if value is None or isinstance(value, (str, bytes, bytearray, memoryview)):
        raise TypeError(f"statbus: value of stat {key!r} must be a number, got {type(value).__name__} {value!r:.80}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"statbus: value of stat {key!r} must be a number, got {type(value).__name__}: {exc}") from None


def _to_aggregation(key: str, aggregation: Any) -> StatsAggregationMethod:
    # An enum of the same name and values (mlagents' own, when installed) is accepted too.
    if isinstance(aggregation, Enum) and type(aggregation).__name__ == "StatsAggregationMethod":
        found = _AGGREGATIONS.get(aggregation.value)
        if found is not None and found.name == aggregation.name:
            return found
    raise ValueError(
        f"statbus: unknown aggregation {aggregation!r} for stat {key!r}; "
        f"use StatsAggregationMethod.{{{', '.join(m.name for m in StatsAggregationMethod)}}}"
    )


def _to_step(category: str, step: Any) -> int:
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"statbus: step of write_stats({category!r}) must be an int, got {type(step).__name__}")
    step = step.__index__()
    if not 0 <= step < _MAX_STEP:
        raise ValueError(f"statbus: step of write_stats({category!r}) must be >= 0 and < 2**63, got {step}")
    return step


def _to_property_type(property_type: Any) -> StatsPropertyType:
    if isinstance(property_type, Enum) and type(property_type).__name__ == "StatsPropertyType":
        found = _PROPERTY_TYPES.get(property_type.value)
        if found is not None:
            return found
    raise ValueError(f"statbus: unknown property type {property_type!r}; use StatsPropertyType.*")


def _cut(text: str) -> str:
    if len(text) * 4 <= MAX_STRING_BYTES:
        return text
    return text.encode("utf-8")[: MAX_STRING_BYTES - 4].decode("utf-8", "ignore")


def _text(value: Any) -> str:
    try:
        return _cut(str(value))
    except Exception:  # noqa: BLE001 — a broken __str__ must not raise into training
        return f"<{type(value).__name__}>"


def plain_value(value: Any, depth: int = 0) -> Any:
    """A msgpack-safe copy the collector's limits accept: unknown objects become ``str``."""
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if depth >= MAX_NESTING - 1:
        return _text(value)
    if isinstance(value, Mapping):
        if len(value) > MAX_MAP_ENTRIES:
            raise ValueError(f"statbus: a property map has {len(value)} entries, at most {MAX_MAP_ENTRIES} allowed")
        return {_text(k): plain_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        if len(value) > MAX_RECORDS_PER_FRAME:
            raise ValueError(f"statbus: a property list has {len(value)} items, at most {MAX_RECORDS_PER_FRAME}")
        return [plain_value(v, depth + 1) for v in value]
    ndim = getattr(value, "ndim", None)  # numpy scalars and arrays
    if type(ndim) is int:
        try:
            return plain_value(value.item() if ndim == 0 else value.tolist(), depth + 1)
        except Exception:  # noqa: BLE001 — fall back to its text
            pass
    return _text(value)


# --- the process's client ---------------------------------------------------

_client: Optional[Client] = None
_clock: Clock = MONOTONIC
"""The clock the process's client is built with (:mod:`.clock`; tests put a fake one here)."""
_lock = threading.Lock()
_exiting = False
_failed_at = -1e9
_orphans: List[Client] = []  # a forked child keeps its parent's client, untouched, forever
_retired: Dict[str, int] = collections.Counter()
_CUMULATIVE = ("values_recorded", "values_dropped", "frames_sent", "frames_resent", "frames_acked",
               "frames_dropped", "errors", "events_dropped", "collector_starts", "collector_start_failures",
               "frames_spilled", "media_recorded", "media_recorded_bytes", "media_dropped", "media_dropped_bytes")


def _get_client() -> Optional[Client]:
    """This process's client, started on first use; None at exit or while starting fails."""
    global _client, _failed_at
    with _lock:
        if _client is not None:
            return _client
        if _exiting or time.monotonic() - _failed_at < 10.0:
            return None
        try:
            _client = Client(trainer_config.current_config(), _clock)
        except Exception as exc:  # noqa: BLE001 — e.g. no new threads at interpreter shutdown
            _failed_at = time.monotonic()
            logger.error("statbus: cannot start the trainer client: %r; stats are dropped", exc)
            return None
        _close_at_multiprocessing_exit()
        return _client


def _close_at_multiprocessing_exit() -> None:
    """In a multiprocessing child, close the client when its process ends, not only at exit.

    A child started with ``fork`` (and ``forkserver``) ends with ``os._exit``
    once its target returns: ``atexit`` never runs there, but multiprocessing
    runs its own finalizers just before (``util._exit_function`` in
    ``BaseProcess._bootstrap``).  Registered at the child's first stat: the
    registry of finalizers is emptied when a child starts, so an earlier
    registration would be gone.  multiprocessing is only looked at if the
    program imported it.
    """
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing import util

    util.Finalize(None, _at_exit, exitpriority=100)


def flush(timeout: float = 10.0) -> bool:
    """True once everything recorded before this call is acked by the collector, False at timeout."""
    client = _client
    if client is None:
        return True
    return client.flush(timeout)


def shutdown(timeout: Optional[float] = None) -> None:
    """Send what is pending and a goodbye, wait for acks, close.

    The wait for acks lasts while the collector shows life, up to ``timeout`` (default: the
    linger) without a sign of it, and a minute in all (``Client.close``).

    A stat recorded afterwards starts a new client (with a new sender identity).
    """
    global _client
    with _lock:
        client, _client = _client, None
    if client is None:
        return
    linger = client.config.linger if timeout is None else max(0.0, timeout)
    if not client.close(linger):
        _report_undelivered(client, client.exit_wait_limit)
    snapshot = client.snapshot()
    for key in _CUMULATIVE:
        _retired[key] += snapshot[key]
    _retired["events_dropped"] += snapshot["values_queued"]  # left behind by a sender that died


def _report_undelivered(client: Client, linger: float) -> None:
    """The one line a closing client says when the collector did not take everything: where it waits (the
    spool), or, only if the spool cannot be written, that it is lost."""
    try:
        line = spool_unacked(client, linger)
    except Exception as exc:  # noqa: BLE001 — an exit must not turn into a traceback
        line = f"statbus: values recorded by this process may be lost: handing them to the spool failed: {exc!r}"
    if line:
        logger.warning("%s", line)


def client_counters() -> Dict[str, Any]:
    """Counters of this process: values recorded, frames sent/acked/resent, drops, errors, buffer;
    media values recorded and dropped (``media_dropped``, ``media_dropped_bytes``: past the media
    bound, or past the spool's at exit), raw media bytes held unacknowledged (``media_held_bytes``)."""
    client = _client
    snap: Dict[str, Any] = client.snapshot() if client is not None else {}
    for key, value in _retired.items():
        snap[key] = snap.get(key, 0) + value
    return snap


class StatsReporter:
    """ML-Agents' ``StatsReporter(category)``; every process's values of a category meet at the collector."""

    __slots__ = ("category", "_idents")

    def __init__(self, category: str) -> None:
        self.category = _check_name(category, "category")
        self._idents: Dict[str, Tuple[str, str]] = {}
        """key → ``(category, key)``: a key is checked once, and no tuple is built per value."""

    def add_stat(self, key: str, value: float, aggregation: StatsAggregationMethod = _AVERAGE) -> None:
        """Record one value of ``key``; the collector reduces the period's values by ``aggregation``."""
        ident = self._idents.get(key) if type(key) is str else None
        if ident is None:
            ident = self._new_ident(key)
        if type(value) is not float:
            value = float(value) if type(value) is int else _to_float(key, value)
        if type(aggregation) is not StatsAggregationMethod:
            aggregation = _to_aggregation(key, aggregation)
        client = _client or _get_client()
        if client is None:
            _retired["events_dropped"] += 1
            return
        # The per-value path takes no lock: a dict get and a list append are each atomic
        # under the GIL.  If the entries were sealed meanwhile, the sender may have
        # copied this list before the append: settle_late re-adds what it missed.
        current = client.current
        values = current.get(ident)
        if values is not None and values[0] is aggregation and len(values) <= ENTRY_VALUES:
            values.append(value)
            if client.current is not current:
                client.settle_late(current, ident)
            return
        lock = client.lock
        lock.acquire()
        try:
            wake = client.open_entry_locked(ident, value, aggregation)
        finally:
            lock.release()
        if wake:
            client.wake()

    def _new_ident(self, key: Any) -> Tuple[str, str]:
        ident = (self.category, _check_name(key, "stat key"))
        if len(self._idents) < MAX_CACHED_KEYS:  # a trainer inventing keys without end gets no cache
            self._idents[key] = ident
        return ident

    def set_stat(self, key: str, value: float) -> None:
        """Replace the period's values of ``key`` by ``[value]``, aggregated MOST_RECENT."""
        if type(key) is not str or not key or len(key) > MAX_NAME_LENGTH:
            _check_name(key, "stat key")
        if type(value) is not float:
            value = float(value) if type(value) is int else _to_float(key, value)
        client = _client or _get_client()
        if client is None:
            _retired["events_dropped"] += 1
        else:
            client.add_event(SetStatEvent(self.category, key, value), wake=False)

    def add_property(self, property_type: StatsPropertyType, value: Any) -> None:
        """Announce a run property (hyperparameters, ...) to every writer."""
        if type(property_type) is not StatsPropertyType:
            property_type = _to_property_type(property_type)
        plain = plain_value(value)
        nbytes = len(msgpack.packb(plain, use_bin_type=True))
        if nbytes > MAX_PROPERTY_BYTES:
            raise ValueError(f"statbus: property {property_type.value!r} is {nbytes} bytes, at most "
                             f"{MAX_PROPERTY_BYTES} allowed")
        client = _client or _get_client()
        if client is None:
            _retired["events_dropped"] += 1
        else:
            client.add_event(PropertyEvent(self.category, property_type.value, plain, nbytes), wake=True)

    def write_stats(self, step: int) -> None:
        """Close this category's summary period (across all processes) at ``step``."""
        if type(step) is not int or step < 0 or step >= _MAX_STEP:
            step = _to_step(self.category, step)
        client = _client or _get_client()
        if client is None:
            _retired["events_dropped"] += 1
        else:
            client.add_event(WriteEvent(self.category, step), wake=client.config.prompt_summaries)


def write_period(category: str, entries: Dict[str, list], step: Optional[int]) -> None:
    """Queue ``category``'s values ``{key: [aggregation, v1, ...]}`` (checked by the caller, handed
    over) and then, unless ``step`` is None, its ``write_stats(step)``: at once, without waking the sender."""
    client = _client or _get_client()
    if client is None:
        _retired["events_dropped"] += sum(map(len, entries.values())) - len(entries) + (step is not None)
        return
    marker = None if step is None else WriteEvent(category, step)
    client.add_period({(category, key): entry for key, entry in entries.items()}, marker)


MAX_MEDIA_OPTION_BYTES = MAX_FRAME_BYTES // 2
"""Largest packed size of a media value's options besides its arrays (box labels, hparams, ...)."""


def _check_option(tag: str, value: Any, depth: int = 0) -> None:
    """What the collector accepts in a media value's options (wire.py's limits), checked at the call:
    a frame it refused would be consumed as empty, the value lost without a word to the caller."""
    if depth > MAX_NESTING:
        raise ValueError(f"statbus: options of media {tag!r} are nested deeper than {MAX_NESTING}")
    if isinstance(value, dict):
        if len(value) > MAX_MAP_ENTRIES:
            raise ValueError(f"statbus: a map in the options of media {tag!r} has {len(value)} entries, "
                             f"at most {MAX_MAP_ENTRIES}")
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"statbus: option keys of media {tag!r} must be str, got {type(key).__name__}")
            _check_option(tag, key, depth + 1)
            _check_option(tag, item, depth + 1)
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_RECORDS_PER_FRAME:
            raise ValueError(f"statbus: a list in the options of media {tag!r} has {len(value)} items, "
                             f"at most {MAX_RECORDS_PER_FRAME}")
        for item in value:
            _check_option(tag, item, depth + 1)
    elif isinstance(value, str):
        if len(value) * 4 > MAX_STRING_BYTES and len(value.encode("utf-8")) > MAX_STRING_BYTES:
            raise ValueError(f"statbus: a string in the options of media {tag!r} is longer than "
                             f"{MAX_STRING_BYTES} bytes")
    elif not (value is None or isinstance(value, (bool, int, float, bytes))):
        raise TypeError(f"statbus: options of media {tag!r} hold a {type(value).__name__}; plain values only "
                        "(None, bool, int, float, str, bytes, lists and str-keyed maps of them)")


def add_media(category: str, tag: str, media: Media, step: int) -> bool:
    """Hand one media value (raw, not encoded) over to the plugins that take media (``add_media``).

    Checked at the call (``TypeError``/``ValueError`` naming the tag; more than
    :data:`~statbus.plugins.media.MAX_MEDIA_BYTES`, 64 MiB, of raw data: ``ValueError``
    naming the size); then queued without waiting.  False when it is dropped instead:
    media queued and not yet acknowledged by the collector would pass the trainer's media
    bound (``configure(media_bytes=...)``, 256 MiB by default), or no client runs; counted in
    :func:`client_counters` (``media_dropped``, ``media_dropped_bytes``).  ``category`` is the
    public one, as the plugins get it.
    """
    _check_name(category, "category")
    _check_name(tag, "media tag")
    if not isinstance(media, Media):
        raise TypeError(f"statbus: media {tag!r} must be a statbus.plugins.media.Media, got {type(media).__name__}")
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"statbus: step of media {tag!r} must be an int, got {type(step).__name__}")
    step = step.__index__()
    if not 0 <= step < _MAX_STEP:
        raise ValueError(f"statbus: step of media {tag!r} must be >= 0 and < 2**63, got {step}")
    try:
        nbytes = media.nbytes
    except (TypeError, KeyError, AttributeError) as exc:
        raise TypeError(f"statbus: media {tag!r} has a malformed array option: {exc!r}") from None
    if nbytes > MAX_MEDIA_BYTES:
        raise ValueError(f"statbus: media {tag!r} is {nbytes} bytes ({nbytes / 2**20:.1f} MiB) of raw data, "
                         f"at most {MAX_MEDIA_BYTES} ({MAX_MEDIA_BYTES >> 20} MiB) allowed")
    try:
        media = decode_media(media.to_msgpack())
    except RecordError as exc:
        raise ValueError(f"statbus: media {tag!r}: {exc}") from None
    arrays = {k for k, v in media.options.items() if isinstance(v, dict) and v.keys() == {"shape", "dtype", "data"}}
    rest = {k: v for k, v in media.options.items() if k not in arrays}
    _check_option(tag, rest)
    size = len(msgpack.packb(rest, use_bin_type=True))
    if size > MAX_MEDIA_OPTION_BYTES:
        raise ValueError(f"statbus: the options of media {tag!r} are {size} bytes packed, at most "
                         f"{MAX_MEDIA_OPTION_BYTES} allowed")
    client = _client or _get_client()
    if client is None:
        _retired["media_dropped"] += 1
        _retired["media_dropped_bytes"] += nbytes
        return False
    return client.add_media(MediaEvent(MediaRecord(category, tag, step, media), nbytes))


# --- process life: configure, exit, fork ------------------------------------

def _on_configure(config: trainer_config.TrainerConfig) -> None:
    client = _client
    if client is not None and client.config != config:
        shutdown()


def _at_exit() -> None:
    global _exiting
    _exiting = True
    try:
        shutdown()
    except Exception as exc:  # noqa: BLE001 — never fail the interpreter's exit
        logger.error("statbus: error while closing at exit: %r", exc)


def _before_fork() -> None:
    # No thread of ours may run at a fork (see Client.pause); the parent resumes after it.
    client = _client
    if client is not None:
        client.pause()


def _after_fork_in_parent() -> None:
    client = _client
    if client is not None:
        client.resume()


def _after_fork_in_child() -> None:
    # The child starts with no client: the parent's socket, context and thread are
    # the parent's, and so is its pending data.  A new client starts lazily.
    global _client, _lock, _retired, _failed_at
    if _client is not None:
        _client.forget_in_child()
        _orphans.append(_client)
    _client = None
    _lock = threading.Lock()
    _retired = collections.Counter()
    _failed_at = -1e9
    trainer_config.reset_for_fork()


trainer_config.on_configure(_on_configure)
atexit.register(_at_exit)
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
