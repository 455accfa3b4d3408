"""Smoke tests of the benchmark's figure 6 (issues 14 and 23): measured end to end; no time asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from collector_helpers import REPO

SCRIPT = os.path.join(REPO, "scripts", "bench.py")


def run_smoke(figure: str, tmp_path, timeout: float) -> "tuple[dict, str]":
    """``bench.py --smoke --only figure`` to its end (killed and reaped past ``timeout``): its JSON figure and stdout."""
    out = tmp_path / "bench.json"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("STATBUS_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, SCRIPT, "--smoke", "--only", figure, "--json", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))["figures"][figure], stdout


@pytest.mark.timeout(240)
def test_frameworks_figure_measures_torch_tensorboardx_and_statbus(tmp_path):
    figure, stdout = run_smoke("frameworks", tmp_path, 220)
    assert "skipped" not in figure  # torch and tensorboardX are test dependencies
    for scenario in ("normal", "sleepy"):
        for kind in ("torch", "tensorboardX", "statbus"):
            assert figure[scenario][kind]["ns_per_call"] > 0 and figure[scenario][kind]["cpu_ns_per_call"] > 0
    assert "6 frameworks" in stdout and "≤ 1/10 torch" in stdout


def test_frameworks_figure_is_skipped_with_the_reason_without_torch(monkeypatch, tmp_path):
    from statbus.pipeline.bench.figures import frameworks as bench_frameworks
    from statbus.pipeline.bench.report import frameworks_rows

    monkeypatch.setattr(bench_frameworks, "missing", lambda: ["torch"])
    figure = bench_frameworks.run(str(tmp_path), bench_frameworks.FrameworksConfig())
    assert figure == {"skipped": "torch not installed (pip install -e '.[frameworks]')"}
    assert frameworks_rows(figure)[0].statbus == "skipped"


@pytest.mark.timeout(300)
def test_media_figure_measures_every_call_and_the_videos_end_to_end(tmp_path):
    figure, stdout = run_smoke("media", tmp_path, 280)
    assert "skipped" not in figure  # torch, tensorboardX, matplotlib and moviepy are test dependencies
    from statbus.pipeline.bench.figures.media import CALLS, NOT_MEASURED

    for scenario, kinds in (("normal", ("torch", "tensorboardX", "statbus")), ("sleepy", ("statbus",))):
        for kind in kinds:
            for name in CALLS:
                if (kind, name) not in NOT_MEASURED:
                    assert figure[scenario][kind][name]["cpu_ms_per_call"] > 0, (scenario, kind, name)
    # Every video sent lands in the event file, read back with TensorBoard's reader.
    assert figure["e2e"]["landed"] == figure["e2e"]["videos"] == 2
    assert figure["e2e"]["worker_cpu_ms_per_video"] > 0
    assert "6 media" in stdout and "≤ 1/100 torch" in stdout
