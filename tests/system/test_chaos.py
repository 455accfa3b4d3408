"""Crash isolation end to end: a real collector, real trainer processes, real worker hosts, and plugins
that fail in every way the zoo knows — training never notices, every other plugin's output stays exact."""

from __future__ import annotations

import collections
import time

import pytest

from chaos_helpers import (
    ChaosRun,
    chaos_run,
    example_summaries,
    expected_summaries,
    read_jsonl,
    stats_jsonl_summaries,
    tensorboard_steps,
    zoo_summaries,
)

TRAINER_CALL_BOUND = 1.0
"""Seconds no single add_stat/write_stats call may take.  Generous on purpose: a
training call that *waited on a plugin* would wait for seconds (the sleeping
plugin takes 2 s per summary, a hung one forever), while a loaded 2-core test
machine can stall a process for tens of milliseconds.  Not a speed assertion."""


def assert_exact(got, want, what):
    """``got`` (category, step, values) lines hold every wanted summary exactly once, and nothing else."""
    counts = collections.Counter((c, s) for c, s, _ in got)
    duplicated = sorted(k for k, n in counts.items() if n > 1)
    missing = sorted(set(want) - set(counts))
    extra = sorted(set(counts) - set(want))
    assert not duplicated and not missing and not extra, (what, duplicated[:5], missing[:5], extra[:5])
    for category, step, values in got:
        assert values == want[(category, step)], (what, category, step)


def assert_at_least_once(got, want, what):
    seen = {(c, s): v for c, s, v in got}
    missing = sorted(set(want) - set(seen))
    assert not missing, (what, len(missing), missing[:5])
    for key, values in seen.items():
        if key in want:
            assert values == want[key], (what, key)


def assert_stats_jsonl_exact(run: ChaosRun, want):
    got = stats_jsonl_summaries(run.path("stats.jsonl"))
    counts = collections.Counter((c, s) for c, s, _ in got)
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1][:5]
    assert set(counts) == set(want), (sorted(set(want) - set(counts))[:5], sorted(set(counts) - set(want))[:5])
    for category, step, values in got:
        expected = want[(category, step)]
        assert set(values) == set(expected)
        for key, (num, total) in values.items():
            assert num == len(expected[key]) and total == pytest.approx(sum(expected[key])), (category, step, key)


def assert_tensorboard_exact(run: ChaosRun, trainers: int, steps: int):
    for index in range(trainers):
        shown, raw = tensorboard_steps(run.path(f"T{index}"), "reward")
        assert shown == list(range(1, steps + 1)), (index, shown[:10])
        assert sorted(raw) == list(range(1, steps + 1)), (index, collections.Counter(raw).most_common(3))


def assert_trainers_never_waited(reports):
    # Every trainer process finished and flushed; none of its calls waited on a plugin.
    assert reports and all(r["calls"] > 0 for r in reports)
    assert max(r["max_call"] for r in reports) < TRAINER_CALL_BOUND, reports


# --- 6. an unmodified ML-Agents-style plugin ------------------------------------------------------


def test_unmodified_mlagents_style_plugins_receive_every_summary(tmp_path):
    trainers, steps, per_step = 2, 40, 5
    want = expected_summaries(trainers, steps, per_step)
    with chaos_run(tmp_path, ["example", "mlagents_style", "good"]) as run:
        run.start_trainers(trainers, steps, per_step)
        assert_trainers_never_waited(run.finish_trainers())
        run.wait_caught_up(["example", "mlagents_style", "good"])
        example = example_summaries(run.path("example_plugin.txt"))
        assert sorted(example) == sorted(want), "the example plugin: every summary exactly once"
        styled = [x for x in read_jsonl(run.path("zoo", "mlagents_style.jsonl")) if "step" in x]
        assert sorted((x["category"], x["step"]) for x in styled) == sorted(want)
        for line in styled:
            values = want[(line["category"], line["step"])]
            assert line["means"]["reward"] == pytest.approx(sum(values["reward"]) / len(values["reward"]))
            assert line["sums"] == {"count": 1.0}  # SUM aggregation seen through mlagents' enum
        assert_exact(zoo_summaries(run.path("zoo", "good.jsonl")), want, "good")
        assert all(p["restarts"] == 0 for p in run.status()["plugins"])


# --- 1. every failure kind contained and reported ------------------------------------------------

FATAL = {
    "import_error": ("IMPORT_FAILURE", "fails to import on purpose"),
    "register_raises": ("REGISTRATION_FAILURE", "raises in its registration function"),
    "not_a_writer": ("REGISTRATION_FAILURE", "not a StatsWriter"),
}
CRASHING = {
    "write_raises": "WRITER_CRASH",
    "segfault": "SIGSEGV",
    "exit_now": "exit status 3",
}


