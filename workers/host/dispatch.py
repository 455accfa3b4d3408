"""Writer dispatch: one fetched entry handed to every writer of the plugin.

Most writers only care about summaries; what each writer overrides is found
once, so that delivery skips the per-value calls (and the batch decoding) that
nobody needs.  A writer call that fails on a full disk is retried in place until
space is back (:mod:`.disk_wait` says why here); any other raise becomes a
:class:`WriterCrash`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple

from ...plugins.delivery import set_journal_position
from ...plugins.errors import StatbusError, disk_full_error
from ...plugins.records import (STEPPED_MARK, BatchRecord, MediaRecord, StatRecord, SummaryRecord, decode_batch,
                                public_category, public_values, unpack_summary, unpack_values)
from ..fetch_protocol import EntryKind, FetchedEntry
from ..statepage import StatePage
from .disk_wait import DiskWait, StoppedWaiting

logger = logging.getLogger(__name__)

_DEFAULT_WRITER_CLASSES = {("statbus.plugins.stats", "StatsWriter"), ("mlagents.trainers.stats", "StatsWriter")}


def overrides(writer: Any, method: str) -> bool:
    """True when ``writer`` has its own ``method``, not StatsWriter's no-op (or none at all).

    Works for writers built on statbus's and on real mlagents' ``StatsWriter``.
    """
    if method in getattr(writer, "__dict__", {}):
        return True
    for klass in type(writer).__mro__:
        if method in vars(klass):
            return (klass.__module__, klass.__qualname__) not in _DEFAULT_WRITER_CLASSES
    return False


_SUMMARY = EntryKind.SUMMARY  # an enum attribute look-up per entry costs ~0.1 µs


def _describe(writer: Any) -> str:
    return type(getattr(writer, "_statbus_wrapped", writer)).__qualname__


class WriterCrash(StatbusError):
    pass


class Writers:
    """The plugin's writers, with what each needs precomputed so delivery stays lean."""

    def __init__(self, writers: Sequence[Any], page: StatePage, disk_wait: Optional[DiskWait] = None) -> None:
        self.writers = list(writers)
        self._page = page
        self.disk_wait = disk_wait or DiskWait(page, lambda: False, "?")
        self._call: Tuple[Any, ...] = ("",)
        """What the main thread is in now: a message, or (writer, category, step) of a
        write_stats — formatted only when asked, not once per summary and writer."""
        # Most writers only care about summaries; skipping the per-value
        # on_add_stat calls (and the batch decoding when nobody needs it) is
        # where a worker's throughput comes from.
        self._add_stat = [w.on_add_stat for w in self.writers if overrides(w, "on_add_stat")]
        self._add_property = [w.add_property for w in self.writers if overrides(w, "add_property")]
        # Only statbus-aware writers define add_media (ML-Agents' StatsWriter has none): the others never see media.
        self._add_media = [w.add_media for w in self.writers if overrides(w, "add_media")]
        self._flush = [(w, w.flush) for w in self.writers if callable(getattr(w, "flush", None))]
        self._close = [(w, w.close) for w in self.writers if callable(getattr(w, "close", None))]
        self.needs_batches = bool(self._add_stat or self._add_property or self._add_media)

    @property
    def current_call(self) -> str:
        """What the main thread is in now, for the call-timeout and crash messages."""
        call = self._call
        if len(call) == 1:
            return call[0]
        writer, category, step = call
        return f"{_describe(writer)}.write_stats({category!r}, step={step})"

    def deliver(self, entry: FetchedEntry) -> bool:
        """Deliver one entry to every writer; True if it was a summary."""
        set_journal_position(entry.position)  # what a writer records to never write the entry twice
        if entry.kind == _SUMMARY:
            self._deliver_summary(unpack_summary(entry.data))
            return True
        if self.needs_batches:
            # Writers without on_add_stat only need the batch's properties: its stat
            # records (nearly all of it) are then neither validated nor unpacked.
            self._deliver_batch(decode_batch(entry.data, stats=bool(self._add_stat)))
        return False

    def _deliver_summary(self, record: SummaryRecord) -> None:
        values = record.summaries()
        page = self._page
        category, step = record.category, record.step
        for writer in self.writers:
            self._call = (writer, category, step)
            page.busy_since = time.time()
            try:
                writer.write_stats(category, values, step)
                continue
            except (Exception, SystemExit) as exc:
                failure = exc
            # Out of the except block: what the retries raise must not chain to this failure.
            self._failed(failure, lambda: writer.write_stats(category, values, step))  # noqa: B023 — called now
        page.busy_since = 0.0

    def _failed(self, exc: BaseException, again: Callable[[], Any]) -> None:
        """A writer call raised ``exc``: wait out a full disk and call ``again``, else crash."""
        full = disk_full_error(exc)
        if full is None:
            raise WriterCrash(f"{self.current_call} raised {exc!r}") from exc
        try:
            self.disk_wait.retry(full, self.current_call, again)
        except StoppedWaiting:
            raise
        except (Exception, SystemExit) as later:
            raise WriterCrash(f"{self.current_call} raised {later!r}") from later

    def _deliver_batch(self, records: List[BatchRecord]) -> None:
        # One busy_since for the whole batch: per-value bookkeeping would cost
        # more than the on_add_stat calls themselves.
        self._call = ("on_add_stat/add_property/add_media of a batch",)
        self._page.busy_since = time.time()
        add_stat = self._add_stat
        method: Optional[Callable[..., Any]] = None
        try:
            for record in records:
                if type(record) is StatRecord:
                    if not add_stat:
                        continue
                    category, key, aggregation = record.category, record.key, record.aggregation
                    values = unpack_values(record.packed)
                    if category[0] == STEPPED_MARK:
                        category, values = public_category(category), public_values(values)
                    # A try per call costs nothing until one raises (Python >= 3.11), and
                    # it retries exactly the call that hit a full disk, no other.
                    if len(add_stat) == 1:
                        method = add_stat[0]
                        for value in values:
                            try:
                                method(category, key, value, aggregation)
                                continue
                            except (Exception, SystemExit) as exc:
                                failure = exc
                            self._wait_or_raise(failure, method, (category, key, value, aggregation))
                    else:
                        for value in values:
                            for method in add_stat:
                                try:
                                    method(category, key, value, aggregation)
                                    continue
                                except (Exception, SystemExit) as exc:
                                    failure = exc
                                self._wait_or_raise(failure, method, (category, key, value, aggregation))
                else:
                    if type(record) is MediaRecord:
                        methods, args = self._add_media, (record.category, record.tag, record.media, record.step)
                    else:
                        methods, args = self._add_property, (record.category, record.property_type, record.value)
                    for method in methods:
                        try:
                            method(*args)
                            continue
                        except (Exception, SystemExit) as exc:
                            failure = exc
                        self._wait_or_raise(failure, method, args)
        except StoppedWaiting:
            raise
        except (Exception, SystemExit) as exc:
            owner = getattr(method, "__self__", None)
            name = getattr(method, "__name__", "?")
            raise WriterCrash(f"{_describe(owner)}.{name} raised {exc!r}") from exc
        self._page.busy_since = 0.0

    def _wait_or_raise(self, exc: BaseException, method: Callable[..., Any], args: Tuple[Any, ...]) -> None:
        full = disk_full_error(exc)
        if full is None:
            raise exc
        owner = getattr(method, "__self__", None)
        self.disk_wait.retry(full, f"{_describe(owner)}.{getattr(method, '__name__', '?')}", lambda: method(*args))

    def flush(self) -> None:
        for writer, flush in self._flush:
            self._call = (f"{_describe(writer)}.flush()",)
            self._page.busy_since = time.time()
            try:
                flush()
                continue
            except (Exception, SystemExit) as exc:
                failure = exc
            self._failed(failure, flush)
        self._page.busy_since = 0.0

    def close(self) -> None:
        """Close every writer; a failing close is logged (everything was flushed and committed)."""
        for writer, close in self._close:
            try:
                close()
            except Exception:  # noqa: BLE001 — one writer's close must not skip the others'
                logger.exception("%s.close() raised", _describe(writer))
