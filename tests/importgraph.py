"""The import graph of a package, read from its source with `ast` (nothing is imported), and its cycles.

Each import is an edge from the importing module to the module it loads, of one of three kinds:
- `module`: at the top of the file (or in a class body): runs when the module is imported;
- `deferred`: inside a function: runs when the function is first called;
- `typing`: under `if TYPE_CHECKING:`: never runs (annotations only, with `from __future__ import annotations`).

A cycle of `module` and `deferred` edges is a design cycle: moving the deferred imports to the top of
their files would make importing one of the modules fail with a partially initialised module. A
cycle that needs a `typing` edge is only a cycle of annotations; `cycles(..., typing=True)` lists those
apart.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

EdgeKind = Literal["module", "deferred", "typing"]
RUNTIME: frozenset[EdgeKind] = frozenset({"module", "deferred"})


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    where: str  # file:line of the import

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind} import, {self.where})"


def modules_of(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` (a directory under `root`) by its dotted name."""
    found: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def graph(root: Path, package: str) -> list[Edge]:
    """The import edges between the modules of `package`; imports of other packages are left out."""
    modules = modules_of(root, package)
    edges: list[Edge] = []
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, kind in imports_in(tree.body, "module"):
            for target in targets(node, name, is_package, modules):
                edges.append(Edge(name, target, kind, f"{path.relative_to(root)}:{node.lineno}"))
    return edges


def imports_in(body: Iterable[ast.stmt], kind: EdgeKind) -> Iterator[tuple[ast.Import | ast.ImportFrom, EdgeKind]]:
    """The import statements of a block, each with the kind of edge it makes."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, kind
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from imports_in(node.body, "typing" if kind == "typing" else "deferred")
        elif isinstance(node, ast.If) and is_type_checking(node.test):
            yield from imports_in(node.body, "typing")
            yield from imports_in(node.orelse, kind)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):  # class bodies, try/except, if, with, for
                block = getattr(node, field, None)
                if isinstance(block, list):
                    yield from imports_in((child for child in block if isinstance(child, ast.stmt)), kind)
                    for handler in block:
                        if isinstance(handler, ast.ExceptHandler):
                            yield from imports_in(handler.body, kind)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The modules of the package an import loads: the named module, and for `from X import Y` the
    submodule X.Y when there is one, plus the packages above them that are not above the importer."""
    if isinstance(node, ast.Import):
        named = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = source.split(".") if is_package else source.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        named = [base] + [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
    own_packages = {".".join(source.split(".")[:n]) for n in range(1, source.count(".") + 1)}
    loaded: list[str] = []
    for name in named:
        parts = name.split(".")
        for n in range(1, len(parts) + 1):
            module = ".".join(parts[:n])
            if module in modules and module not in own_packages and module != source and module not in loaded:
                loaded.append(module)
    return loaded


def cycles(edges: list[Edge], typing: bool = False) -> list[list[Edge]]:
    """One cycle per strongly connected group of modules, as the edges that close it.

    typing=False: cycles of runtime edges only (module-level and deferred imports).
    typing=True: the cycles that exist only once `TYPE_CHECKING` imports are counted too."""
    if not typing:
        return cycles_among([edge for edge in edges if edge.kind in RUNTIME])
    return [cycle for cycle in cycles_among(edges) if any(edge.kind == "typing" for edge in cycle)]


def cycles_among(edges: list[Edge]) -> list[list[Edge]]:
    out: dict[str, list[Edge]] = defaultdict(list)
    for edge in edges:
        out[edge.source].append(edge)
    found = []
    for group in strongly_connected(out):
        if len(group) > 1 or any(edge.target == edge.source for edge in out[next(iter(group))]):
            found.append(shortest_cycle(min(group), group, out))
    return sorted(found, key=lambda cycle: cycle[0].source)


def strongly_connected(out: dict[str, list[Edge]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    nodes = sorted(set(out) | {edge.target for edges in out.values() for edge in edges})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[set[str]] = []
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(out.get(start, [])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                target = child.target
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(out.get(target, []))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                groups.append(group)
    return groups


def shortest_cycle(start: str, group: set[str], out: dict[str, list[Edge]]) -> list[Edge]:
    """The shortest path of edges inside `group` from `start` back to itself (breadth first)."""
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for edge in out.get(node, []):
                if edge.target == start:
                    return paths[node] + [edge]
                if edge.target in group and edge.target not in paths:
                    paths[edge.target] = paths[node] + [edge]
                    next_frontier.append(edge.target)
        frontier = next_frontier
    raise AssertionError(f"{start} is in a cycle but no path leads back to it")


def describe(cycle: list[Edge]) -> str:
    """`a -> b -> a`, then each edge with where it is."""
    names = " -> ".join([cycle[0].source, *(edge.target for edge in cycle)])
    return names + "".join(f"\n    {edge}" for edge in cycle)
