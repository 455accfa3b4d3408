"""The mlflow writer on a sqlite store, in this process: mapping, and what a killed worker's successor logs.

The worker host sets each entry's journal position before delivering it; here the test sets it
(``set_journal_position``) and "kills" a writer by dropping it without ``flush()`` or ``close()``.
"""

from __future__ import annotations

import os

import pytest

from statbus.plugins.delivery import set_journal_position
from statbus.plugins.settings import RunOptions
from statbus.plugins.stats import StatsAggregationMethod, StatsPropertyType, StatsSummary
from statbus.plugins.writers.mlflow_tracker import POSITION_METRIC, get_mlflow_writer, metric_name

pytestmark = [
    pytest.mark.timeout(120),
    # mlflow 3.17's sqlite store uses a loader that SQLAlchemy 2.1 deprecates.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"),
]

AVERAGE, SUM, HISTOGRAM = StatsAggregationMethod.AVERAGE, StatsAggregationMethod.SUM, StatsAggregationMethod.HISTOGRAM


@pytest.fixture
def options(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")
    yield RunOptions.create("3dball", str(tmp_path / "results"), start_time=1700000000.0,
                            plugin_options={"artifact_location": str(tmp_path / "artifacts")})
    set_journal_position(None)


def history(writer, key):
    return [(m.step, m.value) for m in sorted(writer.client.get_metric_history(writer.run_id, key), key=lambda m: m.timestamp)]


def deliver(writer, position, category, values, step):
    set_journal_position(position)
    writer.write_stats(category, values, step)


def kill(writer):
    """What SIGKILL leaves: nothing flushed, the lock released (by the process's end)."""
    os.close(writer.lock_fd)
    writer.lock_fd = None


def test_mapping_run_metrics_params_text(options):
    [writer] = get_mlflow_writer(options)
    try:
        run = writer.client.get_run(writer.run_id)
        assert run.info.run_name == "3dball" and run.data.tags["statbus.run_id"] == "3dball"
        assert writer.client.get_experiment(run.info.experiment_id).name == "from-env"  # MLflow's own variable
        writer.write_stats("3DBall?team=0", {
            "Environment/Cumulative Reward": StatsSummary([1.0, 2.0, 6.0], AVERAGE),
            "Environment/Episodes": StatsSummary([1.0, 1.0], SUM),
            "Policy/Entropy": StatsSummary([1.0, 3.0, 8.0], HISTOGRAM),
            "Empty": StatsSummary([], AVERAGE),
        }, 500)
        writer.add_property("3DBall?team=0", StatsPropertyType.HYPERPARAMETERS,
                            {"trainer_type": "ppo", "hyperparameters": {"batch_size": 64, "long": "x" * 7000}})
        writer.add_property("3DBall?team=0", StatsPropertyType.HYPERPARAMETERS, {"trainer_type": "sac"})  # params cannot change
        writer.add_property("runs/a", StatsPropertyType.TEXT, {"tag": "notes", "text": "hello", "step": 7})
        writer.flush()
        assert history(writer, "3DBall_team_0/Environment/Cumulative Reward") == [(500, 3.0)]
        assert history(writer, "3DBall_team_0/Environment/Episodes") == [(500, 2.0)]
        assert history(writer, "3DBall_team_0/Policy/Entropy") == [(500, 4.0)]  # the mean, as ML-Agents' scalar
        assert history(writer, "3DBall_team_0/Empty") == []
        assert history(writer, POSITION_METRIC) == []  # no journal position outside a worker host: no marker
        params = writer.client.get_run(writer.run_id).data.params
        assert params["3DBall_team_0.trainer_type"] == "ppo"
        assert params["3DBall_team_0.hyperparameters.batch_size"] == "64"
        assert params["3DBall_team_0.hyperparameters.long"] == "x" * 6000
        local = writer.client.download_artifacts(writer.run_id, "text/runs/a/notes/step_000000007.txt")
        with open(local, encoding="utf-8") as handle:
            assert handle.read() == "hello"
    finally:
        writer.close()
    assert writer.client.get_run(writer.run_id).info.status == "FINISHED"


def test_metric_names_mlflow_accepts():
    assert metric_name("3DBall?team=0/Losses/Value Loss") == "3DBall_team_0/Losses/Value Loss"
    assert metric_name("a//b/./c/") == "a/_/b/_/c/_"
    assert len(metric_name("k" * 400)) == 250


def test_a_killed_writer_s_successor_logs_each_point_once(options):
    [first] = get_mlflow_writer(options)
    deliver(first, 100, "C", {"a": StatsSummary([1.0], AVERAGE)}, 1)
    deliver(first, 200, "C", {"a": StatsSummary([2.0], AVERAGE)}, 2)
    first.flush()  # stored: the host would commit its cursor past 200 now
    deliver(first, 300, "C", {"a": StatsSummary([3.0], AVERAGE)}, 3)  # pending, lost by the kill
    kill(first)

    [second] = get_mlflow_writer(options)
    assert second.run_id == first.run_id  # the same run, found again by its tag
    assert second.stored == (200, 1)
    # The host replays from its cursor; a replay of an entry the run holds is skipped.
    deliver(second, 200, "C", {"a": StatsSummary([2.0], AVERAGE)}, 2)
    deliver(second, 300, "C", {"a": StatsSummary([3.0], AVERAGE)}, 3)
    # A late SummaryWriter value: a second summary at step 3 (a new entry), kept.
    deliver(second, 400, "C", {"a": StatsSummary([30.0], AVERAGE)}, 3)
    # A summary too big for one batch, cut short by a kill between its batches.
    big = {f"k{i}": StatsSummary([float(i)], AVERAGE) for i in range(1500)}
    calls = []
    real = second.client.log_batch

    def first_batch_only(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real(*args, **kwargs)

    second.client.log_batch = first_batch_only
    with pytest.raises(KeyboardInterrupt):
        deliver(second, 500, "C", big, 4)  # past 1,000 pending metrics write_stats sends them
    kill(second)

    [third] = get_mlflow_writer(options)
    try:
        # A batch: 999 metrics and the marker; the first held the two pending points of 300 and 400.
        assert third.stored == (500, 997)
        deliver(third, 400, "C", {"a": StatsSummary([30.0], AVERAGE)}, 3)
        deliver(third, 500, "C", big, 4)
        third.flush()
        assert history(third, "C/a") == [(1, 1.0), (2, 2.0), (3, 3.0), (3, 30.0)]
        for i in (0, 996, 997, 1499):
            assert history(third, f"C/k{i}") == [(4, float(i))]
    finally:
        third.close()
