"""The ``console`` writer: ML-Agents' progress line, through ``logging``.

The line is ML-Agents' (mlagents 1.1.0 ``ConsoleWriter``) to the character, so
that scripts scraping ``mlagents-learn`` output keep working::

    3DBall. Step: 12000. Time Elapsed: 41.092 s. Mean Reward: 1.203. Std of Reward: 0.671. Training.

Time elapsed counts from the run's start (``RunOptions.start_time``), not from
the writer's construction, so a restarted worker does not reset it.  Lines go
through the ``statbus.console`` logger, so they land wherever the worker host's
logging goes (its log file).

Replays are dropped: delivered by a worker host, a summary whose journal position
is at or below the highest one printed is ignored (a second summary at a step
already printed — late values of a ``SummaryWriter`` log_dir — is printed).  When
given a ``state_file`` the writer remembers that position (and the last
hyperparameters per category) across restarts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from typing import Any, Dict, List, Optional, Union

from ..delivery import already_written, journal_position
from ..errors import ConfigError
from ..settings import RunOptions
from ..stats import StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter, sum_and_mean, summarize

logger = logging.getLogger("statbus.console")

REWARD_KEY = "Environment/Cumulative Reward"
GROUP_REWARD_KEY = "Environment/Group Cumulative Reward"
ELO_KEY = "Self-play/ELO"
IS_TRAINING_KEY = "Is Training"

STATE_FILE_NAME = "console_writer.json"
"""Name of the console writer's replay state in the run's ``run_logs`` dir."""


def hyperparameters_to_str(params: Any, depth: int = 0) -> str:
    """ML-Agents' hyperparameter dump: one ``key:<TAB>value`` per line, nested dicts indented.

    Each line starts with a tab plus two spaces per nesting level; a nested
    dict starts on the line after its key.
    """
    if not isinstance(params, dict):
        return str(params)
    lines = [f"\t{'  ' * depth}{key}:\t{hyperparameters_to_str(value, depth + 1)}" for key, value in params.items()]
    return ("\n" if depth > 0 else "") + "\n".join(lines)


def _digest(value: Any) -> str:
    """A stable fingerprint of a property value, to recognise a replayed one."""
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _level(value: Union[int, str]) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    level = logging.getLevelName(str(value).upper())
    if not isinstance(level, int):
        raise ConfigError(f"console log_level {value!r} is not a logging level name")
    return level


class ConsoleWriter(StatsWriter):
    """Logs ML-Agents' progress line per summary and the hyperparameters once."""

    def __init__(
        self,
        start_time: Optional[float] = None,
        log_level: Union[int, str] = logging.INFO,
        state_file: Optional[str] = None,
    ) -> None:
        self.training_start_time = time.time() if start_time is None else start_time
        self.level = _level(log_level)
        # ML-Agents prints ELO only once a SELF_PLAY property said so.
        self.self_play = False
        self._state_file = state_file
        self._written = -1
        """The highest journal position of a summary printed in this run, -1 before the first."""
        self._last_property: Dict[str, str] = {}
        self._ensure_visible()
        self._load_state()

    def _ensure_visible(self) -> None:
        # Used in-process with logging never configured, INFO lines would be
        # swallowed (the last-resort handler only shows warnings); ML-Agents
        # sets up its own handler in that case, so do we.
        if logger.level == logging.NOTSET or logger.level > self.level:
            logger.setLevel(self.level)
        if not logger.hasHandlers():
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
            logger.addHandler(handler)

    # -- replay state ---------------------------------------------------------

    def _load_state(self) -> None:
        """Replay the state log of this run, then start a compacted one.

        The log is one JSON object per line: a header with the run's start
        time, then ``{"position": journal_position}`` or ``{"property": [category,
        digest]}`` per line printed.  Appending a line costs one ``write``
        per summary (a rewrite-and-rename per summary cost more than the
        line itself); a torn last line after a crash is ignored.
        """
        self._state_fd: Optional[int] = None
        if self._state_file is None:
            return
        try:
            with open(self._state_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = []
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable console writer state %s: %s", self._state_file, exc)
            lines = []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        # State of another run (an earlier one in the same directory) says
        # nothing about what this run printed.
        if entries and isinstance(entries[0], dict) and entries[0].get("start_time") == self.training_start_time:
            for entry in entries[1:]:
                if not isinstance(entry, dict):
                    continue
                position, prop = entry.get("position"), entry.get("property")
                if type(position) is int:
                    self._written = max(self._written, position)
                elif isinstance(prop, list) and len(prop) == 2:
                    self._last_property[str(prop[0])] = str(prop[1])
        directory = os.path.dirname(self._state_file) or "."
        os.makedirs(directory, exist_ok=True)
        temporary = f"{self._state_file}.{os.getpid()}.tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(json.dumps({"start_time": self.training_start_time}) + "\n")
            if self._written >= 0:
                f.write(json.dumps({"position": self._written}) + "\n")
            for category, digest in self._last_property.items():
                f.write(json.dumps({"property": [category, digest]}) + "\n")
        os.replace(temporary, self._state_file)
        self._state_fd = os.open(self._state_file, os.O_WRONLY | os.O_APPEND)

    def _log_state(self, entry: Dict[str, Any]) -> None:
        if self._state_fd is not None:
            os.write(self._state_fd, (json.dumps(entry) + "\n").encode("utf-8"))

    def _log_position(self, position: int) -> None:
        """``_log_state({"position": position})``, the same bytes, without ``json.dumps`` per summary."""
        if self._state_fd is not None:
            os.write(self._state_fd, b'{"position": %d}\n' % position)

    # -- StatsWriter ------------------------------------------------------------

    def write_stats(self, category: str, values: Dict[str, StatsSummary], step: int) -> None:
        position = journal_position()
        if already_written(position, self._written):
            logger.debug("console: dropping replayed summary %s step %s (journal position %s)", category, step, position)
            return
        # Not even formatted when nobody would see it.
        if logger.isEnabledFor(self.level):
            logger.log(self.level, self.format_line(category, values, step, time.time()))
        if position is not None:
            self._written = position
            # Logged after the line is out: a crash in between prints a line twice
            # rather than never.
            self._log_position(position)

    def format_line(self, category: str, values: Dict[str, StatsSummary], step: int, now: float) -> str:
        """ML-Agents' progress line for one summary, as of wall-clock ``now``."""
        training = "Not Training"
        is_training = values.get(IS_TRAINING_KEY)
        if is_training is not None:
            total, mean = sum_and_mean(is_training.full_dist)
            aggregated = total if is_training.aggregation_method is StatsAggregationMethod.SUM else mean
            if aggregated > 0.0:
                training = "Training"
        elapsed = now - self.training_start_time
        reward = values.get(REWARD_KEY)
        if reward is None:
            return f"{category}. Step: {step}. Time Elapsed: {elapsed:0.3f} s. No episode was completed since last summary. {training}."
        # Mean and std as StatsSummary computes them, each once.
        _, _, mean, std, _, _ = summarize(reward.full_dist)
        group = values.get(GROUP_REWARD_KEY)
        head = f"{category}. Step: {step}. Time Elapsed: {elapsed:0.3f} s. Mean Reward: {mean:0.3f}"
        if group is None:
            line = f"{head}. Std of Reward: {std:0.3f}. {training}."
        else:
            line = f"{head}. Mean Group Reward: {summarize(group.full_dist)[2]:0.3f}. {training}."
        if self.self_play:
            elo = values.get(ELO_KEY)
            if elo is not None:
                line = f"{line} ELO: {summarize(elo.full_dist)[2]:0.3f}."
        return line

    def add_property(self, category: str, property_type: StatsPropertyType, value: Any) -> None:
        if property_type == StatsPropertyType.HYPERPARAMETERS:
            digest = _digest(value)
            if self._last_property.get(category) == digest:
                return
            logger.log(self.level, "Hyperparameters for behavior name %s: \n%s", category, hyperparameters_to_str(value))
            self._last_property[category] = digest
            self._log_state({"property": [category, digest]})
        elif property_type == StatsPropertyType.SELF_PLAY:
            # ML-Agents asserts a bool; a worker must not die on a trainer's
            # sloppy value, so anything truthy counts.
            self.self_play = bool(value)

    def flush(self) -> None:
        for handler in logger.handlers:
            handler.flush()

    def close(self) -> None:
        self.flush()
        if self._state_fd is not None:
            os.close(self._state_fd)
            self._state_fd = None


def get_console_writer(run_options: RunOptions) -> List[StatsWriter]:
    """Registration function of the ``console`` plugin.

    Plugin options: ``log_level`` (name or number, default ``INFO``): the level
    the lines are logged at.
    """
    options = run_options.plugin_options
    state_file = os.path.join(run_options.checkpoint_settings.run_logs_dir, STATE_FILE_NAME)
    return [
        ConsoleWriter(
            start_time=run_options.start_time,
            log_level=options.get("log_level", logging.INFO),
            state_file=state_file,
        )
    ]
