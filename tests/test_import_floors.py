"""The map stays true: imports point down the floors (pipeline → workers → plugins) and form no circle,
neither between modules nor between rooms (a floor's subpackages, e.g. ``pipeline/journal`` and
``pipeline/collector``: two rooms that import each other are one room in two folders).

Every module of the three packages is parsed (``ast``, nothing is imported) and
each import resolved to the statbus module it names.  Imports under
``if TYPE_CHECKING:`` never run, so they may point sideways for a type, but not
up a floor either.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from source_tree import REPO, source_modules

FLOORS = {"statbus.plugins": 1, "statbus.workers": 2, "statbus.pipeline": 3}

MODULES = source_modules()


def _floor(module: str) -> int:
    return next(floor for package, floor in FLOORS.items() if module == package or module.startswith(package + "."))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: str) -> Iterator[Tuple[str, int, bool]]:
    """``(imported statbus module, line, only for type checking)`` for each import in ``path``."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    typing_only: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            typing_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from . import keyfiles` names a module; `from .wire import X` names a module's attribute.
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "statbus":
                yield name, node.lineno, id(node) in typing_only


def _graph() -> Tuple[Dict[str, Set[str]], List[str]]:
    edges: Dict[str, Set[str]] = {module: set() for module in MODULES}
    upward: List[str] = []
    for module, path in sorted(MODULES.items()):
        for target, line, typing_only in _imports(module, path):
            if target not in MODULES:
                upward.append(f"{os.path.relpath(path, REPO)}:{line} imports {target}, which is not a statbus module")
                continue
            if _floor(target) > _floor(module):
                upward.append(f"{os.path.relpath(path, REPO)}:{line} imports {target}: up a floor "
                              f"({_floor(module)} → {_floor(target)})")
            if not typing_only and target != module:
                edges[module].add(target)
    return edges, upward


def _cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected component with more than one module (Tarjan), as a list of modules."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _room(module: str) -> str:
    """The room a module lives in: its floor's subpackage; a module at a floor's top is a room of its own.

    A floor's ``__init__`` is its public face (``statbus.pipeline``): a room inside the floor
    that imported it would import every room the face imports, so it counts as a room too.
    """
    for package in FLOORS:
        if module.startswith(package + "."):
            top = module[len(package) + 1:].split(".")
            room = f"{package}.{top[0]}"
            return room if len(top) > 1 and room in MODULES else module
    return module


def _room_graph(edges: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    rooms: Dict[str, Set[str]] = {}
    for module, targets in edges.items():
        rooms.setdefault(_room(module), set())
        for target in targets:
            rooms.setdefault(_room(target), set())
            if _room(target) != _room(module):
                rooms[_room(module)].add(_room(target))
    return rooms


def test_the_packages_are_found() -> None:
    # A broken walk would make the other tests pass vacuously.
    assert {"statbus.plugins.records", "statbus.workers.exits", "statbus.pipeline.trainer.reporter",
            "statbus.pipeline.collector.loop"} <= set(MODULES)


def test_imports_point_down_the_floors() -> None:
    _, upward = _graph()
    assert upward == [], "\n".join(upward)


def test_no_import_circle() -> None:
    edges, _ = _graph()
    cycles = _cycles(edges)
    assert cycles == [], "import circles:\n" + "\n".join(" ⇄ ".join(cycle) for cycle in cycles)


def test_no_circle_between_rooms() -> None:
    edges, _ = _graph()
    cycles = _cycles(_room_graph(edges))
    assert cycles == [], "rooms importing each other:\n" + "\n".join(" ⇄ ".join(cycle) for cycle in cycles)


def test_a_circle_between_rooms_is_caught() -> None:
    # Two modules that import each other's room but not each other (what the module check cannot see).
    edges = {"statbus.pipeline.journal.writer": {"statbus.pipeline.collector.aggregator"},
             "statbus.pipeline.collector.aggregator": set(),
             "statbus.pipeline.collector.loop": {"statbus.pipeline.journal.writer"},
             "statbus.pipeline.wire": set()}
    assert _cycles(edges) == []
    assert _cycles(_room_graph(edges)) == [["statbus.pipeline.collector", "statbus.pipeline.journal"]]


@pytest.mark.parametrize("source, bad", [
    ("from ...pipeline.wire import encode_frame\n", "up a floor"),
    ("from ..workers.exits import ExitCode\n", "up a floor"),
])
def test_an_upward_import_is_caught(tmp_path, monkeypatch, source, bad) -> None:
    # The check itself can fail: a plugins module importing a higher floor is reported.
    path = tmp_path / "probe.py"
    path.write_text(source)
    module = "statbus.plugins.writers.probe" if source.startswith("from ...") else "statbus.plugins.probe"
    monkeypatch.setitem(MODULES, module, str(path))
    _, upward = _graph()
    assert any(bad in line and "probe.py" in line for line in upward)


def test_a_circle_is_caught() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
