"""The collector takes in what trainers left in the run's spool (format: :mod:`..spool_file`).

A spool file holds frames a trainer could not get acknowledged before it exited.
Its frames go through the ordinary intake (the loop's ``take`` callback: delivery
rule, journal, aggregation), so a frame whose ``(sender, seq)`` the journal already
holds is a duplicate and dropped; the journal is committed and synced, and only
then is the file deleted.  A collector that dies in between finds the file again
and drops its frames as duplicates: each frame is taken in exactly once.

The loop calls :meth:`SpoolIntake.take` from its tick: at its first tick (what
waited for the run's next collector) and then every :data:`SCAN_EVERY` seconds
(what a trainer left while this collector did not answer it in time).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict

from .. import spool_file
from .intake import Verdict

logger = logging.getLogger(__name__)

SCAN_EVERY = 1.0
"""Seconds between two looks at the spool directory (a listing of a mostly empty directory)."""
TAKE_SECONDS = 0.2
"""Files are taken in one after another until this much of a tick is spent; the rest wait for the next
tick, so a big spool does not keep the loop from trainers, workers and control requests."""


class SpoolIntake:
    def __init__(self, spool_dir: str, clock: Callable[[], float]) -> None:
        self.dir = spool_dir
        self._clock = clock
        self._next_scan = float("-inf")
        self.waiting = False
        """Files were left at the last look (an on-demand collector does not idle out then)."""
        self.taken_files = 0
        self.taken_frames = 0
        self.duplicates = 0
        self.set_aside = 0

    def due(self, now: float) -> bool:
        return now >= self._next_scan

    def take(self, take_frame: Callable[[bytes], Verdict], commit: Callable[[], None]) -> None:
        """Take in waiting files: each frame through ``take_frame`` (intake and journal), then ``commit``
        (commit and sync the journal; it raises when the journal cannot be written, and the file stays)."""
        start = self._clock()
        self._next_scan = start + SCAN_EVERY
        files = spool_file.waiting(self.dir)
        for index, (path, _) in enumerate(files):
            if self._clock() - start >= TAKE_SECONDS:
                self._next_scan = start  # the next tick goes on
                break
            try:
                with open(path, "rb") as handle:
                    spooled = spool_file.decode(handle.read())
            except FileNotFoundError:
                continue
            except (OSError, spool_file.SpoolError) as exc:
                self._put_aside(path, f"it cannot be read: {exc}")
                continue
            verdicts = [take_frame(frame) for frame in spooled.frames]
            commit()
            self.duplicates += verdicts.count(Verdict.DUPLICATE)
            accepted = verdicts.count(Verdict.ACCEPT)
            self.taken_frames += accepted
            if Verdict.GAP in verdicts or Verdict.REJECT in verdicts:
                self._put_aside(path, f"{verdicts.count(Verdict.GAP)} of its frames do not follow what the "
                                      f"collector has of sender {spooled.sender} and "
                                      f"{verdicts.count(Verdict.REJECT)} were rejected ({accepted} taken in)")
                continue
            os.unlink(path)
            self.taken_files += 1
            logger.info("spool: took in %s (%s frames of sender %s, %s already in the journal)",
                        os.path.basename(path), accepted, spooled.sender, len(verdicts) - accepted)
        else:
            index = len(files)
        self.waiting = index < len(files)

    def _put_aside(self, path: str, why: str) -> None:
        self.set_aside += 1
        try:
            os.replace(path, path + spool_file.SET_ASIDE_SUFFIX)
        except OSError as exc:
            why += f"; renaming it failed too ({exc})"
        logger.warning("spool: %s set aside (kept as %s%s, not read again): %s",
                       os.path.basename(path), os.path.basename(path), spool_file.SET_ASIDE_SUFFIX, why)

    def status(self) -> Dict[str, Any]:
        """The ``spool`` section of ``statbus status``."""
        return {**spool_file.summary(self.dir), "taken_files": self.taken_files, "taken_frames": self.taken_frames,
                "duplicates": self.duplicates}
