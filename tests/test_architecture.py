"""The import graph: every module imports only from its own layer or the layers below it, and
no two packages import each other (docs/architecture.md, "Layers").

The graph is read from the source with :mod:`ast` (every ``import`` and ``from ... import``
statement, at module level or inside a function: a function-level import is still a
dependency), so the test needs no import of selfsup and sees imports that run only in one
branch.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module belongs to the longest prefix that names it
LAYERS: list[tuple[str, ...]] = [
    # base modules: no knowledge of images, models or runs
    (
        "selfsup",  # the package's __init__ (the lazy method registry's provider)
        "selfsup.errors",
        "selfsup.registry",
        "selfsup.atomic",
        "selfsup.names",
        "selfsup.yaml_file",
        "selfsup.fields",
        "selfsup.progress",
        "selfsup.distributed",
        "selfsup.precision",
        "selfsup.checkpoint",
        "selfsup.records",
        "selfsup.tensorboard",
        "selfsup.layout",
    ),
    # building blocks
    ("selfsup.data", "selfsup.backbones", "selfsup.losses", "selfsup.parts", "selfsup.heads"),
    ("selfsup.features",),  # feature extraction: train monitors and evaluation both use it
    ("selfsup.methods",),
    ("selfsup.train",),
    ("selfsup.evaluate",),
    ("selfsup.analysis",),
    ("selfsup.config",),  # the root config: one section from each layer below
    (
        "selfsup.rundir",
        "selfsup.run",
        "selfsup.pipeline",
        "selfsup.api",
        "selfsup.faces",
        "selfsup.studies",
    ),
    ("selfsup.cli", "selfsup.__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted((SRC / "selfsup").rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The selfsup modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "selfsup")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "selfsup":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


def layer(name: str) -> int:
    best, length = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > length:
                best, length = i, len(prefix)
    assert best is not None, f"{name} is in no layer: add it to LAYERS"
    return best


def package(name: str) -> str:
    """The top-level unit a module belongs to: ``selfsup.train.loop`` -> ``selfsup.train``."""
    return ".".join(name.split(".")[:2])


GRAPH = {name: imports(name) for name in MODULES}


def test_every_module_has_a_layer() -> None:
    for name in MODULES:
        layer(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_it(name: str) -> None:
    up = sorted(t for t in GRAPH[name] if layer(t) > layer(name))
    assert not up, f"{name} (layer {layer(name)}) imports from above: " + ", ".join(
        f"{t} (layer {layer(t)})" for t in up
    )


def test_no_package_cycle() -> None:
    """Packages (and top-level modules) form a DAG: no two import each other, directly or
    through others."""
    edges: dict[str, set[str]] = defaultdict(set)
    for name, targets in GRAPH.items():
        for t in targets:
            if package(t) != package(name) and package(name) != "selfsup":
                edges[package(name)].add(package(t))
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                raise AssertionError("package cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])


def test_the_graph_reader_sees_imports() -> None:
    """The reader itself: a known downward import is found (so an empty graph cannot pass)."""
    assert "selfsup.checkpoint" in GRAPH["selfsup.train.loop"]