def test_every_failure_kind_is_contained_and_reported(tmp_path):
    trainers, steps, per_step = 2, 60, 5
    want = expected_summaries(trainers, steps, per_step)
    plugins = ["good", "leaks", *FATAL, *CRASHING]
    settings = ["leaks.memory_cap_mb=200", "leaks.options.megabytes=60"]
    with chaos_run(tmp_path, plugins, settings) as run:
        run.start_trainers(trainers, steps, per_step, pause=0.02)
        for name, (code, words) in FATAL.items():
            status = run.wait_plugin(name, lambda p: p["state"] == "FAILED", what=f"{name} FAILED")
            assert status["last_error"].startswith(code) and words in status["last_error"], status
            assert status["restarts"] == 0, "a fatal exit is not retried"
        for name, words in CRASHING.items():
            status = run.wait_plugin(name, lambda p: p["restarts"] >= 1 and p["last_error"], what=f"{name} restarted")
            assert words in status["last_error"], status
        status = run.wait_plugin(
            "leaks", lambda p: p["restarts"] >= 1 and "memory cap" in (p["last_error"] or ""),
            what="leaks restarted for memory",
        )
        assert status["state"] != "FAILED", status
        assert_trainers_never_waited(run.finish_trainers())
        run.wait_caught_up(["good"])
        assert_exact(zoo_summaries(run.path("zoo", "good.jsonl")), want, "good")
        assert run.plugin("good")["restarts"] == 0 and run.plugin("good")["state"] == "READY"


# --- 2. kill -9 of one worker every 200 ms through a run -------------------------------------------


@pytest.mark.parametrize("victim", ["jsonl", "tensorboard"])
def test_kill_9_of_a_worker_every_200_ms(tmp_path, victim):
    trainers, steps, per_step = 2, 150, 5
    want = expected_summaries(trainers, steps, per_step)
    plugins = ["good", "example", "jsonl", "tensorboard"]
    with chaos_run(tmp_path, plugins) as run:
        run.wait_plugin(victim, lambda p: p["state"] == "READY", what=f"{victim} ready")
        run.start_trainers(trainers, steps, per_step, pause=0.03)
        killed = set()
        while run.trainers_running():
            pid = run.kill_worker(victim)
            if pid is not None:
                killed.add(pid)
            time.sleep(0.2)  # the kills' pace, on purpose: one every 200 ms while the trainers run
        reports = run.finish_trainers()
        assert killed, "the run ended before its worker could be killed"
        # The victim is caught up from its committed cursor once the kills stop.
        run.wait_caught_up(plugins)
        assert_trainers_never_waited(reports)
        status = {p["name"]: p for p in run.status()["plugins"]}
        assert status[victim]["restarts"] >= len(killed) and status[victim]["state"] == "READY", status[victim]
        assert status[victim]["last_error"] == "killed by SIGKILL"
        assert all(status[n]["restarts"] == 0 for n in plugins if n != victim), status
        # Every plugin's output complete; the built-in writers' exactly once even for the victim.
        assert_exact(zoo_summaries(run.path("zoo", "good.jsonl")), want, "good")
        assert sorted(example_summaries(run.path("example_plugin.txt"))) == sorted(want)
        assert_stats_jsonl_exact(run, want)
        assert_tensorboard_exact(run, trainers, steps)


# --- 3. a crash-looping plugin reaches FAILED -------------------------------------------------------


def test_a_crash_looping_plugin_fails_after_its_budget_and_the_others_carry_on(tmp_path):
    trainers, steps, per_step = 2, 60, 5
    want = expected_summaries(trainers, steps, per_step)
    with chaos_run(tmp_path, ["good", "write_raises"], ["write_raises.max_restarts=2"]) as run:
        run.start_trainers(trainers, steps, per_step, pause=0.02)
        status = run.wait_plugin("write_raises", lambda p: p["state"] == "FAILED", what="write_raises FAILED")
        assert status["restarts"] == 2, status
        assert "restart budget spent" in status["last_error"] and "WRITER_CRASH" in status["last_error"], status
        assert "write_raises raises in write_stats" in status["last_error"]
        assert status["pid"] is None
        assert_trainers_never_waited(run.finish_trainers())
        run.wait_caught_up(["good"])
        assert_exact(zoo_summaries(run.path("zoo", "good.jsonl")), want, "good")
        assert run.plugin("write_raises")["state"] == "FAILED", "it stays FAILED: nobody restarted it"


# --- 4. a hung plugin is detected and replaced ------------------------------------------------------


