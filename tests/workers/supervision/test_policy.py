"""Restart policy on a fake clock and a seeded rng: no processes, no sleeps."""

from __future__ import annotations

import random

import pytest

from statbus.plugins import ConfigError
from statbus.workers.supervision.policy import (
    Action,
    Backoff,
    PoisonStrikes,
    PolicyConfig,
    RestartBudget,
    RestartPolicy,
)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ZeroRandom(random.Random):
    """random() always 0: no jitter taken off, so delays are the bases."""

    def random(self) -> float:
        return 0.0


def test_backoff_doubles_from_half_a_second_to_the_cap() -> None:
    backoff = Backoff(PolicyConfig(), ZeroRandom())
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_survives_huge_attempt_counts() -> None:
    backoff = Backoff(PolicyConfig(), ZeroRandom())
    backoff.attempt = 10_000
    assert backoff.next_delay() == 30.0


def test_jitter_stays_within_bounds_and_varies() -> None:
    config = PolicyConfig(backoff_jitter=0.25)
    backoff = Backoff(config, random.Random(1234))
    seen = []
    for _ in range(200):
        backoff.attempt = 0
        delay = backoff.next_delay()
        assert 0.5 * 0.75 <= delay <= 0.5
        seen.append(delay)
    assert len(set(seen)) > 100, "jitter must actually vary the delay"
    backoff.attempt = 50
    for _ in range(100):
        delay = backoff.next_delay()
        assert 30.0 * 0.75 <= delay <= 30.0, "the cap is an upper bound even with jitter"


def test_jitter_is_reproducible_with_a_seed() -> None:
    a = Backoff(PolicyConfig(), random.Random(7))
    b = Backoff(PolicyConfig(), random.Random(7))
    assert [a.next_delay() for _ in range(8)] == [b.next_delay() for _ in range(8)]


def test_budget_window_slides() -> None:
    clock = FakeClock()
    budget = RestartBudget(PolicyConfig(max_restarts=3, window=60.0), clock)
    for _ in range(3):
        assert budget.try_spend()
        clock.advance(10)
    # t = 30: three restarts at 0, 10, 20 are in the window.
    assert not budget.try_spend()
    assert budget.used() == 3
    clock.advance(30)  # t = 60: the one at 0 is exactly a window old and leaves.
    assert budget.used() == 2
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.advance(1000)
    assert budget.used() == 0


