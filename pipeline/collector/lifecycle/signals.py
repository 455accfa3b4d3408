"""The collector's stop signals: SIGTERM asks for a graceful stop, a second SIGTERM or SIGINT for one at once.

A mixin of :class:`..loop.Collector`: the handlers only set flags (``request_stop``); the loop acts on them.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Dict


class StopSignals:
    """Installs and restores the stop handlers; mixed into :class:`..loop.Collector`."""

    def _install_signals(self) -> Dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum, handler in ((signal.SIGTERM, self._on_sigterm), (signal.SIGINT, self._on_sigint)):
            previous[signum] = signal.signal(signum, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: Dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterms += 1
        self.request_stop(graceful=self._sigterms == 1)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.request_stop(graceful=False)
