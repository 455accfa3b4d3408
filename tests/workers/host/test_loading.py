"""Loading the host's one plugin (workers/host/loading.py): its entry point imported in a fresh
process, its writers registered, and each way that fails turned into the host's exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Optional

import pytest

from collector_helpers import REPO
from statbus.plugins import RunOptions
from statbus.workers.exits import ExitCode
from zoo import zoo_env, zoo_plugin

LOAD = textwrap.dedent(
    """
    import json, sys
    from statbus.workers.exits import HostExit
    from statbus.workers.host.config import HostConfig
    from statbus.workers.host.loading import load_plugin
    from statbus.workers.statepage import StatePage

    config = HostConfig(**json.loads(sys.argv[1]))
    with StatePage(config.state_file, create=True) as page:
        try:
            writers = load_plugin(config, page)
        except HostExit as exc:
            print(json.dumps({"code": int(exc.code), "message": exc.message}))
        else:
            print(json.dumps({"writers": [type(w).__name__ for w in writers.writers]}))
    """
)


def load(tmp_path, group: str, name: str, target: str, run_options: Optional[Dict[str, Any]] = None,
         pythonpath: str = "") -> Dict[str, Any]:
    """What load_plugin makes of the entry point, in a process of its own (it imports the plugin)."""
    config = {
        "plugin": name, "group": group, "target": target, "address": "ipc://unused",
        "state_file": str(tmp_path / f"{name}.state"),
        "run_options": RunOptions.create("run", results_dir=str(tmp_path)).as_dict() if run_options is None
        else run_options,
    }
    env = zoo_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, REPO, env["PYTHONPATH"]) if p)
    done = subprocess.run([sys.executable, "-c", LOAD, json.dumps(config)], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_zoo(tmp_path, name: str, **kwargs: Any) -> Dict[str, Any]:
    plugin = zoo_plugin(name)
    return load(tmp_path, plugin.group, plugin.name, plugin.target, **kwargs)


def test_a_plugin_is_imported_and_its_writers_registered(tmp_path) -> None:
    assert load_zoo(tmp_path, "good") == {"writers": ["FileWriter"]}
    assert load_zoo(tmp_path, "recorder", run_options=RunOptions.create("run", results_dir=str(tmp_path))
                    .with_plugin_options({"writers": 3}).as_dict()) == {"writers": ["Recorder"] * 3}


@pytest.mark.parametrize("name, code, words", [
    ("import_error", ExitCode.IMPORT_FAILURE, "fails to import on purpose"),
    ("register_raises", ExitCode.REGISTRATION_FAILURE, "raises in its registration function"),
    ("not_a_writer", ExitCode.REGISTRATION_FAILURE, "not a StatsWriter"),
])
def test_each_failure_to_load_has_its_exit_code(tmp_path, name, code, words) -> None:
    result = load_zoo(tmp_path, name)
    assert result["code"] == code and words in result["message"], result


def test_bad_run_options_are_a_bad_config(tmp_path) -> None:
    result = load_zoo(tmp_path, "good", run_options={"run_id": "run", "nope": 1})
    assert result["code"] == ExitCode.BAD_CONFIG and result["message"].startswith("bad run options: "), result


def test_a_plugin_calling_sys_exit_at_import_is_an_import_failure(tmp_path) -> None:
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(3)\n")
    result = load(tmp_path, "statbus.stats_writer", "exiter", "exits_at_import:register", pythonpath=str(tmp_path))
    assert result == {"code": ExitCode.IMPORT_FAILURE, "message": "plugin 'exiter' called sys.exit(3)"}