def test_policy_fails_after_five_restarts_in_a_minute() -> None:
    clock = FakeClock()
    policy = RestartPolicy(PolicyConfig(), clock=clock, rng=ZeroRandom())
    delays = []
    for _ in range(5):
        policy.started(committed=0)
        clock.advance(1)
        verdict = policy.failed(reason="WRITER_CRASH", committed=0)
        assert verdict.action is Action.RESTART
        delays.append(verdict.delay)
        clock.advance(verdict.delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    policy.started(committed=0)
    verdict = policy.failed(reason="WRITER_CRASH", committed=0)
    assert verdict.action is Action.FAIL
    assert "budget" in verdict.reason and "WRITER_CRASH" in verdict.reason


def test_slow_crashes_never_spend_the_budget() -> None:
    clock = FakeClock()
    policy = RestartPolicy(PolicyConfig(), clock=clock, rng=ZeroRandom())
    for _ in range(50):
        policy.started(committed=0)
        clock.advance(20)  # up 20 s: healthy, backoff starts over
        verdict = policy.failed(reason="x", committed=0)
        assert verdict.action is Action.RESTART
        assert verdict.delay == 0.5


def test_progress_resets_backoff() -> None:
    clock = FakeClock()
    policy = RestartPolicy(PolicyConfig(max_restarts=100), clock=clock, rng=ZeroRandom())
    policy.started(committed=0)
    assert policy.failed(reason="x", committed=0).delay == 0.5
    policy.started(committed=0)
    assert policy.failed(reason="x", committed=0).delay == 1.0
    policy.started(committed=0)
    assert policy.failed(reason="x", committed=500).delay == 0.5, "the cursor moved: it was working"


def test_fatal_fails_at_once_without_spending_budget() -> None:
    clock = FakeClock()
    policy = RestartPolicy(PolicyConfig(), clock=clock)
    policy.started(committed=0)
    verdict = policy.failed(reason="IMPORT_FAILURE: boom", committed=0, fatal=True)
    assert verdict.action is Action.FAIL and verdict.reason == "IMPORT_FAILURE: boom"
    assert policy.budget.used() == 0


def test_explicit_reset_restores_the_budget() -> None:
    clock = FakeClock()
    policy = RestartPolicy(PolicyConfig(max_restarts=1), clock=clock, rng=ZeroRandom())
    assert policy.failed(reason="x", committed=0).action is Action.RESTART
    assert policy.failed(reason="x", committed=0).action is Action.FAIL
    policy.reset()
    verdict = policy.failed(reason="x", committed=0)
    assert verdict.action is Action.RESTART and verdict.delay == 0.5


def test_poison_after_three_consecutive_strikes_on_one_record() -> None:
    strikes = PoisonStrikes(PolicyConfig())
    assert strikes.failed(100) is None
    assert strikes.failed(100) is None
    assert strikes.failed(100) == 100
    # Counting starts over after a verdict.
    assert strikes.failed(100) is None


def test_poison_strikes_reset_on_other_record_or_none() -> None:
    strikes = PoisonStrikes(PolicyConfig())
    strikes.failed(100)
    strikes.failed(100)
    assert strikes.failed(200) is None, "a different record breaks the chain"
    assert strikes.failed(200) is None
    assert strikes.failed(None) is None, "a failure with nothing in flight breaks it too"
    assert strikes.failed(200) is None
    assert strikes.failed(-1) is None
    assert strikes.count == 0


def test_poison_strikes_reset_on_progress_past_the_record() -> None:
    strikes = PoisonStrikes(PolicyConfig())
    strikes.failed(100)
    strikes.failed(100)
    strikes.progressed(100)  # cursor at 100: record 100 not yet done
    assert strikes.count == 2
    strikes.progressed(150)  # past it: it got through
    assert strikes.failed(100) is None
    assert strikes.count == 1


def test_policy_reports_poison_with_the_restart() -> None:
    clock = FakeClock()
    policy = RestartPolicy(PolicyConfig(), clock=clock, rng=ZeroRandom())
    verdicts = [policy.failed(reason="SIGSEGV", committed=40, inflight=64) for _ in range(3)]
    assert [v.poison for v in verdicts] == [None, None, 64]
    assert all(v.action is Action.RESTART for v in verdicts)
    # Progress reported by the supervisor past the record clears pending strikes.
    policy.failed(reason="SIGSEGV", committed=40, inflight=80)
    policy.progressed(96)
    assert policy.failed(reason="SIGSEGV", committed=96, inflight=80).poison is None
    assert policy.strikes.count == 1 and policy.strikes.position == 80


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backoff_initial": 0},
        {"backoff_initial": 40.0},
        {"backoff_jitter": 1.0},
        {"max_restarts": -1},
        {"window": 0},
        {"poison_strikes": 0},
    ],
)
def test_bad_policy_config(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PolicyConfig(**kwargs)


def test_failures_after_progress_never_spend_the_budget() -> None:
    clock = FakeClock()
    policy = RestartPolicy(PolicyConfig(max_restarts=2), clock=clock, rng=ZeroRandom())
    committed = 0
    for _ in range(20):  # a flaky plugin: crashes fast, but each run gets further
        policy.started(committed)
        committed += 100
        clock.advance(0.1)
        verdict = policy.failed(reason="WRITER_CRASH", committed=committed)
        assert verdict.action is Action.RESTART and verdict.delay == 0.5
    assert policy.budget.used() == 0
    # The same plugin stuck at one place is flapping again.
    for _ in range(2):
        policy.started(committed)
        assert policy.failed(reason="x", committed=committed).action is Action.RESTART
    policy.started(committed)
    assert policy.failed(reason="x", committed=committed).action is Action.FAIL


def test_external_kills_restart_promptly_without_spending_anything() -> None:
    clock = FakeClock()
    policy = RestartPolicy(PolicyConfig(max_restarts=1), clock=clock, rng=ZeroRandom())
    policy.failed(reason="x", committed=0, inflight=300)
    for _ in range(50):  # kill -9 from outside, over and over, before any progress
        policy.started(0)
        verdict = policy.failed(reason="killed by SIGKILL", committed=0, inflight=300, external=True)
        assert verdict.action is Action.RESTART and verdict.delay == 0.5 and verdict.poison is None
    assert policy.budget.used() == 1 and policy.backoff.attempt == 1
    assert policy.strikes.count == 1, "an outside kill neither adds nor clears strikes"
    assert policy.failed(reason="x", committed=0, inflight=300, fatal=True, external=True).action is Action.FAIL
