"""The shared ``context`` fixture: its teardown fails on a leaked socket, and every test takes its context from it."""

from __future__ import annotations

import os

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


OWN_CONTEXTS = {
    "conftest.py": "the fixture itself",
    "test_zmq_context.py": "tests of the fixture's teardown",
    "ackpeer.py": "a peer started and stopped within a test; stop() ends it with term_or_fail",
    "pipeline/ray/test_ray_cluster.py": "a Ray actor's, in another process; its term() has a deadline",
    "pipeline/security/test_security.py": "term() while an authenticator runs is what that test tests",
}


def test_tests_take_their_context_from_the_fixture() -> None:
    # A context of a test's own is terminated by nobody who fails the test on a leak: a socket
    # left open then hangs the run until its timeout instead of failing the test that leaked it.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    found = set()
    for directory, _, files in os.walk(tests_dir):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as handle:
                    if "zmq.Context()" in handle.read():
                        found.add(os.path.relpath(path, tests_dir))
    assert found - set(OWN_CONTEXTS) == set(), "use the context fixture of tests/conftest.py"
    assert set(OWN_CONTEXTS) <= found, "a listed exception is gone: take it off the list"
