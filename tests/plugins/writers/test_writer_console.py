"""The console writer prints ML-Agents' lines, exactly."""

from __future__ import annotations

import logging
import types

import pytest

from statbus.plugins import RunOptions, StatsAggregationMethod, StatsPropertyType, StatsSummary
from delivering import write_at
from statbus.plugins.writers import console
from statbus.plugins.writers.console import ConsoleWriter, get_console_writer, hyperparameters_to_str

AVG = StatsAggregationMethod.AVERAGE
START = 1000.0
NOW = 1042.25


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch):
    monkeypatch.setattr(console, "time", types.SimpleNamespace(time=lambda: NOW))


def lines(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.name == "statbus.console"]


def s(*values, method=AVG) -> StatsSummary:
    return StatsSummary(list(values), method)


def test_reward_line(caplog):
    caplog.set_level(logging.INFO, logger="statbus.console")
    writer = ConsoleWriter(start_time=START)
    writer.write_stats(
        "3DBall",
        {"Environment/Cumulative Reward": s(1.0, 2.0, 3.0), "Is Training": s(1.0), "Policy/Entropy": s(0.5)},
        12000,
    )
    assert lines(caplog) == [
        "3DBall. Step: 12000. Time Elapsed: 42.250 s. Mean Reward: 2.000. Std of Reward: 0.816. Training."
    ]
    assert caplog.records[-1].levelno == logging.INFO


def test_group_reward_replaces_std(caplog):
    caplog.set_level(logging.INFO, logger="statbus.console")
    ConsoleWriter(start_time=START).write_stats(
        "Soccer",
        {
            "Environment/Cumulative Reward": s(1.0, 3.0),
            "Environment/Group Cumulative Reward": s(5.0),
            "Is Training": s(1.0),
        },
        7,
    )
    assert lines(caplog) == ["Soccer. Step: 7. Time Elapsed: 42.250 s. Mean Reward: 2.000. Mean Group Reward: 5.000. Training."]


def test_elo_only_after_self_play_property(caplog):
    caplog.set_level(logging.INFO, logger="statbus.console")
    writer = ConsoleWriter(start_time=START)
    values = {"Environment/Cumulative Reward": s(1.0), "Self-play/ELO": s(1200.0, 1210.0), "Is Training": s(1.0)}
    writer.write_stats("Tennis", values, 1)
    writer.add_property("Tennis", StatsPropertyType.SELF_PLAY, True)
    writer.write_stats("Tennis", values, 2)
    assert lines(caplog) == [
        "Tennis. Step: 1. Time Elapsed: 42.250 s. Mean Reward: 1.000. Std of Reward: 0.000. Training.",
        "Tennis. Step: 2. Time Elapsed: 42.250 s. Mean Reward: 1.000. Std of Reward: 0.000. Training. ELO: 1205.000.",
    ]


def test_no_episode_and_not_training(caplog):
    caplog.set_level(logging.INFO, logger="statbus.console")
    writer = ConsoleWriter(start_time=START)
    writer.write_stats("Walker", {"Losses/Value Loss": s(0.1)}, 5)
    writer.write_stats("Walker", {"Is Training": s(0.0)}, 6)
    writer.write_stats("Walker", {"Environment/Cumulative Reward": s(2.0), "Is Training": s(0.0)}, 7)
    # MOST_RECENT: it is the aggregated value (the last one) that counts.
    writer.write_stats("Walker", {"Is Training": s(1.0, method=StatsAggregationMethod.MOST_RECENT)}, 8)
    assert lines(caplog) == [
        "Walker. Step: 5. Time Elapsed: 42.250 s. No episode was completed since last summary. Not Training.",
        "Walker. Step: 6. Time Elapsed: 42.250 s. No episode was completed since last summary. Not Training.",
        "Walker. Step: 7. Time Elapsed: 42.250 s. Mean Reward: 2.000. Std of Reward: 0.000. Not Training.",
        "Walker. Step: 8. Time Elapsed: 42.250 s. No episode was completed since last summary. Training.",
    ]


