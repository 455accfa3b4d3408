"""A real Stable-Baselines3 PPO on CartPole-v1 logging through StatbusOutputFormat."""

from __future__ import annotations

import math

from summary_writer_helpers import read_jsonl, read_run, run_child, start_collector, stop

TIMESTEPS = 4096
N_STEPS = 256


def test_every_ppo_dump_reaches_jsonl_tensorboard_and_a_third_party_plugin(tmp_path):
    folder, dumps_path = tmp_path / "logs" / "PPO_1", tmp_path / "dumps.jsonl"
    # write_raises raises on every call: training must not notice.
    collector = start_collector(str(tmp_path), "logs")
    try:
        out = run_child("ppo", str(folder), str(dumps_path), str(TIMESTEPS), timeout=300).stdout
        stop(collector)
        log = collector.log()
    finally:
        collector.close()
    assert "PPO done" in out and "ep_rew_mean" in out  # SB3's own stdout format still works
    dumps = read_jsonl(str(dumps_path))
    assert len(dumps) == TIMESTEPS // N_STEPS
    assert all("time/iterations" not in d["values"] and "train/n_updates" not in d["values"] for d in dumps)
    assert any("train/loss" in d["values"] for d in dumps) and all("rollout/ep_rew_mean" in d["values"] for d in dumps)

    summaries = [s for s in read_jsonl(str(tmp_path / "logs" / "stats.jsonl")) if s.get("category") == "PPO_1"]
    assert [s["step"] for s in summaries] == [d["step"] for d in dumps]  # one summary per dump
    for summary, dump in zip(summaries, dumps):
        assert sorted(summary["values"]) == sorted(dump["values"])  # SB3's key names, exclusions respected
        for key, value in dump["values"].items():
            assert summary["values"][key]["num"] == 1
            assert math.isclose(summary["values"][key]["aggregated_value"], value, rel_tol=1e-12)

    recorded = [line for line in read_jsonl(str(tmp_path / "logs" / "zoo" / "recorder.jsonl"))
                if line["call"] == "write_stats"]
    assert [(line["category"], line["step"], sorted(line["values"])) for line in recorded] == \
        [("PPO_1", d["step"], sorted(d["values"])) for d in dumps]

    scalars = read_run(str(folder))["scalars"]
    assert sorted(scalars) == sorted({key for d in dumps for key in d["values"]})
    for key, points in scalars.items():
        expected = [(d["step"], d["values"][key]) for d in dumps if key in d["values"]]
        assert [step for step, _ in points] == [step for step, _ in expected], key
        assert all(math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-30) for (_, got), (_, want) in zip(points, expected))

    # The raising plugin crashed and was restarted while every other kept up.
    assert "plugin write_raises exited" in log and "WRITER_CRASH" in log, log
