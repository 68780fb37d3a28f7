"""The house's rules as checks: no import circle in lafa/, and the import directions docs/architecture.md states."""

from __future__ import annotations

import ast
from pathlib import Path

LAFA = Path(__file__).resolve().parents[1] / "lafa"


def import_graph() -> dict[str, set[str]]:
    """module -> the lafa modules it imports anywhere in its file (lazy imports inside functions included; names
    imported under `if TYPE_CHECKING:` only for annotations are not imports at run time)."""
    modules = {".".join(p.relative_to(LAFA.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in LAFA.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lafa"):
                graph[name] |= {t for t in (node.module, *(f"{node.module}.{a.name}" for a in node.names))
                                if t in modules and t != name}
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules and a.name != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lafa_has_no_import_circle() -> None:
    assert cycles(import_graph()) == []


def test_imports_point_down_the_data_flow() -> None:
    graph = import_graph()
    for module, targets in graph.items():
        for target in targets:
            if module.startswith(("lafa.models", "lafa.diffusion", "lafa.analysis", "lafa.metrics")):
                assert not target.startswith(("lafa.stages", "lafa.cli", "lafa.commands")), (module, target)
            if module.startswith("lafa.data"):
                assert not target.startswith("lafa.models"), (module, target)
            if module.startswith("lafa.models") and module != "lafa.models.spectrum_loss":
                # (the ESM loss computes the analysis's own alpha: it shares lafa.analysis.spectrum's estimator)
                assert not target.startswith("lafa.analysis"), (module, target)
