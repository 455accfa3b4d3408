"""``statbus bench`` — statbus's benchmark (same as ``scripts/bench.py``)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure the trainer hot path, throughput, recovery, memory, start-up, the SummaryWriter, statbus learn and an idle collector",
        description="Run statbus's benchmark: every comparison measured in the same run, A and B "
        "alternated, medians of repetitions; prints a table with a pass/fail mark per target.",
    )
    # The bench modules (and the baseline's writers) load only when the command runs.
    from ..bench.args import add_arguments

    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.main import run as run_bench

    return run_bench(args)
