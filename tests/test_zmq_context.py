"""The shared ``context`` fixture's teardown: a leaked socket fails, closed sockets pass."""

from __future__ import annotations

import pytest
import zmq

from zmq_context import term_or_fail


def test_a_leaked_socket_fails_the_test() -> None:
    ctx = zmq.Context()
    leaked = ctx.socket(zmq.DEALER)
    leaked.setsockopt(zmq.LINGER, 0)
    with pytest.raises(pytest.fail.Exception, match="left open"):
        term_or_fail(ctx, timeout=0.5)
    assert leaked.closed and ctx.closed


def test_closed_sockets_end_quietly() -> None:
    ctx = zmq.Context()
    with ctx.socket(zmq.ROUTER) as router, ctx.socket(zmq.DEALER) as dealer:
        for sock in (router, dealer):
            sock.setsockopt(zmq.LINGER, 0)
        router.bind("inproc://term-test")
        dealer.connect("inproc://term-test")
    term_or_fail(ctx, timeout=5.0)
    assert ctx.closed
