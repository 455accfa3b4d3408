"""``statbus plugins`` — list every installed stats-writer plugin.

Reads entry-point metadata only: nothing listed is imported, so a broken
plugin cannot break the listing (it fails later, in its own worker).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence

from ...plugins.discovery import PluginInfo, discover_plugins
from ...plugins.groups import REPLACED_PLUGINS, STATS_WRITER_GROUPS
from ...plugins.opt_in import missing_modules, opt_in_of
from ...workers.exits import ExitCode

COLUMNS = ("group", "name", "target", "distribution", "version", "default")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="list the installed stats-writer plugins",
        description="List every plugin registered in the entry-point groups "
        + " and ".join(STATS_WRITER_GROUPS)
        + ": group, name, target (module:registration function), the distribution "
        "and version that provide it, and whether a collector runs it by default ('on', or "
        "'off' with the environment variable that turns it on and the extra it needs when its "
        "library is missing; a config table [plugins.NAME] with enabled = true turns it on too). "
        "Only package metadata is read; no plugin code is imported or run.",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of objects with the keys " + ", ".join(COLUMNS),
    )
    parser.set_defaults(func=run)


def default_state(plugin: PluginInfo) -> str:
    """``on``, or ``off (...)`` saying what turns on a plugin that is off until asked for."""
    if f"{plugin.group}:{plugin.name}" in REPLACED_PLUGINS:
        return f"off (statbus's built-in writers replace it; name it in --plugins to run it)"
    opt_in = opt_in_of(plugin.group, plugin.name)
    if opt_in is None:
        return "on"
    needs = f"; not installed: {opt_in.install_hint}" if missing_modules(opt_in) else ""
    return f"off ({opt_in.env}=1{needs})"


def _row(plugin: PluginInfo) -> Dict[str, Optional[str]]:
    return {**plugin.as_dict(), "default": default_state(plugin)}


def format_table(plugins: Sequence[PluginInfo]) -> str:
    """An aligned text table of ``plugins``, one row each, with a header."""
    rows: List[Sequence[str]] = [[c.upper() for c in COLUMNS]]
    rows += [[_row(p)[c] or "-" for c in COLUMNS] for p in plugins]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def run(args: argparse.Namespace) -> int:
    plugins = discover_plugins()
    if args.json:
        json.dump([_row(p) for p in plugins], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif plugins:
        print(format_table(plugins))
    else:
        print("no stats-writer plugins installed (groups: " + ", ".join(STATS_WRITER_GROUPS) + ")")
    return ExitCode.OK