def test_hyperparameters_dump(caplog):
    caplog.set_level(logging.INFO, logger="statbus.console")
    params = {"trainer_type": "ppo", "hyperparameters": {"batch_size": 64, "nested": {"x": 1}}, "max_steps": 500000}
    ConsoleWriter(start_time=START).add_property("3DBall", StatsPropertyType.HYPERPARAMETERS, params)
    expected = (
        "Hyperparameters for behavior name 3DBall: \n"
        "\ttrainer_type:\tppo\n"
        "\thyperparameters:\t\n"
        "\t  batch_size:\t64\n"
        "\t  nested:\t\n"
        "\t    x:\t1\n"
        "\tmax_steps:\t500000"
    )
    assert lines(caplog) == [expected]
    assert hyperparameters_to_str(3) == "3"


def test_replayed_summary_and_property_print_once(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="statbus.console")
    state = str(tmp_path / "console.json")
    values = {"Environment/Cumulative Reward": s(1.0)}
    writer = ConsoleWriter(start_time=START, state_file=state)
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(writer, 100, "c", values, 10)
    write_at(writer, 100, "c", values, 10)  # the same entry again: a replay
    write_at(writer, 200, "c", values, 10)  # a second summary at step 10 (late values): printed
    writer.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(writer, 300, "other", values, 9)
    assert len(lines(caplog)) == 4

    # A restarted worker of the same run, caught up from the journal.
    restarted = ConsoleWriter(start_time=START, state_file=state)
    restarted.add_property("c", StatsPropertyType.HYPERPARAMETERS, {"a": 1})
    write_at(restarted, 200, "c", values, 10)
    write_at(restarted, 300, "other", values, 9)
    assert len(lines(caplog)) == 4
    write_at(restarted, 400, "c", values, 11)
    assert lines(caplog)[-1].startswith("c. Step: 11. Time Elapsed: 42.250 s.")

    # A new run in the same directory starts afresh.
    write_at(ConsoleWriter(start_time=START + 1, state_file=state), 100, "c", values, 10)
    assert len(lines(caplog)) == 6


def test_registration_uses_run_start_and_log_level(caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="statbus.console")
    options = RunOptions.create("r", results_dir=str(tmp_path), start_time=1040.0).with_plugin_options(
        {"log_level": "DEBUG"}
    )
    [writer] = get_console_writer(options)
    writer.write_stats("c", {}, 1)
    writer.close()
    record = [r for r in caplog.records if r.name == "statbus.console"][-1]
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "c. Step: 1. Time Elapsed: 2.250 s. No episode was completed since last summary. Not Training."
    assert (tmp_path / "r" / "run_logs" / console.STATE_FILE_NAME).exists()


def test_bad_log_level_is_a_config_error():
    from statbus.plugins import ConfigError

    with pytest.raises(ConfigError):
        ConsoleWriter(log_level="LOUD")


# -- the cheaper write_stats path ---------------------------------------------------

import json  # noqa: E402
import math  # noqa: E402


def reference_line(category, values, step, now=NOW, start=START, self_play=False) -> str:
    """The line as format_line built it from StatsSummary's properties."""
    training = "Not Training"
    if "Is Training" in values and values["Is Training"].aggregated_value > 0.0:
        training = "Training"
    parts = [category, f"Step: {step}", f"Time Elapsed: {now - start:0.3f} s"]
    if "Environment/Cumulative Reward" in values:
        parts.append(f"Mean Reward: {values['Environment/Cumulative Reward'].mean:0.3f}")
        if "Environment/Group Cumulative Reward" in values:
            parts.append(f"Mean Group Reward: {values['Environment/Group Cumulative Reward'].mean:0.3f}")
        else:
            parts.append(f"Std of Reward: {values['Environment/Cumulative Reward'].std:0.3f}")
        parts.append(training)
        if self_play and "Self-play/ELO" in values:
            parts.append(f"ELO: {values['Self-play/ELO'].mean:0.3f}")
    else:
        parts += ["No episode was completed since last summary", training]
    return ". ".join(parts) + "."


