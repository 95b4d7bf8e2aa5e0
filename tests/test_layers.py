"""The package's shape: no import loops, and imports only point down the layers.

core <- kernel <- guest <- probes <- experiments <- pinning <- fanout <- compare <- artifacts
<- tasks.py. A module may import its
own layer and the layers below it; ``kernlab`` itself only holds ``__version__``.
A function-level import inside the package needs its reason on the same line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kernlab"
LAYERS = ["core", "kernel", "guest", "probes", "experiments", "pinning", "fanout", "compare", "artifacts"]
STANDALONE = {"checks"}  # pytest-testinfra files run on the guest, not imported by kernlab


def module_name(path: Path) -> str:
    """``kernlab/guest/vm.py`` -> ``kernlab.guest.vm``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every kernlab module but the standalone check files."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
            if not STANDALONE & set(p.relative_to(PACKAGE).parts)}


def imported(module: str, path: Path, node: ast.ImportFrom | ast.Import, known: set[str]) -> set[str]:
    """The kernlab modules one import statement names (a ``from pkg import mod`` names mod)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    prefix = node.module or ""
    if node.level:
        base = base[: len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    found = {f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names}
    return found & known


def import_statements(path: Path) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement in ``path`` with its source line."""
    lines = path.read_text().splitlines()
    tree = ast.parse(path.read_text())
    return [(n, lines[n.lineno - 1]) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """{module: the kernlab modules it imports} and the function-level imports without a reason."""
    modules = package_modules()
    graph: dict[str, set[str]] = {}
    unexplained = []
    for module, path in modules.items():
        graph[module] = set()
        for node, line in import_statements(path):
            targets = imported(module, path, node, set(modules)) - {module}
            graph[module] |= targets
            if targets and node.col_offset > 0 and "#" not in line:
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return graph, unexplained


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    """A module's layer: its subpackage's place in LAYERS (-1: the root ``kernlab``)."""
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else -1


def test_there_are_no_import_loops():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_imports_point_down_the_layers():
    graph, _ = import_graph()
    upward = [f"{m} -> {t}" for m, targets in graph.items() for t in sorted(targets) if layer(t) > layer(m)]
    assert upward == []


def test_every_module_sits_in_a_layer():
    strays = [m for m in package_modules() if m != "kernlab" and m.split(".")[1] not in LAYERS]
    assert strays == []


def test_a_function_level_import_says_why():
    _, unexplained = import_graph()
    assert unexplained == []


def test_the_driver_stays_standalone():
    """The guest driver is uploaded and run as a file: it imports nothing from kernlab."""
    path = PACKAGE / "experiments" / "driver.py"
    assert not [n for n, _ in import_statements(path)
                if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith("kernlab"))]