def test_a_hung_plugin_is_detected_and_replaced(tmp_path):
    trainers, steps, per_step = 2, 60, 5
    want = expected_summaries(trainers, steps, per_step)
    with chaos_run(tmp_path, ["good", "hangs"], ["hangs.call_timeout=0.5"]) as run:
        run.start_trainers(trainers, steps, per_step, pause=0.02)
        first = run.wait_plugin("hangs", lambda p: p["pid"], what="hangs running")["pid"]
        status = run.wait_plugin(
            "hangs", lambda p: p["restarts"] >= 1 and p["pid"] and p["pid"] != first, what="hangs replaced"
        )
        assert "hung" in status["last_error"] and "0.5 s" in status["last_error"], status
        assert_trainers_never_waited(run.finish_trainers())
        run.wait_caught_up(["good"])
        assert_exact(zoo_summaries(run.path("zoo", "good.jsonl")), want, "good")
        assert run.plugin("good")["restarts"] == 0


# --- 5. a poison record is set aside for its plugin only ---------------------------------------------


def test_a_poison_record_is_set_aside_for_that_plugin_only(tmp_path):
    trainers, steps, per_step, poison_at = 2, 60, 5, 20
    want = expected_summaries(trainers, steps, per_step)
    with chaos_run(tmp_path, ["good", "poison"]) as run:
        run.start_trainers(trainers, steps, per_step, pause=0.02, poison_at=poison_at)
        assert_trainers_never_waited(run.finish_trainers())
        run.wait_caught_up(["good", "poison"])
        dead = read_jsonl(run.path("statbus", "dead-letter", "poison.jsonl"))
        assert len(dead) == 1, dead
        (letter,) = dead
        assert letter["plugin"] == "poison" and "poison summary Poison step 20" in letter["error"], letter
        assert letter["record"]["category"] == "Poison" and letter["record"]["step"] == poison_at, letter
        status = run.plugin("poison")
        # Three strikes (three crashes on it), then set aside and started once more.
        assert status["skipped"] == 1 and status["state"] == "READY" and status["restarts"] == 3, status
        # The plugin went on past the poison: every other summary, the ones after it included.
        assert_at_least_once(zoo_summaries(run.path("zoo", "poison.jsonl")), want, "poison")
        # Set aside for that plugin only: good got the Poison summary too.
        good_want = dict(want)
        good_want[("Poison", poison_at)] = {"bad": [float(poison_at)]}
        assert_exact(zoo_summaries(run.path("zoo", "good.jsonl")), good_want, "good")
        assert not read_jsonl(run.path("statbus", "dead-letter", "good.jsonl"))


# --- 7. the whole run at once ----------------------------------------------------------------------

BUILT_INS = ["console", "tensorboard", "gauges", "jsonl"]


def test_done_when_built_ins_example_and_a_randomly_crashing_plugin(tmp_path):
    trainers, steps, per_step = 3, 200, 5
    want = expected_summaries(trainers, steps, per_step)
    # flaky crashes (raise, os._exit or SIGKILL of itself, at random) about once in 75 of its
    # summaries, i.e. once every few hundred journal records: ~8 crashes in this run.  sleeps
    # takes 2 s per summary: it is still far behind when the trainers are done.
    plugins = [*BUILT_INS, "example", "flaky", "sleeps"]
    settings = ["flaky.options.one_in=75", "sleeps.options.seconds=2.0"]
    with chaos_run(tmp_path, plugins, settings) as run:
        run.start_trainers(trainers, steps, per_step, pause=0.02)
        reports = run.finish_trainers()
        # No training call waited on any plugin: the calls never took anywhere near the
        # 2 s of one sleeps write, although sleeps has hundreds of summaries still to go.
        assert_trainers_never_waited(reports)
        assert run.plugin("sleeps")["lag_bytes"] > 0
        run.wait_caught_up([*BUILT_INS, "example", "flaky"], timeout=90)
        status = {p["name"]: p for p in run.status()["plugins"]}
        assert status["flaky"]["restarts"] >= 1 and status["flaky"]["last_error"], status["flaky"]
        assert status["flaky"]["state"] == "READY" and status["flaky"]["skipped"] == 0, status["flaky"]
        assert all(status[n]["restarts"] == 0 for n in [*BUILT_INS, "example", "sleeps"]), status
        assert_stats_jsonl_exact(run, want)
        assert_tensorboard_exact(run, trainers, steps)
        assert_at_least_once(zoo_summaries(run.path("zoo", "flaky.jsonl")), want, "flaky")
        assert sorted(example_summaries(run.path("example_plugin.txt"))) == sorted(want)
