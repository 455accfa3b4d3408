"""A test's ZeroMQ context must end with every socket closed: a leaked socket fails the test.

``Context.term()`` returns only once every socket of the context is closed, so a
socket left open keeps it waiting; it runs in a thread with a deadline (the way
pyzmq's own test suite ends its contexts), and past the deadline the test fails.
``destroy(linger=0)`` would close the leak silently instead.
"""

from __future__ import annotations

import threading

import pytest
import zmq

TERM_TIMEOUT = 10.0
"""Seconds ``term()`` may take before the context counts as leaking a socket."""


def term_or_fail(context: zmq.Context, timeout: float = TERM_TIMEOUT) -> None:
    """Terminate ``context``; fail the running test if a socket of it is still open after ``timeout``."""
    thread = threading.Thread(target=context.term, name="zmq-term", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        # Close what leaked, so that term() in the thread (and the rest of the run) can end:
        # closing sockets while another thread waits in term() is ZeroMQ's own shutdown
        # pattern; destroy() would call term() a second time.  The context's set of open
        # sockets is what destroy() itself walks.
        for socket in list(getattr(context, "_sockets", None) or ()):
            socket.close(linger=0)
        thread.join(timeout)
        pytest.fail(f"a socket of the test's zmq context was left open (term() still waiting after {timeout:g} s)",
                    pytrace=False)
