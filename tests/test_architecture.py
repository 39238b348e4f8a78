"""The import graph of ``polyrec`` flows one way (DESIGN.md): no circle, no model imports eval.

Every ``import`` / ``from … import`` statement counts, also those inside functions (a lazy
import still makes a circle of responsibilities). Read from the source with ``ast``: nothing
is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import polyrec

SRC = Path(polyrec.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """polyrec module → the polyrec modules it imports (a package import counts as the
    package's ``__init__``; ``from pkg import sub`` counts as the submodule when it is one)."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, path.name == "__init__.py", node)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                ]
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t.startswith("polyrec") and t != mod:
                    deps.add(t)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (as a list of modules), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "polyrec.models.base" in graph["polyrec.models.mf"]
    assert "polyrec.data.views" in graph["polyrec.models.base"]


def test_no_import_circle() -> None:
    # packages' __init__ re-exports are edges too, except a package importing its own parts
    graph = {
        m: {d for d in deps if not (m.count(".") < d.count(".") and d.startswith(m + "."))}
        for m, deps in import_graph().items()
    }
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " → ".join(cycle or [])


def test_a_circle_is_found() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_model_imports_eval_config_or_training() -> None:
    bad = {
        m: sorted(d for d in deps if d.split(".")[1] in {"eval", "config", "training", "cli"})
        for m, deps in import_graph().items()
        if m.startswith("polyrec.models")
    }
    assert not {m: d for m, d in bad.items() if d}


def test_data_imports_no_model() -> None:
    bad = {
        m: sorted(d for d in deps if d.startswith("polyrec.models"))
        for m, deps in import_graph().items()
        if m.startswith("polyrec.data")
    }
    assert not {m: d for m, d in bad.items() if d}
