"""The code is layered: no import circle in fewshot/, benchmarks/ and baselines/, the library never imports the
benchmark, and benchmarks/ imports downward only (config -> engine -> registry -> builtin -> protocols ->
reports -> run -> studies). Every import counts, inside functions and ``if TYPE_CHECKING:`` blocks too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fewshot", "benchmarks", "baselines")
BENCHMARK_LAYERS = ("config", "engine", "registry", "builtin", "protocols", "reports", "run", "studies")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` is, or lies in (``fewshot.methods.CRT`` -> ``fewshot.methods``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """{module: the project modules it imports}, from the source (every import statement in the file)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(filter(None, (_resolve(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found.add(target if target in MODULES else _resolve(base))
        graph[module] = {m for m in found if m and m != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                    out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_a_circle_and_only_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_fewshot_benchmarks_and_baselines_have_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_library_imports_neither_the_benchmark_nor_the_baselines():
    bad = {m: sorted(t for t in targets if not t.startswith("fewshot"))
           for m, targets in import_graph().items() if m.startswith("fewshot")}
    assert {m: t for m, t in bad.items() if t} == {}


def _layer(module: str) -> int:
    return BENCHMARK_LAYERS.index(module.split(".")[1])


@pytest.mark.parametrize("layer", BENCHMARK_LAYERS)
def test_benchmark_layers_import_only_their_own_layer_and_those_below(layer: str):
    graph = import_graph()
    upward = {m: sorted(t for t in targets if t.startswith("benchmarks.") and _layer(t) > _layer(m))
              for m, targets in graph.items() if m.startswith(f"benchmarks.{layer}")}
    assert {m: t for m, t in upward.items() if t} == {}


def test_every_benchmark_module_lies_in_a_named_layer():
    assert {m.split(".")[1] for m in MODULES if m.startswith("benchmarks.")} <= set(BENCHMARK_LAYERS)
