"""Is the run folder a collector opened still the one its path names?

``rm -rf results`` under a live collector leaves it writing into deleted files; a folder
moved away and a new one made in its place leaves it writing into the old one.  Either
way what it takes in from then on is lost to the user, and trainers of a new training of
the run would join it (its sockets are named by the run folder's path).  So the collector
holds the folders it opened — the run folder, its ``statbus/`` folder and the journal —
open, and asks, from its tick and before every ack, whether each is still there
(a deleted folder has no links left) and is still what its path names (``st_dev``,
``st_ino``).  Both questions are needed: a file system soon gives a deleted folder's
inode number to a new one, so the numbers alone would take a folder deleted and made
again for the same one; and a folder moved away still has its links.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable, List, Optional, Tuple

from ...layout import RunLayout

logger = logging.getLogger(__name__)

_GONE = (errno.ENOENT, errno.ENOTDIR)


class FolderWatch:
    """The folders of one run, held open; :meth:`lost` says whether any of them has gone since."""

    def __init__(self, layout: RunLayout, stat: Callable[[str], os.stat_result] = os.stat) -> None:
        self._stat = stat
        self._folders: List[Tuple[str, str, int]] = []
        self._unsure: Optional[str] = None
        try:
            for what, path in (("run folder", layout.run_dir), ("statbus folder", layout.statbus_dir),
                               ("journal folder", layout.journal_dir)):
                self._folders.append((what, path, os.open(path, os.O_RDONLY | os.O_DIRECTORY)))
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        for _, _, fd in self._folders:
            os.close(fd)
        self._folders = []

    def lost(self, quick: bool = False) -> Optional[str]:
        """Why the run's folders are no longer this collector's (deleted, moved, replaced), or None.

        ``quick`` looks at the journal folder alone (half the system calls; what is
        journaled is what an ack promises, and any change above it changes what the
        journal's path names too) and at the others only to say which folder went.  A
        folder that cannot be looked at (a permission taken away, an I/O error) is not
        taken for lost: that is said once, and asked again at the next call.
        """
        if quick and self._folders and self._why(*self._folders[-1]) is None:
            return None
        for folder in self._folders:
            why = self._why(*folder)
            if why is not None:
                return why
        return None

    def _why(self, what: str, path: str, fd: int) -> Optional[str]:
        held = os.fstat(fd)
        try:
            named: Optional[os.stat_result] = self._stat(path)
        except OSError as exc:
            if exc.errno not in _GONE:
                if self._unsure != path:
                    self._unsure = path
                    logger.warning("cannot tell whether the %s %s is still this collector's: %s", what, path, exc)
                return None
            named = None
        else:
            if self._unsure == path:
                self._unsure = None  # can be looked at again: a later failure is said again
        if held.st_nlink == 0:
            return f"its {what} {path} was deleted" + ("" if named is None else " and made again")
        if named is None:
            return f"its {what} {path} was moved away"
        if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            return f"its {what} {path} was replaced by another folder"
        return None
