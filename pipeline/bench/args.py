"""The benchmark's command-line options, kept apart so that building ``statbus``'s parser stays cheap."""

from __future__ import annotations

import argparse

FIGURES = ("startup", "hotpath", "throughput", "recovery", "memory", "frameworks", "media", "learn", "idle", "scale", "soak")
"""The benchmark's figures, in the order they run."""


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smaller loads, fewer repetitions (figures 1-6 and 8 in about a minute; 7, real training, a few more)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="PATH", help="also write every figure, the targets and versions as JSON")
    parser.add_argument("--only", metavar="A,B", help=f"run only these figures ({', '.join(FIGURES)})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run directories")
    parser.add_argument("--learn-pairs", metavar="N", type=_at_least_one, default=None,
                        help="alternated mlagents-learn/statbus learn pairs per set-up of figure 7 "
                             "(default 5, --quick 3): more pairs pin a noisy machine's ratio down closer")
    parser.add_argument("--seed", metavar="N", type=int, default=None,
                        help="the soak's seed: the same seed replays the same kills of the same victims "
                             "(default: a new one, printed with the figure)")
    parser.add_argument("--soak-restart-by", choices=("script", "trainers"), default=None,
                        help="who starts the soak's collector again after each kill: the soak itself, as a script "
                             "or service manager would (default), or the trainers (a client starts one whenever "
                             "none serves its run)")
