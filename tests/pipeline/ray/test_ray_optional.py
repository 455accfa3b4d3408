"""Ray stays optional: nothing imports it unasked, and without it every Ray feature says, in one line,
what to install.  Plus the Tune callback's choice of values, as logic."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Optional

import pytest

INSTALL = "pip install 'statbus[ray]'"
# Run with Ray made unimportable, as on a machine without the extra.
NO_RAY = "import sys; sys.modules['ray'] = None\n"


def _python(code: str, cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_the_trainer_side_and_the_commands_do_not_import_ray():
    done = _python(
        "import sys\n"
        "import statbus.pipeline, statbus.pipeline.ray\n"
        "from statbus.pipeline.cli.main import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("argv", [
    ["collector", "start", "--ray", "--run-id", "r"],
    ["collector", "stop", "--ray", "--run-id", "r"],
    ["status", "--ray", "--run-id", "r"],
])
def test_each_ray_command_without_ray_says_what_to_install_in_one_line(argv, tmp_path):
    done = _python(NO_RAY + f"from statbus.pipeline.cli.main import main\nsys.exit(main({argv!r}))\n", str(tmp_path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and INSTALL in lines[0], done.stderr
    assert os.listdir(tmp_path) == []  # nothing started, nothing written


@pytest.mark.parametrize("name", ["StatbusCallback", "start_collector", "stop_collector", "collector_status"])
def test_each_ray_name_without_ray_raises_what_to_install(name):
    done = _python(
        NO_RAY
        + "import statbus.pipeline.ray as r\n"
        + "try:\n"
        + f"    getattr(r, {name!r})('run') if {name!r} != 'StatbusCallback' else r.StatbusCallback\n"
        + "except r.RayMissing as exc:\n"
        + "    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr
    assert INSTALL in done.stdout and len(done.stdout.strip().splitlines()) == 1


def test_a_ray_trainer_without_ray_logs_what_to_install_and_keeps_training():
    done = _python(
        NO_RAY
        + "import logging, statbus.pipeline as sp\n"
        + "from statbus.pipeline.trainer.ray_discovery import discover\n"
        + "from statbus.pipeline.trainer.config import build_config\n"
        + "logging.basicConfig(level=logging.WARNING)\n"
        + "config = build_config(run_id='r', ray=True, environ={})\n"
        + "print(discover(config))\n"
        + "sp.configure(run_id='r', ray=True)\n"
        + "sp.StatsReporter('c').add_stat('k', 1.0)\n"
        + "print(sp.flush(0.3))\n"
        + "sp.shutdown(0.1)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "False"]
    assert INSTALL in done.stderr


def test_statbus_ray_in_the_environment_turns_discovery_on():
    from statbus.pipeline.trainer.config import build_config

    assert build_config(environ={"STATBUS_RAY": "1"}).ray is True
    assert build_config(environ={"STATBUS_RAY": "0"}).ray is False
    assert build_config(environ={}).ray is False
    assert build_config(ray=True, environ={"STATBUS_RAY": "0"}).ray is True


def test_the_tune_callback_sends_the_trainables_numbers_only():
    import numpy
    from statbus.pipeline.ray.tune_callback import _numbers

    result = {
        "loss": 0.5, "steps": 3, "np": numpy.float32(0.25), "flag": True, "name": "x", "bad": math.nan,
        "inf": math.inf, "nested": {"a": 1.0, "deeper": {"b": 2}}, "training_iteration": 4, "time_total_s": 1.0,
        "timestamp": 17, "pid": 123, "done": False, "trial_id": "abc", "config": {"lr": 0.1}, "date": "today",
    }
    assert dict(_numbers(result)) == {"loss": 0.5, "steps": 3.0, "np": 0.25, "nested/a": 1.0, "nested/deeper/b": 2.0}


def test_the_collector_is_pinned_to_the_named_node_the_resource_holder_or_ours():
    from types import SimpleNamespace

    from statbus.plugins import ConfigError
    from statbus.pipeline.ray.control import _placement

    nodes = [
        {"NodeID": "n1", "Alive": True, "Resources": {"CPU": 2.0}},
        {"NodeID": "n2", "Alive": True, "Resources": {"CPU": 1.0, "statbus": 1.0}},
        {"NodeID": "n3", "Alive": False, "Resources": {"statbus": 1.0, "disk": 1.0}},
    ]
    fake = SimpleNamespace(nodes=lambda: nodes, get_runtime_context=lambda: SimpleNamespace(get_node_id=lambda: "n1"))
    assert _placement(fake, None, None) == "n1"
    assert _placement(fake, "n2", None) == "n2"
    assert _placement(fake, None, "statbus") == "n2"
    for node_id, resource, says in (("n3", None, "no alive node"), (None, "disk", "custom resource 'disk'"),
                                    ("n1", "statbus", "not both")):
        with pytest.raises(ConfigError, match=says):
            _placement(fake, node_id, resource)
