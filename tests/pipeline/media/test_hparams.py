"""add_hparams through statbus against torch's writer, as TensorBoard's HParams dashboard reads it:
a real ``tensorboard`` server answers its plugin's session-groups request over both logdirs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np

import hparams_sequence
from hparams_sequence import SESSIONS
from summary_writer_helpers import run_child, start_collector, stop
from waiting import wait_for

HPARAMS = ("lr", "batch", "optimizer", "nesterov")
METRICS = ("hp/return", "hp/loss")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def session_groups(logdir: str) -> dict:
    """A ``tensorboard`` server over ``logdir``: its HParams plugin's answer to the dashboard's
    session-groups request, every hyperparameter and metric as a column."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
                               "--port", str(port), "--load_fast", "false", "--reload_interval", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    request = {"startIndex": 0, "sliceSize": 100, "includeMetrics": True,
               "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
               "colParams": [{"hparam": name} for name in HPARAMS]
               + [{"metric": {"tag": tag}} for tag in METRICS]}

    def answered():
        assert server.poll() is None, server.communicate()[1][-4000:]
        try:
            return post(f"{base}/data/plugin/hparams/session_groups", request)
        except (urllib.error.URLError, ConnectionError):
            return None

    try:
        # --reload_interval 0 loads the logdir once, before the server answers.
        return wait_for(answered, timeout=120, what="tensorboard's session_groups answer")
    finally:
        server.kill()
        server.wait()
        server.stderr.close()


def sessions_of(answer: dict, prefix: str) -> dict:
    """session name (its run, under ``prefix``) → (status, hyperparameters, metric values by tag)."""
    found = {}
    for group in answer.get("sessionGroups", []):
        for session in group["sessions"]:
            if session["name"].startswith(prefix):
                metrics = {m["name"]["tag"]: (m["name"].get("group", ""), m["value"], m.get("trainingStep", 0))
                           for m in session["metricValues"]}
                found[session["name"][len(prefix):]] = (session.get("status"), group["hparams"], metrics)
    return found


def test_the_hparams_dashboard_shows_statbus_sessions_as_torchs(tmp_path):
    """torch's writer and statbus's (in a child, through a real collector) make the same three
    sessions: the same hyperparameters, statuses and final metric values at the same steps."""
    from torch.utils.tensorboard import SummaryWriter as TorchWriter

    torch_writer = TorchWriter(str(tmp_path / "logs" / "torch" / "exp1"))
    hparams_sequence.hparams_calls(torch_writer, np, statbus=False)
    torch_writer.close()
    collector = start_collector(str(tmp_path / "logs" / "statbus"), "runs")
    try:
        run_child("statbus", str(tmp_path / "logs" / "statbus" / "runs" / "exp1"), script=hparams_sequence.__file__)
        stop(collector)
    finally:
        collector.close()
    answer = session_groups(str(tmp_path / "logs"))
    want, got = sessions_of(answer, "torch/exp1/"), sessions_of(answer, "statbus/runs/exp1/")
    assert sorted(want) == sorted(got) == list(SESSIONS), answer
    for name in SESSIONS:
        assert got[name] == want[name], name
    assert want["a"][1] == {"lr": 0.1, "batch": 32.0, "optimizer": "adam", "nesterov": 1.0}
    assert want["b"][2]["hp/return"][1:] == (120.0, 7)
    assert want["c"][0] == "STATUS_SUCCESS" and set(want["c"][2]) == {"hp/return"}

