"""The benchmark's command-line options, kept apart so that building ``statbus``'s parser stays cheap."""

from __future__ import annotations

import argparse

FIGURES = ("startup", "hotpath", "throughput", "recovery", "memory", "frameworks", "learn", "idle")
"""The benchmark's figures, in the order they run."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smaller loads, fewer repetitions (figures 1-6 and 8 in about a minute; 7, real training, a few more)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="PATH", help="also write every figure, the targets and versions as JSON")
    parser.add_argument("--only", metavar="A,B", help=f"run only these figures ({', '.join(FIGURES)})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run directories")
