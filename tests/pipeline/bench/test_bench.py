"""Smoke test of the benchmark: the smallest configuration of every figure, end to end.

Speed is the benchmark's business, never a test's: nothing here asserts a
time.  It checks that every figure is measured, that the JSON carries the
figures, the targets and the versions, and that the run leaves no process behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from statbus.pipeline.bench.args import FIGURES
from statbus.pipeline.cli.main import build_parser

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
SCRIPT = os.path.join(REPO, "scripts", "bench.py")


def _processes_mentioning(text: str) -> list:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
        except (psutil.Error, TypeError):
            continue
        if proc.pid != os.getpid() and (text in cmdline or environ.get("TMPDIR") == text):
            found.append((proc.pid, cmdline))
    return found


def test_smoke_run_measures_every_figure_and_cleans_up(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("STATBUS_ADDRESS", None)
    # The frameworks and media figures (torch's writers) have their own smoke tests (test_summary_writer_bench.py).
    figures = [name for name in FIGURES if name not in ("frameworks", "media")]
    proc = subprocess.Popen([sys.executable, SCRIPT, "--smoke", "--only", ",".join(figures), "--json", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=110)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    document = json.loads(out.read_text(encoding="utf-8"))
    assert set(document["figures"]) == set(figures)
    for key in ("machine", "python", "packages", "config", "targets"):
        assert document[key], key
    assert document["packages"]["pyzmq"] and document["python"]["version"]

    figures = document["figures"]
    hot = figures["hotpath"]
    assert set(hot) == {"normal", "sleepy", "raising", "down"}
    for scenario in ("normal", "sleepy", "raising"):
        assert hot[scenario]["baseline"]["add_stat_ns"] > 0
        assert hot[scenario]["statbus"]["write_stats_us"]["p50"] > 0
    # The behaviours the figures stand for (counts, not times): the baseline's raising
    # writer raises into training on every write_stats, statbus's never does.
    raising = hot["raising"]
    assert raising["baseline"]["raised_into_training"] == raising["baseline"]["write_stats_calls"] > 0
    assert all(hot[s]["statbus"]["raised_into_training"] == 0 for s in hot)

    for workload in ("values", "summaries"):
        runs = figures["throughput"][workload]["1"]
        assert runs["values"] > 0 and runs["frames"] > 0
        assert runs["acked_values_per_s"] > 0 and runs["raw_values_per_s"] > 0
    recovery = figures["recovery"]
    assert recovery["worker_kills"] == 1 and recovery["collector_kills"] == 1
    memory = figures["memory"]
    assert memory["collector"]["all_flushed"] and memory["collector"]["collector_rss_peak_mb"] > 0
    assert memory["trainer"]["overflowed"] and memory["trainer"]["values_dropped"] > 0
    startup = figures["startup"]
    assert startup["heavy_modules_imported"] == []  # a trainer never imports a writer or tensorboard

    # One row per target with a mark, and the table printed.
    marked = [row for row in document["targets"] if row["passed"] is not None]
    assert len(marked) >= 10
    assert "PASS" in stdout or "FAIL" in stdout
    assert "import statbus.pipeline" in stdout
    # Every process the benchmark started is gone.
    assert _processes_mentioning(str(tmp_path)) == []


def test_statbus_bench_subcommand_is_registered():
    parser = build_parser()
    args = parser.parse_args(["bench", "--quick", "--only", "startup", "--json", "x.json"])
    assert args.command == "bench" and args.quick and args.only == "startup" and callable(args.func)


def test_unknown_figure_is_refused(capsys):
    from statbus.pipeline.bench.main import main

    assert main(["--only", "nonsense"]) == 2
    assert "unknown figures" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["null", "sleepy", "raiser", "stall"])
def test_bench_writers_register(name):
    import importlib

    from statbus.pipeline.bench.writers import ENTRY_POINTS
    from statbus.plugins import RunOptions, StatsWriter

    module, function = ENTRY_POINTS[name].split(":")
    writers = getattr(importlib.import_module(module), function)(
        RunOptions.create("r", "results").with_plugin_options({"write_sleep": 0.0}))
    assert writers and all(isinstance(w, StatsWriter) for w in writers)
