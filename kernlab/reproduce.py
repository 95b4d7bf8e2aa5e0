"""`invoke reproduce BUNDLE`: run a saved experiment again and compare.

The bundle's manifest names the kernel build (its inputs and key), the image and the
experiment (its content hash). kernlab first checks that today's inputs are the ones
the manifest pinned (naming what changed), rebuilds or reuses them, reruns the
experiment, and compares: kernel and image hashes, expectations, and the trace with
pids, timestamps and addresses masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import lock
from .errors import KernlabError
from .report import reporter
from .util import atomic_write_json, read_json

VOLATILE = [
    (re.compile(r"0x[0-9a-f]{6,}"), "0x…"),
    (re.compile(r"\b[0-9a-f]{12,16}\b"), "…"),
    (re.compile(r"-\d+\s+\[\d+\]"), "-PID [CPU]"),
    (re.compile(r"\b\d+\.\d{6}\b"), "T"),
    (re.compile(r"\b(pid|tgid|PID)[ =:]+\d+"), r"\1 N"),
]


@dataclass
class Comparison:
    original: Path
    rerun: Path | None = None
    same_kernel: bool = False
    same_image: bool = False
    same_experiment: bool = False
    same_expectations: bool = False
    source: str = ""  # how the kernel's source tree compares (by identity, whatever the route)
    image: str = ""  # how the image compares (same file, or same package versions)
    input_changes: list[str] = field(default_factory=list)
    expectation_changes: list[str] = field(default_factory=list)
    trace: dict[str, Any] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.same_kernel and self.same_image and self.same_experiment and self.same_expectations

    def to_json(self) -> dict[str, Any]:
        return {"original": str(self.original), "rerun": str(self.rerun), "identical": self.identical,
                "same_kernel": self.same_kernel, "same_image": self.same_image,
                "same_experiment": self.same_experiment, "same_expectations": self.same_expectations,
                "source": self.source, "image": self.image,
                "input_changes": self.input_changes, "expectation_changes": self.expectation_changes,
                "trace": self.trace}

    def text(self) -> str:
        yes = {True: "same", False: "DIFFERENT"}
        lines = [f"reproduce {self.original}",
                 f"  rerun        {self.rerun}",
                 f"  source       {self.source or 'not compared'}",
                 f"  kernel       {yes[self.same_kernel]}",
                 f"  image        {yes[self.same_image]}{f' ({self.image})' if self.image else ''}",
                 f"  experiment   {yes[self.same_experiment]}",
                 f"  expectations {yes[self.same_expectations]}"]
        lines += [f"    {line}" for line in self.input_changes + self.expectation_changes]
        if self.trace:
            counts = f"{self.trace['original_lines']} -> {self.trace['rerun_lines']} lines"
            lines.append(f"  trace        {counts}; "
                         f"{self.trace['only_original']} only before, {self.trace['only_rerun']} only now "
                         "(pids, times, addresses masked)")
        lines.append(f"{'IDENTICAL' if self.identical else 'DIFFERENT'}")
        return "\n".join(lines)


def load_bundle(bundle: Path) -> tuple[dict, dict]:
    for name in ("manifest.json", "result.json"):
        if not (bundle / name).is_file():
            raise KernlabError(f"{bundle} is not a complete results bundle (no {name})",
                               "pass a directory under results/<experiment>/<kernel>/")
    return read_json(bundle / "manifest.json"), read_json(bundle / "result.json")


ROUTE_FIELDS = ("source_sha256", "debian")  # name the file or package, not the tree in it


def same_source(old: dict[str, Any], source: Any, scratch: Path) -> bool | None:
    """Whether today's ``source`` holds the bundle's tree (``old`` is its record's source).

    Compared by tree identity, so a tarball and a git tree of the same files are the same
    source; None when the bundle predates identities (then the files' sums decide).
    """
    from .source import tree_identity

    if not old.get("tree_sha256"):
        return None
    if old.get("sha256") == source.sha256:
        return True
    return tree_identity(source, scratch, scratch / "identity.log") == old["tree_sha256"]


def kernel_input_changes(build: dict[str, Any], allow: bool) -> list[str]:
    """Differences between the bundle's kernel inputs and today's; raises unless allowed."""
    from . import paths
    from .build import make_plan
    from .source import resolve_source

    plan = make_plan(build["version"])
    source = resolve_source(plan.spec, plan.catalog, plan.opts.source,
                            paths.work_dir() / "logs" / "reproduce-source.log")
    old, new = lock.kernel_entry_from_record(build), plan.lock_entry(source)
    same = same_source(build["source"], source, paths.work_dir() / "scratch")
    if same:
        old, new = ({k: v for k, v in e.items() if k not in ROUTE_FIELDS} for e in (old, new))
        if build["source"].get("sha256") != source.sha256:
            reporter().note(f"same source tree {build['source']['tree_sha256'][:16]} by another route "
                            f"({build['source'].get('origin')} then, {source.origin} now)")
    changes = lock.differences(old, new)
    if same is False:
        changes.insert(0, f"source tree changed from {build['source']['tree_sha256'][:16]} "
                          f"to {source.tree_sha256 and source.tree_sha256[:16]}")
    if changes and not allow:
        raise KernlabError(
            f"the bundle's kernel {build['version']} was built from other inputs: {changes[0]}",
            "restore those inputs (git checkout the commit in the manifest) or pass --anyway",
            details="\n".join(changes),
        )
    return changes


def compare_images(old: dict[str, Any], new: dict[str, Any]) -> tuple[bool, str]:
    """The same image file, or a rebuilt one (new host keys) with the same package versions."""
    if old["image"]["sha256"] == new["image"]["sha256"]:
        return True, "the same file"
    was, now = lock.image_packages(old), lock.image_packages(new)
    if was == now:
        return True, f"rebuilt, the same {len(now)} package versions"
    changed = sorted(name for name in set(was) | set(now) if was.get(name) != now.get(name))
    return False, f"{len(changed)} packages differ: " + ", ".join(
        f"{n} {was.get(n, '-')} -> {now.get(n, '-')}" for n in changed[:3])


def source_line(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'same tree …' or 'DIFFERENT tree …' by identity; by file sums for bundles without one."""
    if old.get("tree_sha256") and new.get("tree_sha256"):
        verdict = "same" if old["tree_sha256"] == new["tree_sha256"] else "DIFFERENT"
        moved = old.get("sha256") != new.get("sha256")
        route = f" ({old.get('origin')} -> {new.get('origin')})" if moved else ""
        return f"{verdict} tree {new['tree_sha256'][:16]}{route}"
    verdict = "same" if old.get("sha256") == new.get("sha256") else "DIFFERENT"
    return f"{verdict} file {str(new.get('sha256'))[:16]} (the bundle names no tree identity)"


def normalise(line: str) -> str:
    for pattern, replacement in VOLATILE:
        line = pattern.sub(replacement, line)
    return line.strip()


def compare_traces(old: Path, new: Path) -> dict[str, Any]:
    before = old.read_text(errors="replace").splitlines() if old.is_file() else []
    after = new.read_text(errors="replace").splitlines() if new.is_file() else []
    a, b = {normalise(x) for x in before}, {normalise(x) for x in after}
    return {"original_lines": len(before), "rerun_lines": len(after),
            "only_original": len(a - b), "only_rerun": len(b - a),
            "examples_only_rerun": sorted(b - a)[:5]}


def compare_expectations(old: dict, new: dict) -> list[str]:
    was = {e["name"]: e.get("passed") for e in old.get("expectations", [])}
    now = {e["name"]: e.get("passed") for e in new.get("expectations", [])}
    changes = []
    for name in sorted(set(was) | set(now)):
        if was.get(name) != now.get(name):
            changes.append(f"expectation {name}: {was.get(name)} -> {now.get(name)}")
    if old.get("status") != new.get("status"):
        changes.append(f"status: {old.get('status')} -> {new.get('status')}")
    return changes


def _sha(build: dict[str, Any], output: str) -> str:
    return build["outputs"][output]["sha256"]


def reproduce(bundle: Path, anyway: bool = False, keep_vm: bool = False,
              vm_name: str = "default") -> Comparison:
    """Rebuild or reuse what ``bundle`` names, rerun it, and compare."""
    from .build import build_kernel
    from .experiment import load_experiment
    from .exprun import run_experiment
    from .image import build_image

    bundle = bundle.resolve()
    manifest, result = load_bundle(bundle)
    build, image, experiment = manifest["build"], manifest["image"], manifest["experiment"]
    comparison = Comparison(original=bundle)
    with reporter().step("check the bundle's inputs against today's"):
        comparison.input_changes = kernel_input_changes(build, anyway)
        current = load_experiment(experiment["name"]).content_hash()
        comparison.same_experiment = current == experiment["hash"]
        if not comparison.same_experiment:
            comparison.input_changes.append(f"experiment {experiment['name']} changed since the bundle")
    new_build = build_kernel(build["version"])
    new_image = build_image(image.get("recipe", "bookworm")) if image else None
    comparison.same_kernel = _sha(new_build, "bzImage") == _sha(build, "bzImage")
    comparison.source = source_line(build["source"], new_build["source"])
    if image and new_image:
        comparison.same_image, comparison.image = compare_images(image, new_image)
    rerun = run_experiment(experiment["name"], kernel=build["version"], keep_vm=keep_vm, vm_name=vm_name)
    comparison.rerun = rerun.dir
    new_result = read_json(rerun.dir / "result.json")
    comparison.expectation_changes = compare_expectations(result, new_result)
    comparison.same_expectations = not comparison.expectation_changes
    comparison.trace = compare_traces(bundle / "trace.txt", rerun.dir / "trace.txt")
    atomic_write_json(rerun.dir / "reproduction.json", comparison.to_json())
    return comparison
