"""docs/ARCHITECTURE.md says what the code is: every module its tables name exists, and every
function or class it writes with a parameter list has those parameters, in that order.

The tables are read as text (``### <package>/`` headings, ``| `module` | job | entry points |``
rows); an entry point ``name(a, b=1) -> T`` is checked against the module's ``ast``:
``name`` is defined there (a function, a class's ``__init__``/dataclass fields, or a method
``Class.name``) and takes ``a, b`` (``*`` and ``**`` forms left out). A renamed parameter
or a moved module fails here, naming the row.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ARCHITECTURE.md"
HEADING = re.compile(r"^### (\w+)/")
ROW = re.compile(r"^\| `(\w+)` \|(.*)\|(.*)\|\s*$")
CALL = re.compile(r"`(\.?[A-Za-z_][\w.]*)\(([^`]*?)\)(?: -> [^`]*)?`")


def rows() -> list[tuple[str, str, str]]:
    """(package, module, entry points) of every module row."""
    found, package = [], None
    for line in DOC.read_text().splitlines():
        if heading := HEADING.match(line):
            package = heading.group(1)
        elif package and (row := ROW.match(line)) and row.group(1) != "module":
            found.append((package, row.group(1), row.group(3)))
    return found


def parameters(text: str) -> list[str]:
    """The names in a written parameter list (``a: int = 1, *, b`` -> [a, b])."""
    depth, parts, current = 0, [], ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    names = []
    for part in (p.strip() for p in parts):
        name = re.split(r"[:=\s]", part, maxsplit=1)[0]
        if name and name not in ("*", "...", "/") and not name.startswith("*") and name.isidentifier():
            names.append(name)
    return names


def defined(tree: ast.Module) -> dict[str, list[str]]:
    """name -> its parameter names: functions, methods (``Class.method`` and ``.method``),
    classes (their ``__init__``, or their dataclass fields)."""
    table: dict[str, list[str]] = {}

    def args(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
        a = fn.args
        return [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            table[node.name] = args(node)
        elif isinstance(node, ast.ClassDef):
            fields = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign)
                      and isinstance(s.target, ast.Name)]
            table[node.name] = fields
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if item.name == "__init__":
                        table[node.name] = args(item)
                    table[f"{node.name}.{item.name}"] = args(item)
                    table.setdefault(f".{item.name}", args(item))
    return table


def test_every_module_in_the_tables_exists():
    missing = [f"{package}/{module}" for package, module, _ in rows()
               if not (ROOT / "kernlab" / package / f"{module}.py").is_file()]
    assert rows() and missing == []


def test_every_written_signature_matches_the_code():
    wrong = []
    for package, module, entries in rows():
        path = ROOT / "kernlab" / package / f"{module}.py"
        if not path.is_file():
            continue
        table = defined(ast.parse(path.read_text()))
        for name, written in CALL.findall(entries):
            if name not in table:
                wrong.append(f"{package}/{module}: {name} is not defined there")
            elif parameters(written) != table[name][:len(parameters(written))]:
                wrong.append(f"{package}/{module}: {name}({written}) but the code has {table[name]}")
    assert wrong == []
