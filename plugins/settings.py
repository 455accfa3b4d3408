"""Run options handed to plugin registration functions.

Compatible with the parts of ``mlagents.trainers.settings.RunOptions`` that
stats writers use (``checkpoint_settings.write_path``, ``run_logs_dir``,
``run_id``, ``resume``, ``behaviors``, ``env_settings``, ``debug``), plus what
statbus adds: the run's start time, so that a restarted writer keeps counting
elapsed time from the real start, and the plugin's own options.

The options travel to worker processes as ``as_dict()`` / ``from_dict()``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, Mapping, Optional

from .errors import ConfigError

RUN_LOGS = "run_logs"
"""The folder of ML-Agents' run logs (``timers.json``) in a run's ``write_path``."""


@dataclasses.dataclass(frozen=True)
class CheckpointSettings:
    run_id: str = "ppo"
    results_dir: str = "results"
    resume: bool = False
    force: bool = False
    initialize_from: Optional[str] = None

    @property
    def write_path(self) -> str:
        return os.path.join(self.results_dir, self.run_id)

    @property
    def run_logs_dir(self) -> str:
        return os.path.join(self.write_path, RUN_LOGS)

    @property
    def maybe_init_path(self) -> Optional[str]:
        if self.initialize_from is None:
            return None
        return os.path.join(self.results_dir, self.initialize_from)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    checkpoint_settings: CheckpointSettings = dataclasses.field(default_factory=CheckpointSettings)
    behaviors: Dict[str, Any] = dataclasses.field(default_factory=dict)
    env_settings: Dict[str, Any] = dataclasses.field(default_factory=dict)
    debug: bool = False
    start_time: float = dataclasses.field(default_factory=time.time)
    """Wall-clock time (``time.time()``) at which the run started."""
    plugin_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    """Options of the one plugin these run options are handed to."""
    mlagents_options: Optional[Dict[str, Any]] = None
    """``mlagents.trainers.settings.RunOptions.as_dict()`` of a run trained by ``statbus learn``:
    a worker host where mlagents is importable hands ML-Agents plugins the real RunOptions built from it."""

    @classmethod
    def create(
        cls,
        run_id: str,
        results_dir: str = "results",
        resume: bool = False,
        **kwargs: Any,
    ) -> "RunOptions":
        return cls(
            checkpoint_settings=CheckpointSettings(run_id=run_id, results_dir=results_dir, resume=resume),
            **kwargs,
        )

    @property
    def run_id(self) -> str:
        return self.checkpoint_settings.run_id

    @property
    def results_dir(self) -> str:
        return self.checkpoint_settings.results_dir

    @property
    def resume(self) -> bool:
        return self.checkpoint_settings.resume

    def with_plugin_options(self, options: Mapping[str, Any]) -> "RunOptions":
        return dataclasses.replace(self, plugin_options=dict(options))

    def as_dict(self) -> Dict[str, Any]:
        return {
            "checkpoint_settings": dataclasses.asdict(self.checkpoint_settings),
            "behaviors": dict(self.behaviors),
            "env_settings": dict(self.env_settings),
            "debug": self.debug,
            "start_time": self.start_time,
            "plugin_options": dict(self.plugin_options),
            "mlagents_options": self.mlagents_options,
        }

    @staticmethod
    def from_dict(options_dict: Optional[Mapping[str, Any]]) -> "RunOptions":
        if options_dict is None:
            return RunOptions()
        if not isinstance(options_dict, Mapping):
            raise ConfigError(f"run options must be a mapping, got {type(options_dict).__name__}")
        known = {f.name for f in dataclasses.fields(RunOptions)}
        unknown = sorted(set(options_dict) - known)
        if unknown:
            raise ConfigError(f"unknown run options {unknown}; known are {sorted(known)}")
        kwargs = dict(options_dict)
        checkpoint = kwargs.pop("checkpoint_settings", None) or {}
        if not isinstance(checkpoint, Mapping):
            raise ConfigError("run options: checkpoint_settings must be a mapping")
        checkpoint_known = {f.name for f in dataclasses.fields(CheckpointSettings)}
        checkpoint_unknown = sorted(set(checkpoint) - checkpoint_known)
        if checkpoint_unknown:
            raise ConfigError(f"unknown checkpoint settings {checkpoint_unknown}")
        return RunOptions(checkpoint_settings=CheckpointSettings(**checkpoint), **kwargs)
