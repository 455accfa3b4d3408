"""Restart policy: backoff, restart budget and poison strikes — pure logic.

The supervisor tells the policy what happened (a host started, a host ended
abnormally) and the policy answers what to do; it never touches a process.
Time comes from an injected monotonic clock and randomness from an injected
``random.Random``, so every rule is tested on a fake clock (docs/design.md §10, after
circus' flapping plugin: the policy is an observer).

Rules:

* **Backoff**: the n-th consecutive failure waits ``min(cap, initial * 2**n)``
  shortened by up to ``jitter`` (a fraction) at random, so that hosts crashing
  together do not restart in lock step.  The jitter only ever shortens, so the
  cap is a true upper bound.  A host that made progress (its committed cursor
  moved) or stayed up ``stable_after`` seconds was healthy: its next failure
  starts the sequence again.
* **Budget** (OTP style): at most ``max_restarts`` restarts in any
  ``window`` seconds; the failure that would need one more is final (FAILED).
  A failure after a healthy run does not spend the budget: a plugin that
  crashes now and then but makes progress in between is flaky, not
  crash-looping, and keeps being restarted (its output stays complete).
* **External** ends (killed from outside, e.g. ``kill -9`` by an operator or
  a chaos test) are not the plugin's fault: restart after the first delay,
  without spending budget, growing the backoff or striking a record.
* **Poison**: the same record in flight at ``poison_strikes`` consecutive
  abnormal exits is poison.  A failure with a different record in flight, or
  with none, starts counting again, and so does progress past the record.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import random
import time
from typing import Callable, Deque, NamedTuple, Optional

from ...plugins.errors import ConfigError

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    backoff_initial: float = 0.5
    backoff_cap: float = 30.0
    backoff_jitter: float = 0.25
    """Fraction of the delay that may be taken off at random (0 = none)."""
    max_restarts: int = 5
    window: float = 60.0
    stable_after: float = 10.0
    """Seconds of uptime after which a host counts as having been healthy."""
    poison_strikes: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.backoff_initial <= self.backoff_cap:
            raise ConfigError("restart policy: need 0 < backoff_initial <= backoff_cap")
        if not 0 <= self.backoff_jitter < 1:
            raise ConfigError("restart policy: backoff_jitter must be in [0, 1)")
        if self.max_restarts < 0 or self.window <= 0:
            raise ConfigError("restart policy: max_restarts must be >= 0 and window > 0")
        if self.poison_strikes < 1:
            raise ConfigError("restart policy: poison_strikes must be >= 1")


class Action(enum.Enum):
    RESTART = "restart"
    """Restart after ``Verdict.delay`` seconds."""
    FAIL = "fail"
    """Give up: the plugin is FAILED until an explicit restart."""


class Verdict(NamedTuple):
    action: Action
    delay: float
    reason: str
    poison: Optional[int]
    """Journal position found to be poison by this failure, else None."""


class Backoff:
    """Exponential delays with jitter; ``attempt`` counts consecutive failures."""

    def __init__(self, config: PolicyConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self.attempt = 0

    def base_delay(self, attempt: int) -> float:
        config = self._config
        # Cap the exponent too: 2**attempt overflows a float after ~1000 failures.
        return min(config.backoff_cap, config.backoff_initial * 2.0 ** min(attempt, 64))

    def jitter(self) -> float:
        """A fresh random number in [0, 1) from the injected rng."""
        return self._rng.random()

    def next_delay(self) -> float:
        base = self.base_delay(self.attempt)
        self.attempt += 1
        return base * (1.0 - self._config.backoff_jitter * self.jitter())

    def reset(self) -> None:
        self.attempt = 0


class RestartBudget:
    """At most ``max_restarts`` restarts in any sliding ``window`` of seconds."""

    def __init__(self, config: PolicyConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._restarts: Deque[float] = collections.deque()

    def _expire(self, now: float) -> None:
        while self._restarts and self._restarts[0] <= now - self._config.window:
            self._restarts.popleft()

    def used(self) -> int:
        self._expire(self._clock())
        return len(self._restarts)

    def try_spend(self) -> bool:
        """Take one restart from the budget; False (and nothing taken) when spent."""
        now = self._clock()
        self._expire(now)
        if len(self._restarts) >= self._config.max_restarts:
            return False
        self._restarts.append(now)
        return True

    def reset(self) -> None:
        self._restarts.clear()


class PoisonStrikes:
    """Counts consecutive failures with the same record in flight."""

    def __init__(self, config: PolicyConfig) -> None:
        self._config = config
        self.position: Optional[int] = None
        self.count = 0

    def failed(self, inflight: Optional[int]) -> Optional[int]:
        """Note a failure with ``inflight`` (None or < 0: none); the position if poison now."""
        if inflight is None or inflight < 0:
            self.reset()
            return None
        if inflight == self.position:
            self.count += 1
        else:
            self.position, self.count = inflight, 1
        if self.count >= self._config.poison_strikes:
            self.reset()
            return inflight
        return None

    def progressed(self, committed: int) -> None:
        """The cursor reached ``committed``: a record before it was not poison after all."""
        if self.position is not None and committed > self.position:
            self.reset()

    def reset(self) -> None:
        self.position, self.count = None, 0


class RestartPolicy:
    """What to do when one plugin's host ends abnormally."""

    def __init__(
        self,
        config: PolicyConfig = PolicyConfig(),
        *,
        clock: Clock = time.monotonic,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self.backoff = Backoff(config, rng if rng is not None else random.Random())
        self.budget = RestartBudget(config, clock)
        self.strikes = PoisonStrikes(config)
        self._started_at: Optional[float] = None
        self._committed_at_start = 0

    def started(self, committed: int) -> None:
        """A host was spawned whose cursor is ``committed``."""
        self._started_at = self._clock()
        self._committed_at_start = committed

    def progressed(self, committed: int) -> None:
        """The running host's cursor is now ``committed`` (call as often as convenient)."""
        self.strikes.progressed(committed)

    def _was_healthy(self, committed: int) -> bool:
        if committed > self._committed_at_start:
            return True
        return self._started_at is not None and self._clock() - self._started_at >= self.config.stable_after

    def failed(
        self,
        *,
        reason: str,
        committed: int,
        inflight: Optional[int] = None,
        fatal: bool = False,
        external: bool = False,
    ) -> Verdict:
        """A host ended abnormally.

        ``inflight`` is the record it was delivering when it died, if the
        failure may be that record's fault (None otherwise: the strike count
        restarts).  ``fatal`` means restarting cannot help (bad config, import
        or registration failure): FAILED at once, budget untouched.
        ``external`` means someone else ended it (a kill from outside): not the
        plugin's fault, so a restart after the first backoff delay that
        touches neither the budget, nor the backoff sequence, nor the strikes.
        """
        self.strikes.progressed(committed)
        if external and not fatal:
            self._started_at = None
            base = self.config.backoff_initial
            return Verdict(Action.RESTART, base * (1.0 - self.config.backoff_jitter * self.backoff.jitter()), reason, None)
        poison = self.strikes.failed(inflight)
        if fatal:
            return Verdict(Action.FAIL, 0.0, reason, poison)
        healthy = self._was_healthy(committed)
        self._started_at = None
        if healthy:
            # It was working: not flapping.  Back off from the start again and
            # leave the budget alone, so that a plugin crashing now and then
            # while it keeps up is restarted for as long as it makes progress.
            self.backoff.reset()
            self._committed_at_start = committed
            return Verdict(Action.RESTART, self.backoff.next_delay(), reason, poison)
        if not self.budget.try_spend():
            budget = f"{self.config.max_restarts} restarts in {self.config.window:g} s"
            return Verdict(Action.FAIL, 0.0, f"restart budget spent ({budget}); last: {reason}", poison)
        return Verdict(Action.RESTART, self.backoff.next_delay(), reason, poison)

    def reset(self) -> None:
        """An explicit restart: a clean slate (the operator asked for another try)."""
        self.backoff.reset()
        self.budget.reset()
        self.strikes.reset()
        self._started_at = None
