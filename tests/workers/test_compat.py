"""mlagents module aliases: provided where mlagents is absent, left alone where it is present.

Each case runs in a fresh interpreter: aliases live in ``sys.modules`` and must
not leak into the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

ABSENT = textwrap.dedent(
    """
    import importlib, importlib.util, json, sys
    from statbus.workers.compat import aliases_installed, install_mlagents_aliases
    assert importlib.util.find_spec("mlagents") is None
    first = install_mlagents_aliases()
    import mlagents.trainers.settings
    import mlagents.trainers.stats as stats_module
    from mlagents.trainers.stats import StatsAggregationMethod, StatsPropertyType, StatsSummary, StatsWriter
    from mlagents.trainers.settings import RunOptions
    from mlagents.plugins import ML_AGENTS_STATS_WRITER
    import statbus.plugins as sp
    second = install_mlagents_aliases()

    class W(StatsWriter):
        def write_stats(self, category, values, step):
            pass

    print(json.dumps({
        "first": first,
        "second": second,
        "installed": aliases_installed(),
        "same_writer": StatsWriter is sp.StatsWriter,
        "same_summary": StatsSummary is sp.StatsSummary,
        "same_enums": StatsAggregationMethod is sp.StatsAggregationMethod
            and StatsPropertyType is sp.StatsPropertyType,
        "same_run_options": RunOptions is sp.RunOptions
            and mlagents.trainers.settings.RunOptions is sp.RunOptions,
        "attribute_path": mlagents.trainers.stats is stats_module,
        "group": ML_AGENTS_STATS_WRITER,
        "find_spec": importlib.util.find_spec("mlagents.trainers.stats") is not None,
        "reimport": importlib.import_module("mlagents.trainers.stats") is stats_module,
        "subclass_ok": isinstance(W(), sp.StatsWriter),
    }))
    """
)


def _run(code: str, env: dict | None = None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_aliases_provide_the_mlagents_modules_plugins_import():
    # Where the real mlagents is installed (the test environment has it), the interpreter
    # is made to see none: a None in sys.modules is what find_spec reports as absent.
    out = _run("import sys; sys.modules['mlagents'] = None\n" + ABSENT)
    assert out == {
        "first": True,
        "second": True,
        "installed": True,
        "same_writer": True,
        "same_summary": True,
        "same_enums": True,
        "same_run_options": True,
        "attribute_path": True,
        "group": "mlagents.stats_writer",
        "find_spec": True,
        "reimport": True,
        "subclass_ok": True,
    }


PRESENT = textwrap.dedent(
    """
    import json
    from statbus.workers.compat import aliases_installed, install_mlagents_aliases
    installed = install_mlagents_aliases()
    import mlagents
    from mlagents.trainers.stats import StatsWriter
    print(json.dumps({
        "installed": installed,
        "flag": aliases_installed(),
        "fake": getattr(mlagents, "FAKE_MLAGENTS", False),
        "writer_module": StatsWriter.__module__,
    }))
    """
)


def test_real_mlagents_is_left_alone(tmp_path):
    package = tmp_path / "fake" / "mlagents"
    (package / "trainers").mkdir(parents=True)
    (package / "__init__.py").write_text("FAKE_MLAGENTS = True\n")
    (package / "trainers" / "__init__.py").write_text("")
    (package / "trainers" / "stats.py").write_text("class StatsWriter:\n    pass\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "fake"), env.get("PYTHONPATH", "")])
    out = _run(PRESENT, env=env)
    assert out == {"installed": False, "flag": False, "fake": True, "writer_module": "mlagents.trainers.stats"}
