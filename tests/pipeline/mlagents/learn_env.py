"""A tiny ML-Agents environment in Python, so that ML-Agents trains without Unity.

Four agents of one behavior see one float (a target in [-1, 1]) and answer
with one continuous action; the reward is ``-|action - target|`` and an
episode lasts ten steps.  Everything is drawn from a seeded generator, so the
same seed gives the same run.
"""

from __future__ import annotations

from typing import List, Mapping, Optional, Tuple

import numpy as np
from mlagents_envs.base_env import (
    ActionSpec,
    ActionTuple,
    BaseEnv,
    BehaviorSpec,
    DecisionSteps,
    DimensionProperty,
    ObservationSpec,
    ObservationType,
    TerminalSteps,
)

BEHAVIOR = "Target"
AGENTS = 4
EPISODE_STEPS = 10


class TargetEnv(BaseEnv):
    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        spec = ObservationSpec((1,), (DimensionProperty.NONE,), ObservationType.DEFAULT, "target")
        self._spec = BehaviorSpec([spec], ActionSpec.create_continuous(1))
        self.academy_capabilities = None  # ML-Agents' env worker asks; a Python env has none
        self._ids = np.arange(AGENTS, dtype=np.int32)
        self._next_id = AGENTS
        self._targets = np.zeros(AGENTS, dtype=np.float32)
        self._age = np.zeros(AGENTS, dtype=np.int32)
        self._actions: Optional[np.ndarray] = None
        self._decision: Optional[DecisionSteps] = None
        self._terminal: Optional[TerminalSteps] = None

    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {BEHAVIOR: self._spec}

    def reset(self) -> None:
        self._targets = self._rng.uniform(-1, 1, AGENTS).astype(np.float32)
        self._age[:] = 0
        self._decision = self._decisions(np.zeros(AGENTS, dtype=np.float32))
        self._terminal = TerminalSteps.empty(self._spec)

    def step(self) -> None:
        actions = np.zeros(AGENTS, dtype=np.float32) if self._actions is None else self._actions[:, 0]
        rewards = -np.abs(np.clip(actions, -1, 1) - self._targets).astype(np.float32)
        self._age += 1
        done = self._age >= EPISODE_STEPS
        terminal_obs = [self._targets[done].reshape(-1, 1).copy()]
        self._terminal = TerminalSteps(
            terminal_obs, rewards[done], np.ones(int(done.sum()), dtype=bool), self._ids[done].copy(),
            np.zeros(int(done.sum()), dtype=np.int32), np.zeros(int(done.sum()), dtype=np.float32),
        )
        for index in np.nonzero(done)[0]:
            self._ids[index] = self._next_id
            self._next_id += 1
            self._age[index] = 0
        self._targets = self._rng.uniform(-1, 1, AGENTS).astype(np.float32)
        rewards[done] = 0.0
        self._decision = self._decisions(rewards)
        self._actions = None

    def _decisions(self, rewards: np.ndarray) -> DecisionSteps:
        return DecisionSteps(
            [self._targets.reshape(-1, 1).copy()], rewards, self._ids.copy(), None,
            np.zeros(AGENTS, dtype=np.int32), np.zeros(AGENTS, dtype=np.float32),
        )

    def set_actions(self, behavior_name: str, action: ActionTuple) -> None:
        self._actions = np.array(action.continuous, dtype=np.float32)

    def set_action_for_agent(self, behavior_name: str, agent_id: int, action: ActionTuple) -> None:
        if self._actions is None:
            self._actions = np.zeros((AGENTS, 1), dtype=np.float32)
        index = int(np.nonzero(self._ids == agent_id)[0][0])
        self._actions[index] = action.continuous[0]

    def get_steps(self, behavior_name: str) -> Tuple[DecisionSteps, TerminalSteps]:
        return self._decision, self._terminal

    def close(self) -> None:
        pass


def factory(env_path, no_graphics, no_graphics_monitor, seed, *_):  # noqa: ANN001
    """Stands in for ``mlagents.trainers.learn.create_environment_factory`` (its arguments, in order)."""

    def create(worker_id: int, side_channels: List) -> TargetEnv:  # noqa: ANN001
        return TargetEnv(seed + worker_id)

    return create
