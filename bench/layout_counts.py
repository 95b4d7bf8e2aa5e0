"""How far the package is from "records cross the stage boundaries, each thing resolved once".

Static counts over kernlab/ (ast): functions that take a record as a plain dict, ``build["k"]``
/ ``build.get("k")`` reads, functions that read a record's JSON file, build-id functions, lines
of tasks.py and experiments/run.py. Then, at run time, how often one ``invoke run-experiment``
and one ``invoke reproduce`` load the catalog and make a build plan: tasks.py is called on a
fake build (tmp areas, outputs as tiny files) with the image and the guest work replaced, so
nothing is built or booted. Usage: ``python bench/layout_counts.py`` (prints a table).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RECORD_WORDS = ("build", "image", "manifest", "result", "record", "vm")
RECORD_FILES = ("build.json", "image.json", "vm.json", "manifest.json", "result.json")
READERS = {"read_json", "loads", "load"}


def modules() -> list[Path]:
    return sorted(p for p in (ROOT / "kernlab").rglob("*.py") if "checks" not in p.parts)


def _dict_annotation(node: ast.expr | None) -> bool:
    """A plain dict or Mapping (not a dict of typed records)."""
    text = ast.unparse(node) if node is not None else ""
    return text.startswith(("dict", "Mapping", "Dict")) and "Record" not in text


def dict_params(tree: ast.AST) -> list[str]:
    """Parameters named like a record (build, image, manifest, result, record, vm, ...) typed dict."""
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in fn.args.args + fn.args.kwonlyargs:
                if any(w in arg.arg for w in RECORD_WORDS) and _dict_annotation(arg.annotation):
                    found.append(f"{fn.name}:{arg.arg}")
    return found


def key_reads(tree: ast.AST) -> int:
    """``build["k"]`` and ``build.get("k")`` on names that hold a build (``build``, ``record``, ...)."""
    return sum(_subscript_read(node) or _get_read(node) for node in ast.walk(tree))


def _subscript_read(node: ast.AST) -> bool:
    return isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
        and "build" in node.value.id and isinstance(node.slice, ast.Constant) \
        and isinstance(node.slice.value, str)


def _get_read(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr == "get" and isinstance(node.func.value, ast.Name) \
        and "build" in node.func.value.id and bool(node.args) and isinstance(node.args[0], ast.Constant)


def json_readers(tree: ast.AST) -> list[str]:
    """Functions that call a JSON reader and name one of the record files."""
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        calls = {n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                 for n in ast.walk(fn) if isinstance(n, ast.Call)}
        names = {n.value for n in ast.walk(fn) if isinstance(n, ast.Constant) and n.value in RECORD_FILES}
        if calls & READERS and names and not _record_class_reads(fn):
            found += [f"{fn.name}:{name}" for name in sorted(names)]
    return found


def _record_class_reads(fn: ast.AST) -> bool:
    """The function reads through a record class (``XRecord.load``, ``Manifest.of``), not as JSON."""
    classes = ("Record", "Manifest", "Result")
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("load", "of")
               and isinstance(n.func.value, ast.Name) and n.func.value.id.endswith(classes)
               for n in ast.walk(fn))


def _calls_build_id(fn: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "build_id"
               for n in ast.walk(fn))


def build_id_functions(tree: ast.AST) -> list[str]:
    """Functions that work out a build id themselves (not by calling ``build_id``)."""
    named = [fn for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             and (fn.name == "build_id" or fn.name.endswith("_build_id"))]
    ids = [fn for c in ast.walk(tree) if isinstance(c, ast.ClassDef) and c.name == "BuildRecord"
           for fn in c.body if isinstance(fn, ast.FunctionDef) and fn.name == "id"]
    return [fn.name for fn in named + ids if not _calls_build_id(fn)]


def static() -> dict[str, object]:
    params, reads, readers, ids = [], 0, [], []
    for path in modules():
        tree = ast.parse(path.read_text())
        rel = path.relative_to(ROOT).as_posix()
        params += [f"{rel}:{p}" for p in dict_params(tree)]
        reads += key_reads(tree)
        readers += [f"{rel}:{r}" for r in json_readers(tree)]
        ids += [f"{rel}:{i}" for i in build_id_functions(tree)]
    run = ROOT / "kernlab" / "experiments" / "run.py"
    return {"dict record parameters": len(params), "build[k] / build.get(k) reads": reads,
            "functions reading a record's JSON": len(readers), "build-id functions": len(ids),
            "tasks.py lines": len((ROOT / "tasks.py").read_text().splitlines()),
            "experiments/run.py lines": len(run.read_text().splitlines()) if run.is_file() else 0,
            "_detail": {"params": params, "readers": readers, "ids": ids}}


# ---------------------------------------------------------------- run time
def _fake_build(work: Path, version: str) -> Path:
    from kernlab.core.util import atomic_write_json, sha256_file
    from kernlab.kernel.build import make_plan

    plan = make_plan(version)
    build_dir = work / "build" / f"{version}-{'a' * 12}"
    outputs = {}
    for name in ("bzImage", "vmlinux", "System.map", "config"):
        file = build_dir / "obj" / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(name)
        outputs[name] = {"path": str(file), "sha256": sha256_file(file)}
    outputs["headers"] = {"path": str(build_dir / "obj")}
    atomic_write_json(build_dir / "build.json", {
        "version": version, "release": plan.spec.release, "kernelrelease": f"{plan.spec.release}-kernlab",
        "key": "a" * 64, "build_dir": str(build_dir), "source": {"kind": "file", "origin": "/x.tar.xz"},
        "patches": [p.record() for p in plan.patches],
        "fragments": [{"path": str(f), "sha256": sha256_file(f)} for f in plan.fragments],
        "outputs": outputs, "built_at": "2026-01-01T00:00:00Z"})
    return build_dir


class Counter:
    """Counts calls of load_catalog and make_plan wherever a module holds them."""

    def __init__(self) -> None:
        self.counts = {"load_catalog": 0, "make_plan": 0}
        self.saved: list[tuple[object, str, object]] = []

    def __enter__(self) -> Counter:
        from kernlab.kernel import build, catalog

        for name, original in (("load_catalog", catalog.load_catalog), ("make_plan", build.make_plan)):
            def counted(*args, _original=original, _name=name, **kwargs):
                self.counts[_name] += 1
                return _original(*args, **kwargs)
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith(("kernlab", "tasks")) \
                        and getattr(module, name, None) is original:
                    self.saved.append((module, name, original))
                    setattr(module, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, original in self.saved:
            setattr(module, name, original)

    def reset(self) -> None:
        self.counts = dict.fromkeys(self.counts, 0)


def runtime() -> dict[str, object]:
    """Catalog loads and plans of one run-experiment and one reproduce (nothing built or booted)."""
    tmp = Path(tempfile.mkdtemp(prefix="layout-counts-"))
    for area in ("WORK", "STATE", "RESULTS"):
        os.environ[f"KERNLAB_{area}"] = str(tmp / area.lower())
    import invoke

    import tasks
    from kernlab.core.records import ImageRecord
    from kernlab.experiments import bundle as bundles
    from kernlab.experiments import run as run_module
    from kernlab.guest import ensure

    _fake_build(tmp / "work", "6.1")
    disk = tmp / "disk.qcow2"
    disk.write_text("disk")
    image = ImageRecord.from_json({"recipe": "bookworm", "key": "b" * 64, "packages": [],
                                   "image": {"path": str(disk), "sha256": "c" * 64}})
    ensure.build_image = lambda recipe: image  # the image step is not what is counted

    def no_guest(exp, session, root=None):
        session.kernel_and_image()
        made = bundles.Bundle.create(exp.name, session.version, root)
        made.status, made.reason = bundles.PASS, ""
        made.facts["source"] = exp.origin()
        write_manifest = getattr(run_module, "run_manifest", None) or run_module._manifest  # main's name
        made.finish(write_manifest(exp, session, made))
        return made

    run_module.run_in_session = no_guest
    bundles.tool_versions = dict
    ctx = invoke.Context()
    out: dict[str, object] = {}
    with Counter() as counter, contextlib.redirect_stdout(io.StringIO()) as printed, \
            contextlib.redirect_stderr(io.StringIO()):
        counter.reset()
        tasks.run_experiment.body(ctx, "readiter", kernel="6.1")
        out["run-experiment: catalog loads / plans"] = f"{counter.counts['load_catalog']} / " \
                                                       f"{counter.counts['make_plan']}"
        bundle = printed.getvalue().strip().splitlines()[-1].split()[0]
        counter.reset()
        with contextlib.suppress(invoke.Exit):
            tasks.reproduce.body(ctx, bundle)
        if "reproduce " + bundle not in printed.getvalue():
            raise SystemExit(f"reproduce did not run: {printed.getvalue()[-500:]}")
        out["reproduce (build kept): catalog loads / plans"] = f"{counter.counts['load_catalog']} / " \
                                                               f"{counter.counts['make_plan']}"
    return out


def main() -> None:
    counts = static()
    detail = counts.pop("_detail")
    counts.update(runtime())
    width = max(len(k) for k in counts)
    for key, value in counts.items():
        print(f"{key:<{width}}  {value}")
    if "--detail" in sys.argv:
        print(json.dumps(detail, indent=1))


if __name__ == "__main__":
    main()
