"""The packages stand in one-way layers, and no package imports itself in a circle.

    nvmeof          the protocol, sans-IO: imports no other package of ours
    logfmt          log line format and stderr setup: imports no other package of ours
    tlsstream       TLS streams on Trio for both wings: may import nvmeof only
    target          the daemon: may import nvmeof, logfmt and tlsstream, never initiator
    initiator       the host: may import nvmeof, logfmt and tlsstream, never target
    demo            composes both wings from outside them
    nvmeof_emu      the test writers' package (target process, host, pytest plugin): composes
                    both wings from outside them, like demo

Every ``import`` statement counts, wherever it stands: at module level, inside functions, and
under ``if TYPE_CHECKING:`` (a type-only circle is still a circle for a reader, and the way out
is a protocol in the lower module). tests/ and bench/ are free to import anything.

An edge goes to the module an import names: ``from a.b import c`` is an edge to ``a.b.c`` when
that is a module, else to ``a.b``. Parent packages that Python runs on the way (``a/__init__``)
are not edges of their own, so a package ``__init__`` that re-exports its modules does not make
every module of the package part of a circle; an ``__init__`` is a node like any other when it
is imported by name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Which of our packages each package may import (itself always included).
ALLOWED: dict[str, frozenset[str]] = {
    "nvmeof": frozenset({"nvmeof"}),
    "logfmt": frozenset({"logfmt"}),
    "tlsstream": frozenset({"tlsstream", "nvmeof"}),
    "target": frozenset({"target", "nvmeof", "logfmt", "tlsstream"}),
    "initiator": frozenset({"initiator", "nvmeof", "logfmt", "tlsstream"}),
    "demo": frozenset({"demo", "target", "initiator", "nvmeof", "logfmt", "tlsstream"}),
    "nvmeof_emu": frozenset({"nvmeof_emu", "target", "initiator", "nvmeof", "logfmt", "tlsstream"}),
}
# Our importable top-level names that no package may import (they may import the packages).
NOT_IMPORTABLE = frozenset({"tests", "bench"})

Graph = dict[str, set[str]]
Edge = tuple[str, str, str]  # importer, imported module, "file:line"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(path, root)] = path
    return modules


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(name: str, path: Path, known: Mapping[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(name, path.name == "__init__.py", node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, node.lineno))
    return found


def build_graph(root: Path, packages: Iterable[str]) -> tuple[Graph, list[Edge]]:
    """The import graph between our modules, and every import that names one of our packages."""
    modules = discover(root, packages)
    ours = {*ALLOWED, *NOT_IMPORTABLE}
    graph: Graph = {name: set() for name in modules}
    edges: list[Edge] = []
    for name, path in modules.items():
        for imported, line in imports_of(name, path, modules):
            if imported.split(".")[0] not in ours:
                continue
            where = f"{path.relative_to(root)}:{line}"
            edges.append((name, imported, where))
            if imported in modules and imported != name:
                graph[name].add(imported)
            elif imported == name:
                graph[name].add(name)
    return graph, edges


def forbidden_edges(edges: Iterable[Edge]) -> list[str]:
    bad: dict[str, None] = {}  # ordered, once per import statement and module
    for importer, imported, where in edges:
        allowed = ALLOWED.get(importer.split(".")[0], frozenset())
        if imported.split(".")[0] not in allowed:
            bad[f"{where}: {importer} imports {imported}"] = None
    return list(bad)


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a circle in them (Tarjan), each as one circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so deep graphs cannot overflow the stack
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_one_circle(graph, set(component)) for component in components]


def describe(graph: Mapping[str, set[str]]) -> list[str]:
    """One line per circle found; a larger tangle is named in full after one circle of it."""
    lines = []
    for circle in cycles(graph):
        line = " -> ".join(circle)
        tangle = _component_of(graph, circle[0])
        if len(tangle) > len(set(circle)):
            line += f"  (all tangled: {', '.join(sorted(tangle))})"
        lines.append(line)
    return lines


def _component_of(graph: Mapping[str, set[str]], node: str) -> set[str]:
    def reach(start: str, edges: Mapping[str, set[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for succ in edges.get(todo.pop(), set()):
                if succ not in seen:
                    seen.add(succ)
                    todo.append(succ)
        return seen

    reverse: dict[str, set[str]] = {}
    for src, dsts in graph.items():
        for dst in dsts:
            reverse.setdefault(dst, set()).add(src)
    return reach(node, graph) & reach(node, reverse)


def _one_circle(graph: Mapping[str, set[str]], component: set[str]) -> list[str]:
    """A concrete circle through the component's smallest module, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:  # breadth first, so the circle shown is a shortest one
        nxt = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    return [*paths[node], start]
                if succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    nxt.append(succ)
        frontier = nxt
    return sorted(component)  # unreachable for a strongly connected component


