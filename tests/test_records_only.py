"""Records are what crosses a stage boundary: the package is checked for dict-shaped stage data.

Like tests/test_layers.py this reads the source (ast), so a new ``build: dict`` parameter,
``build["key"]`` read or second reader of a record's JSON file fails here, naming the line.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

from kernlab.core.records import BuildRecord, ImageRecord, Manifest, RunResult, VmRecord

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kernlab"
RECORDS = PACKAGE / "core" / "records.py"
STAGE_WORDS = ("build", "image", "manifest", "result", "vm")  # parameters that carry a stage record
RECORD_FILES = {"build.json", "image.json", "vm.json", "manifest.json", "result.json"}
JSON_READERS = {"read_json", "loads", "load"}


def modules() -> dict[Path, ast.Module]:
    """Every kernlab module but the guest-side ones (the driver and the testinfra checks run
    in the guest, on plain JSON)."""
    return {p: ast.parse(p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))
            if "checks" not in p.parts and p.name != "driver.py"}


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"


def functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def carries_record(name: str) -> bool:
    return name in STAGE_WORDS or name.endswith(tuple(f"_{w}" for w in STAGE_WORDS))


def test_no_stage_record_is_passed_as_a_dict():
    found = []
    for path, tree in modules().items():
        for fn in functions(tree):
            for arg in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs:
                shown = ast.unparse(arg.annotation) if arg.annotation else ""
                if carries_record(arg.arg) and shown.startswith(("dict", "Mapping")):
                    found.append(f"{where(path, fn)} {fn.name}({arg.arg}: {shown})")
    assert found == []


def test_no_stage_record_is_read_by_key():
    found = []
    for path, tree in modules().items():
        for node in ast.walk(tree):
            target = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                target = node.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "get" and node.args and isinstance(node.args[0], ast.Constant)):
                target = node.func.value
            if isinstance(target, ast.Name) and carries_record(target.id):
                found.append(f"{where(path, node)} {ast.unparse(node)}")
    assert found == []


def test_each_record_file_has_one_reader():
    """Only core/records.py parses a record file by name; the rest go through its classes."""
    found = []
    for path, tree in modules().items():
        if path == RECORDS:
            continue
        for fn in functions(tree):
            calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                     for n in ast.walk(fn) if isinstance(n, ast.Call)} & JSON_READERS
            names = {n.value for n in ast.walk(fn) if isinstance(n, ast.Constant)} & RECORD_FILES
            if calls and names and not any(_record_load(n) for n in ast.walk(fn)):
                found.append(f"{where(path, fn)} {fn.name} reads {sorted(names)} with {sorted(calls)}")
    assert found == []


def _record_load(node: ast.AST) -> bool:
    """``XRecord.load(...)`` or ``X.of(...)``: a record class reading its own file."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("load", "of") and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("BuildRecord", "ImageRecord", "VmRecord", "Manifest", "RunResult"))


def test_one_function_makes_a_build_id():
    made = [where(path, fn) for path, tree in modules().items() for fn in functions(tree)
            if "build_id" in fn.name and path != RECORDS]
    module_level = [n.name for n in ast.parse(RECORDS.read_text()).body
                    if isinstance(n, ast.FunctionDef) and n.name == "build_id"]
    assert made == [] and module_level == ["build_id"]


@pytest.mark.parametrize("kind", [BuildRecord, ImageRecord, VmRecord, Manifest, RunResult])
def test_a_record_is_no_mapping(kind):
    record = kind.from_json({"version": "6.1"})
    assert not isinstance(record, Mapping)
    with pytest.raises(TypeError):
        record["version"]
