"""Train through ML-Agents' real ``mlagents.trainers.learn`` path on :mod:`learn_env`.

    python learn_driver.py statbus|plain REPORT.json MLAGENTS-LEARN-ARGS...

``statbus`` calls ``statbus.pipeline.learn(args)``; ``plain`` does what
``mlagents-learn`` does (``run_cli(parse_command_line(args))``).  Either way
the environment factory is replaced first, and when training starts the
report records what the training process holds: its stats writers and which
plugin modules it imported.  The exit code is the launcher's.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import learn_env  # noqa: E402
from mlagents.trainers import learn as ml_learn  # noqa: E402
from mlagents.trainers.stats import StatsReporter  # noqa: E402
from mlagents.trainers.trainer_controller import TrainerController  # noqa: E402

PLUGIN_MODULE_PREFIXES = (
    "statbus_zoo", "statbus_mlzoo", "statbus_example_plugin", "statbus.plugins.console",
    "statbus.plugins.tensorboard_writer", "statbus.plugins.gauges", "statbus.plugins.jsonl",
    "statbus.plugins.writers",
)


def _legacy_onnx_export() -> None:
    """torch 2.13's ``torch.onnx.export`` defaults to ``dynamo=True`` (needs onnxscript, and gives
    another graph); ML-Agents 1.1.0's final model export expects the TorchScript exporter."""
    import functools

    import torch.onnx

    export = torch.onnx.export

    @functools.wraps(export)
    def legacy(*args, **kwargs):  # noqa: ANN002, ANN003
        kwargs.setdefault("dynamo", False)
        return export(*args, **kwargs)

    torch.onnx.export = legacy


def main() -> int:
    mode, report_path, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    _legacy_onnx_export()
    ml_learn.create_environment_factory = learn_env.factory
    start_learning = TrainerController.start_learning

    def recording_start(self, env_manager):  # noqa: ANN001
        report = {
            "pid": os.getpid(),
            "writers": [f"{type(w).__module__}.{type(w).__qualname__}" for w in StatsReporter.writers],
            "plugin_modules": sorted(
                name for name in sys.modules if name.startswith(PLUGIN_MODULE_PREFIXES)
            ),
        }
        with open(report_path, "w", encoding="utf-8") as handle:
            json.dump(report, handle)
        return start_learning(self, env_manager)

    TrainerController.start_learning = recording_start
    if mode == "statbus":
        import statbus.pipeline

        return statbus.pipeline.learn(args)
    ml_learn.run_cli(ml_learn.parse_command_line(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