# --- the repository --------------------------------------------------------------------------


def test_every_package_is_checked() -> None:
    present = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert present - NOT_IMPORTABLE == set(ALLOWED), "add the new package to ALLOWED"
    modules = discover(ROOT, ALLOWED)
    assert len(modules) > 60
    assert {"target", "initiator", "nvmeof", "demo", "logfmt", "nvmeof_emu", "tlsstream"} <= set(
        modules
    )


def test_no_import_crosses_the_layers() -> None:
    _, edges = build_graph(ROOT, ALLOWED)
    bad = forbidden_edges(edges)
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_circle() -> None:
    graph, _ = build_graph(ROOT, ALLOWED)
    found = describe(graph)
    assert not found, "import circles:\n" + "\n".join(found)


# --- the checker itself, on a made-up tree ---------------------------------------------------


def _tree(tmp_path: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("import initiator.host\n", 1),
        ("from initiator import host, host\n", 1),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from initiator.host import H\n",
            3,
        ),
        ("def f():\n    from initiator.host import H\n    return H\n", 2),
    ],
    ids=["import", "from", "type-only", "in-function"],
)
def test_checker_finds_a_cross_wing_import(tmp_path: Path, text: str, line: int) -> None:
    root = _tree(
        tmp_path,
        {
            "target/__init__.py": "",
            "target/daemon.py": text,
            "initiator/__init__.py": "",
            "initiator/host.py": "",
        },
    )
    _, edges = build_graph(root, ["target", "initiator"])
    [bad] = forbidden_edges(edges)
    assert bad == f"target/daemon.py:{line}: target.daemon imports initiator.host"


def test_checker_lets_wings_import_the_core(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "nvmeof/__init__.py": "",
            "nvmeof/status.py": "",
            "target/__init__.py": "",
            "target/io.py": "from nvmeof.status import S\nfrom . import sibling\n",
            "target/sibling.py": "",
        },
    )
    graph, edges = build_graph(root, ["nvmeof", "target"])
    assert forbidden_edges(edges) == []
    assert graph["target.io"] == {"nvmeof.status", "target.sibling"}
    assert cycles(graph) == []


def test_checker_finds_the_core_importing_a_wing(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"nvmeof/__init__.py": "import target\n", "target/__init__.py": ""})
    _, edges = build_graph(root, ["nvmeof", "target"])
    assert forbidden_edges(edges) == ["nvmeof/__init__.py:1: nvmeof imports target"]


def test_checker_finds_a_type_only_circle(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "initiator/__init__.py": "from initiator.a import A\nfrom initiator.b import B\n",
            "initiator/a.py": "from initiator.b import B\n",
            "initiator/b.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from initiator.c import C\n",
            "initiator/c.py": "from .a import A\n",
        },
    )
    graph, _ = build_graph(root, ["initiator"])
    assert describe(graph) == ["initiator.a -> initiator.b -> initiator.c -> initiator.a"]


def test_checker_finds_a_circle_through_a_package_init(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "target/__init__.py": "",
            "target/config/__init__.py": "from target.config.files import load\n",
            "target/config/files.py": "from target.config import Model\n",
        },
    )
    graph, _ = build_graph(root, ["target"])
    assert describe(graph) == ["target.config -> target.config.files -> target.config"]
