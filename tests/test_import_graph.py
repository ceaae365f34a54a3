"""No import cycle among service modules, counting imports inside functions too.

Why inside functions: a deferred import hides a cycle from Python's loader but not from the reader; two modules
that need each other have one job split in two. Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "service"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of `known` that `tree` imports at run time (any depth, TYPE_CHECKING blocks skipped)."""
    out: set[str] = set()

    def target(name: str) -> None:
        # `from a.b import c` names module a.b.c when it exists, else an attribute of a.b
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                drop = node.level - 1 if is_package else node.level
                base = base[: len(base) - drop] if drop else base
                prefix = ".".join(base)
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                target(full if full in known else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (ROOT / PACKAGE).rglob("*.py")}
    known = set(files)
    return {
        name: _imports(ast.parse(path.read_text(), str(path)), name, path.name == "__init__.py", known)
        for name, path in files.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_cycle_finder_sees_a_two_module_cycle() -> None:
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": set()}
    assert find_cycles(graph) == [["a", "b"]]


def test_deferred_imports_count_and_type_checking_ones_do_not() -> None:
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from service.b import X\n"
        "def f():\n    from service.c import Y\n"
    )
    known = {"service", "service.a", "service.b", "service.c"}
    assert _imports(ast.parse(src), "service.a", False, known) == {"service.c"}


def unresolved_imports() -> list[str]:
    """`service.*` imports (in service, tests, bench, harness, models) naming no module: a renamed or moved module
    left behind. mypy cannot see it (ignore_missing_imports turns a missing module into Any)."""
    files = {_module_name(p): p for p in (ROOT / PACKAGE).rglob("*.py")}
    scanned = [p for d in (PACKAGE, "tests", "bench", "harness", "models") for p in (ROOT / d).rglob("*.py")]
    out: list[str] = []
    for path in scanned:
        name = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                mods = [node.module]
            out += [f"{name}: {m}" for m in mods if m.split(".")[0] == PACKAGE and m not in files]
    return out


def test_every_service_import_names_a_module() -> None:
    assert not unresolved_imports()


def test_no_import_cycle_among_service_modules() -> None:
    graph = import_graph()
    assert "service.api.auth" in graph, "the graph must cover the service package"
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_features_reach_state_only_through_the_store_interface() -> None:
    """service.features computes; which store holds the state (Redis, in-process) is the runtime's choice."""
    graph = import_graph()
    implementations = {"service.state.redis", "service.state.memory", "service.state.factory"}
    leaks = {m: sorted(graph[m] & implementations) for m in graph if m.startswith("service.features")}
    assert not {m: v for m, v in leaks.items() if v}