REWARDS = [[], [1.0], [-0.0], [-0.0, -0.0], [0.5, -0.5], [1.0, 2.0, 4.0], [math.nan], [math.inf], [-math.inf, 1.0], [3, 4], [1e300]]
TRAINING = [
    None, s(1.0), s(0.0), s(-0.0), s(math.nan), s(-1.0, 2.0), s(0.25, -0.5, method=StatsAggregationMethod.SUM),
    s(-1.0, 1.0, method=StatsAggregationMethod.SUM), s(3), s(True, method=StatsAggregationMethod.MOST_RECENT),
]


@pytest.mark.parametrize("reward", REWARDS, ids=repr)
def test_line_matches_the_stats_summary_reference(reward):
    writer = ConsoleWriter(start_time=START)
    writer.self_play = True
    for training in TRAINING:
        for extra in ({}, {"Environment/Group Cumulative Reward": s(*reward)}, {"Self-play/ELO": s(*reward, 7.0)}):
            values = {"Environment/Cumulative Reward": s(*reward), **extra}
            if training is not None:
                values["Is Training"] = training
            assert writer.format_line("c", values, 9, NOW) == reference_line("c", values, 9, self_play=True)
            values.pop("Environment/Cumulative Reward")
            assert writer.format_line("c", values, 9, NOW) == reference_line("c", values, 9, self_play=True)


def test_huge_rewards_do_not_crash(caplog):
    # StatsSummary.mean raises OverflowError here (math.fsum); the line is printed all the same.
    caplog.set_level(logging.INFO, logger="statbus.console")
    ConsoleWriter(start_time=START).write_stats("c", {"Environment/Cumulative Reward": s(1e308, 1e308)}, 1)
    assert lines(caplog) == [f"c. Step: 1. Time Elapsed: 42.250 s. Mean Reward: {1e308:0.3f}. Std of Reward: 0.000. Not Training."]


NAMES = ['quote"d', "back\\slash", "new\nline\x00", "caf\u00e9", "emoji \U0001f3af", ""]


def test_state_log_lines_are_json_dumps_bytes_and_recover(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="statbus.console")
    state = tmp_path / "console.json"
    writer = ConsoleWriter(start_time=START, state_file=str(state))
    for position, name in enumerate(NAMES, 1):
        write_at(writer, position, name, {}, 7)
    writer.write_stats("c", {}, 7)  # outside a worker host: printed, not logged
    writer.close()
    logged = state.read_bytes().decode("ascii").splitlines()
    assert logged[0] == json.dumps({"start_time": START})
    assert logged[1:] == [json.dumps({"position": position}) for position in range(1, len(NAMES) + 1)]

    # A restarted worker knows the highest position printed; its state starts compacted.
    printed = len(lines(caplog))
    restarted = ConsoleWriter(start_time=START, state_file=str(state))
    assert state.read_text().splitlines()[1:] == [json.dumps({"position": len(NAMES)})]
    for position, name in enumerate(NAMES, 1):
        write_at(restarted, position, name, {}, 7)
    assert len(lines(caplog)) == printed
    write_at(restarted, 100, NAMES[0], {}, 7)
    restarted.close()
    assert lines(caplog)[-1].startswith(f"{NAMES[0]}. Step: 7.")


def test_disabled_level_skips_formatting_but_still_records_the_position(caplog, tmp_path, monkeypatch):
    caplog.set_level(logging.WARNING, logger="statbus.console")
    state = str(tmp_path / "console.json")
    writer = ConsoleWriter(start_time=START, state_file=state)
    # The writer lowered the level to its own; the host's config raises it again.
    caplog.set_level(logging.WARNING, logger="statbus.console")

    def fail(*args):
        raise AssertionError("formatted a line nobody sees")

    monkeypatch.setattr(writer, "format_line", fail)
    write_at(writer, 50, "c", {}, 5)
    writer.close()
    assert lines(caplog) == []
    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger="statbus.console")
    restarted = ConsoleWriter(start_time=START, state_file=state)
    write_at(restarted, 50, "c", {}, 5)
    write_at(restarted, 60, "c", {}, 6)
    restarted.close()
    assert [line.split(". Time")[0] for line in lines(caplog)] == ["c. Step: 6"]
