"""The import graph of the whole code base (dupq/ and web/): no cycles, and no package imports a layer above it.

The graph is read from the source (every ``import`` statement, including those inside functions, which is where
the heavy libraries and the late imports live); imports under ``if TYPE_CHECKING:`` are annotations only and do
not count. The layers, lowest first, are the ones docs/architecture.md draws.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] if (Path(__file__).parents[1].name == "tests") else Path(__file__).parents[1]

#: Lowest first; a module may import its own layer and the layers below. The longest matching prefix decides.
LAYERS: list[tuple[str, ...]] = [
    ("dupq", "dupq.errors", "dupq.system", "dupq.text", "dupq.config", "dupq.data", "dupq.bank"),  # foundation
    ("dupq.models",),  # what a version is at serving time
    ("dupq.evaluation",),  # numbers and figures from data
    ("dupq.index",),  # vector indexes
    ("dupq.storage",),  # questions, pairs, jobs, versions on SQLite or PostgreSQL
    ("dupq.training",),  # new versions
    ("dupq.review", "dupq.retrain", "dupq.service", "dupq.backup", "dupq.access"),  # the application
    ("dupq.cli", "dupq.worker", "web"),  # entry points
]


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("dupq", "web"):
        for path in (ROOT / top).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (``from pkg import mod`` counts as ``pkg.mod`` when that is a module)."""
    names: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.dump(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            names.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            assert node.level == 0, f"{path}: relative import (the house uses absolute imports)"
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in MODULES else str(node.module))

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    out = set()
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def layer(module: str) -> int:
    best: tuple[int, int] | None = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)"
    return best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_the_whole_code_base() -> None:
    assert {"dupq.service", "dupq.training.recipe", "dupq.storage.postgres.jobs", "web.api"} <= set(GRAPH)
    assert "dupq.models.energy" in GRAPH["dupq.training.recipe"]  # a real edge is seen


def test_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps if layer(d) > layer(m))
    assert upward == []


def test_the_checks_catch_what_they_claim() -> None:
    # The checks themselves can fail: a two-module cycle and an upward edge are found.
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert layer("dupq.models.energy") < layer("dupq.storage.sqlite.store") < layer("dupq.service") < layer("web.api")


@pytest.mark.parametrize("module", ["dupq.models.runtime", "dupq.index", "dupq.storage"])
def test_serving_layers_do_not_reach_training(module: str) -> None:
    # The serving path must not pull the trainers in (they import torch/transformers at call time).
    reach, todo = set(), [module]
    while todo:
        m = todo.pop()
        for d in GRAPH.get(m, ()):
            if d not in reach:
                reach.add(d)
                todo.append(d)
    assert not any(r.startswith("dupq.training") for r in reach), sorted(reach)
