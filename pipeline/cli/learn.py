"""``statbus learn ARGS...``: ``mlagents-learn ARGS...`` with every stats writer out of process.

:func:`statbus.pipeline.cli.main` hands ``learn``'s arguments here untouched
(they are ML-Agents', ``--help`` included); the parser below only lists the
command in ``statbus --help``.
"""

from __future__ import annotations

import argparse
from typing import List


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser(
        "learn",
        help="run mlagents-learn with the same arguments; its stats writers run out of process",
        description="Runs ML-Agents' mlagents-learn in this process with the same arguments "
        "(see `statbus learn --help` for them); the run's collector runs statbus's TensorBoard, "
        "gauges and console writers in place of ML-Agents' own, and every other stats-writer plugin "
        "in a worker of its own.",
        add_help=False,
    )


def run_learn(argv: List[str]) -> int:
    from ..mlagents.launcher import learn

    return learn(argv)
