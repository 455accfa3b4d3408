"""``statbus plugins`` — list every installed stats-writer plugin.

Reads entry-point metadata only: nothing listed is imported, so a broken
plugin cannot break the listing (it fails later, in its own worker).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Sequence

from ...plugins.discovery import PluginInfo, discover_plugins
from ...plugins.groups import STATS_WRITER_GROUPS
from ...workers.exits import ExitCode

COLUMNS = ("group", "name", "target", "distribution", "version")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list the installed stats-writer plugins",
        description="List every plugin registered in the entry-point groups "
        + " and ".join(STATS_WRITER_GROUPS)
        + ": group, name, target (module:registration function), and the distribution "
        "and version that provide it. Only package metadata is read; no plugin code is "
        "imported or run.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of objects with the keys " + ", ".join(COLUMNS),
    )
    parser.set_defaults(func=run)


def format_table(plugins: Sequence[PluginInfo]) -> str:
    """An aligned text table of ``plugins``, one row each, with a header."""
    rows: List[Sequence[str]] = [[c.upper() for c in COLUMNS]]
    rows += [[getattr(p, c) or "-" for c in COLUMNS] for p in plugins]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def run(args: argparse.Namespace) -> int:
    plugins = discover_plugins()
    if args.json:
        json.dump([p.as_dict() for p in plugins], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif plugins:
        print(format_table(plugins))
    else:
        print("no stats-writer plugins installed (groups: " + ", ".join(STATS_WRITER_GROUPS) + ")")
    return ExitCode.OK
