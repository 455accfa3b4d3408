"""Listing plugins from entry-point metadata, without importing them.

The collector uses this to know which plugins exist; nothing here runs plugin
code (the daemon must never import it).  ``entry_points(group=...)`` is the
selection API that works on every supported Python, unlike the dict API
ML-Agents uses, which broke on Python 3.12.
"""

from __future__ import annotations

import logging
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import importlib_metadata

from .groups import STATS_WRITER_GROUPS

logger = logging.getLogger(__name__)


class PluginInfo(NamedTuple):
    """One discovered plugin: an entry point in one of the stats-writer groups."""

    group: str
    name: str
    target: str
    """``module:function`` of the registration function."""
    distribution: Optional[str]
    version: Optional[str]

    def as_dict(self) -> Dict[str, Optional[str]]:
        return self._asdict()


def _distribution_of(entry_point: importlib_metadata.EntryPoint) -> Tuple[Optional[str], Optional[str]]:
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None, None
    # .get, not ["Name"]: one distribution with broken metadata must not hide
    # every other plugin (importlib_metadata raises KeyError for a missing field).
    metadata = dist.metadata
    return metadata.get("Name"), metadata.get("Version")


def discover_plugins(groups: Iterable[str] = STATS_WRITER_GROUPS) -> List[PluginInfo]:
    """Every plugin of ``groups``, in group order then name order.

    When the same entry point is visible twice (an installed and an editable
    copy of one distribution), only the first on ``sys.path`` is kept.
    """
    found: List[PluginInfo] = []
    for group in groups:
        seen = set()
        for entry_point in sorted(importlib_metadata.entry_points(group=group), key=lambda ep: ep.name):
            if entry_point.name in seen:
                continue
            seen.add(entry_point.name)
            distribution, version = _distribution_of(entry_point)
            found.append(PluginInfo(group, entry_point.name, entry_point.value, distribution, version))
    return found


def find_plugin(name: str, group: Optional[str] = None) -> PluginInfo:
    """The plugin called ``name`` (optionally ``group:name``); raises ``PluginError``."""
    from .errors import PluginError

    if group is None and ":" in name and name.split(":", 1)[0] in STATS_WRITER_GROUPS:
        group, name = name.split(":", 1)
    matches = [p for p in discover_plugins() if p.name == name and (group is None or p.group == group)]
    if not matches:
        known = ", ".join(sorted({p.name for p in discover_plugins()})) or "none"
        raise PluginError(name, f"no such plugin in {STATS_WRITER_GROUPS}; installed: {known}")
    if len(matches) > 1:
        groups = ", ".join(p.group for p in matches)
        raise PluginError(name, f"the name is registered in several groups ({groups}); say group:name")
    return matches[0]
