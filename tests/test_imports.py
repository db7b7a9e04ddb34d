"""sockkit's modules import each other in one direction: no cycles, and no lazy re-exports.

The graph counts every import in a module -- at the top, inside functions and under
``if TYPE_CHECKING`` -- because a cycle hidden behind a lazy import is still a cycle for the reader
(the getfile client's modules were held together by a module ``__getattr__`` that re-exported its
dependants). A module-level ``__getattr__`` (PEP 562) is refused for the same reason.
"""

from __future__ import annotations

import ast
from importlib import import_module
from pathlib import Path

import sockkit

ROOT = Path(sockkit.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, known: set[str]) -> set[str]:
    """The sockkit modules a module names in any import statement (``from a import b`` counts
    ``a.b`` when that is a module, else ``a``)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                         for alias in node.names)
    return found & known


def import_graph() -> dict[str, set[str]]:
    trees = {module_name(path): ast.parse(path.read_text()) for path in ROOT.rglob("*.py")}
    known = set(trees)
    return {name: imported(tree, known) - {name} for name, tree in trees.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: The one module allowed a ``__getattr__``: the public facade (docs/api.md), which loads each
#: public name on first use so that ``sockkit get`` -- which never uses them -- does not pay for
#: dataclasses and the service contract (~8 ms of a ~50 ms run). It names every module it loads
#: under ``TYPE_CHECKING``, so the cycle check above still sees them.
FACADE = "sockkit"


def test_no_module_level_getattr() -> None:
    offenders = [module_name(path) for path in ROOT.rglob("*.py")
                 if module_name(path) != FACADE
                 and any(isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
                         for node in ast.parse(path.read_text()).body)]
    assert offenders == []


def test_the_facade_names_what_it_loads() -> None:
    """Every module the facade's ``__getattr__`` may load is imported under TYPE_CHECKING, so the
    graph counts it."""
    facade = import_module(FACADE)
    assert set(facade._HOMES.values()) <= import_graph()[FACADE]
