"""The add_hparams calls torch's SummaryWriter and statbus's get (imported by the tests; run as their
child: ``python hparams_sequence.py statbus LOG_DIR``)."""

from __future__ import annotations

import sys

SESSIONS = ("a", "b", "c")


def hparams_calls(writer, np, statbus: bool) -> None:
    """Three sessions: numbers, strings, bools, a numpy number, a discrete domain, a step, None
    left out; the last named with tensorboardX's ``name=`` through statbus."""
    writer.add_hparams({"lr": 0.1, "batch": 32, "optimizer": "adam", "nesterov": True, "unused": None},
                       {"hp/return": 195.5, "hp/loss": 0.25}, run_name="a")
    writer.add_hparams({"lr": np.float64(0.01), "batch": 64, "optimizer": "sgd", "nesterov": False},
                       {"hp/return": 120.0, "hp/loss": 0.5}, hparam_domain_discrete={"optimizer": ["adam", "sgd"]},
                       run_name="b", global_step=7)
    hparams, metrics = {"lr": 0.001, "batch": 16, "optimizer": "adam", "nesterov": True}, {"hp/return": -3.0}
    if statbus:
        writer.add_hparams(hparams, metrics, name="c", global_step=2)
    else:
        writer.add_hparams(hparams, metrics, run_name="c", global_step=2)


def main(kind: str, log_dir: str) -> None:
    import numpy as np

    from statbus.pipeline import SummaryWriter

    assert kind == "statbus", kind
    writer = SummaryWriter(log_dir)
    hparams_calls(writer, np, statbus=True)
    assert "torch" not in sys.modules and "tensorboard" not in sys.modules, "add_hparams loads no torch or tensorboard"
    writer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
