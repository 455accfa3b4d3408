"""The node-side files that make one run's Ray collector restartable, and trainer key names.

Every process of the cluster finds the run's collector as the actor
``statbus-collector:<run_id>`` in the Ray namespace ``statbus``
(:mod:`..trainer.ray_discovery`, where the trainer needs them).  On the collector's
node, ``<results>/<run>/statbus/ray/`` keeps what a restarted actor must reuse so
that connected trainers never notice: the collector's CURVE key pair, the allow-list
of trainer keys, and the tcp endpoint it bound first.
"""

from __future__ import annotations

import dataclasses
import os
import re

from ...plugins import ConfigError
from ..layout import RunLayout

CLIENT_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
"""A trainer key's name in the allow-list (also the CURVE user id the collector reports)."""


def check_client_name(name: str) -> str:
    if not isinstance(name, str) or not CLIENT_NAME_PATTERN.match(name):
        raise ConfigError(
            f"trainer key name {name!r} must be 1-100 letters, digits, '_', '.', ':' or '-', starting with a letter or digit"
        )
    return name


@dataclasses.dataclass(frozen=True)
class RayFiles:
    """The Ray collector's files in the run's directory on its node."""

    layout: RunLayout

    @property
    def directory(self) -> str:
        return self.layout.ray_dir

    @property
    def key_dir(self) -> str:
        """The collector's key pair (``server.key``, ``server.key_secret``), mode 0700."""
        return os.path.join(self.directory, "keys")

    @property
    def allow_dir(self) -> str:
        """One ``NAME.key`` per trainer the actor authorized, mode 0700."""
        return os.path.join(self.directory, "allowed")

    @property
    def endpoint_file(self) -> str:
        """The tcp endpoint of the first start, bound again by every restart."""
        return os.path.join(self.directory, "endpoint")

    @property
    def starts_file(self) -> str:
        """How many times an actor started this run's collector (1 + Ray's restarts)."""
        return os.path.join(self.directory, "starts")
