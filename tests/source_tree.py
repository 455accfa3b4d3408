"""The program's modules as the source tree has them: what the import-floor test parses
and what the packaging test expects every wheel to hold."""

from __future__ import annotations

import os
from typing import Dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = {"statbus.plugins": "plugins", "statbus.workers": "workers", "statbus.pipeline": "pipeline"}
SKIP_DIRS = {"examples", "__pycache__"}  # plugins/examples is a distribution of its own


def source_modules() -> Dict[str, str]:
    """Dotted module name → file, for every module of the three packages."""
    found: Dict[str, str] = {}
    for package, folder in FOLDERS.items():
        root = os.path.join(REPO, folder)
        for directory, subdirs, files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d not in SKIP_DIRS)
            parts = os.path.relpath(directory, root).split(os.sep)
            prefix = package if parts == ["."] else ".".join([package, *parts])
            for name in files:
                if name.endswith(".py"):
                    found[prefix if name == "__init__.py" else f"{prefix}.{name[:-3]}"] = os.path.join(directory, name)
    return found
