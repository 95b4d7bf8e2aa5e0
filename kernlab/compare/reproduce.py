"""`invoke reproduce BUNDLE`: run a saved experiment again and compare.

The bundle's manifest names the kernel build (its inputs and key), the image and the
experiment (its content hash). The bundle's own build is reused while it exists (no
source is resolved). Once it is gone, kernlab rebuilds it from the source the bundle
names (its tarball, URL or git commit; the catalog for a Debian package), after checking
that today's patches, fragments and compiler are the ones the manifest pinned (naming
what changed). Then it reruns the experiment on that build and compares: kernel and
image hashes, expectations, and the trace with pids, timestamps and addresses masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlab.core import lock, paths, registry
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord, ImageRecord, Manifest, RunResult
from kernlab.core.util import atomic_write_json
from kernlab.core.validate import plain_name
from kernlab.experiments.run import COPY_DIR, run_experiment
from kernlab.experiments.spec import Experiment
from kernlab.experiments.suite import recorded_experiment
from kernlab.guest.ensure import Target
from kernlab.kernel import layers
from kernlab.kernel.build import BuildOptions, Plan, build_lock, build_planned, make_plan, plan_source
from kernlab.kernel.debsource import kernel_entry_of
from kernlab.kernel.selection import build_first, choose_kernel, complete_builds
from kernlab.kernel.source import ResolvedSource, SourceOptions, tree_identity

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


def load_bundle(bundle: Path) -> tuple[Manifest, RunResult]:
    """The bundle's manifest and result (one-line errors when missing or damaged)."""
    return Manifest.of(bundle), RunResult.of(bundle)


def bundle_source(build: BuildRecord) -> tuple[SourceOptions, str]:
    """The source the bundle's kernel was built from, as build options and build-kernel flags.

    A Debian package has no such flag: it is the catalog's source (empty options).
    """
    source = build.source
    kind, origin, sha = source.get("kind"), str(source.get("origin", "")), source.get("sha256")
    if kind == "file":
        return SourceOptions(tarball=Path(origin), sha256=sha), f"--tarball {origin} --sha256 {sha}"
    if kind == "tarball":
        return SourceOptions(url=origin, sha256=sha), f"--url {origin} --sha256 {sha}"
    if kind == "git":
        tree, _, ref = origin.rpartition("@")
        commit = source.get("commit") or ref
        return SourceOptions(git=Path(tree), ref=commit), f"--git {tree} --ref {commit}"
    return SourceOptions(), ""


ROUTE_FIELDS = ("source_sha256", "debian")  # name the file or package, not the tree in it


def same_source(old: dict[str, Any], source: Any, scratch: Path) -> bool | None:
    """Whether today's ``source`` holds the bundle's tree (``old`` is its record's source).

    Compared by tree identity, so a tarball and a git tree of the same files are the same
    source; None when the bundle predates identities (then the files' sums decide).
    """
    if not old.get("tree_sha256"):
        return None
    if old.get("sha256") == source.sha256:
        return True
    return tree_identity(source, scratch, scratch / "identity.log") == old["tree_sha256"]


def kernel_input_changes(build: BuildRecord, allow: bool, plan: Plan, source: ResolvedSource) -> list[str]:
    """Differences between the bundle's kernel inputs and today's (``plan`` and its resolved
    ``source``); raises unless allowed."""
    old, new = kernel_entry_of(build), plan.lock_entry(source)
    was = build.source
    same = same_source(was, source, paths.work_dir() / "scratch")
    if same:
        old, new = ({k: v for k, v in e.items() if k not in ROUTE_FIELDS} for e in (old, new))
        if was.get("sha256") != source.sha256:
            reporter().note(f"same source tree {was['tree_sha256'][:16]} by another route "
                            f"({was.get('origin')} then, {source.origin} now)")
    changes = lock.differences(old, new)
    if same is False:
        changes.insert(0, f"source tree changed from {was['tree_sha256'][:16]} "
                          f"to {source.tree_sha256 and source.tree_sha256[:16]}")
    if changes and not allow:
        raise KernlabError(
            f"the bundle's kernel {build.version} was built from other inputs: {changes[0]}",
            "restore those inputs (git checkout the commit in the manifest) or pass --anyway",
            details="\n".join(changes),
        )
    return changes


def _pulled(build: BuildRecord, digest: str | None) -> BuildRecord | None:
    """The bundle's build from KERNLAB_REGISTRY, by its key and the digest the bundle names
    (``digest``, else the one it was pulled at); None when no registry has it."""
    digest = digest or registry.pulled_digest(build)
    final = paths.work_dir() / "build" / build.id
    pulled = registry.lookup(layers.KERNEL, build.version, build.key, final, build_lock(final), digest=digest)
    return BuildRecord.from_json(pulled.record) if pulled is not None else None


def bundle_build(build: BuildRecord, anyway: bool,
                 digest: str | None = None) -> tuple[BuildRecord, list[str]]:
    """The bundle's build if it still exists (nothing resolved), else the one the registry has
    at the bundle's digest (``digest``), else a rebuild from its source.

    Returns the build record to rerun on and how today's kernel inputs differ. The plan and
    the source are made once: the comparison and the rebuild share them.
    """
    for existing in complete_builds():
        if existing.id == build.id:
            reporter().note(f"kernel: the bundle's build {existing.line()}")
            return existing.record, []
    if pulled := _pulled(build, digest):
        return pulled, []
    source_opts, flags = bundle_source(build)
    reporter().note(f"the bundle's build {build.id} is gone: rebuilding it from "
                    f"{build.source.get('origin', 'the catalog')}")
    try:
        plan = make_plan(build.version, BuildOptions(source=source_opts))
        source = plan_source(plan)
        changes = kernel_input_changes(build, anyway, plan, source)
        return BuildRecord.from_json(build_planned(plan, source)), changes
    except KernlabError as error:
        if "--anyway" in error.fix:  # the inputs differ: reproduce's own flag is the fix
            raise
        if not flags:
            raise build_first(error, build.version) from None
        raise KernlabError(error.cause, f"rebuild the bundle's kernel first: `invoke build-kernel "
                           f"--version {build.version} {flags}`", error.details) from None


def compare_images(old: ImageRecord, new: ImageRecord) -> tuple[bool, str]:
    """The same image file, or a rebuilt one (new host keys) with the same package versions."""
    if old.disk_sha256 == new.disk_sha256:
        return True, "the same file"
    was, now = old.packages, new.packages
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


def compare_expectations(old: RunResult, new: RunResult) -> list[str]:
    was, now = old.expectations, new.expectations
    changes = []
    for name in sorted(set(was) | set(now)):
        if was.get(name) != now.get(name):
            changes.append(f"expectation {name}: {was.get(name)} -> {now.get(name)}")
    if old.status != new.status:
        changes.append(f"status: {old.status} -> {new.status}")
    return changes


def bundle_inputs(bundle: Path, manifest: Manifest,
                  result: RunResult) -> tuple[BuildRecord, ImageRecord | None]:
    """The manifest's build and image, or a one-line error saying what is missing."""
    if not manifest.experiment_name or not manifest.experiment_hash:
        raise KernlabError(f"{bundle / 'manifest.json'} names no experiment (name and hash)",
                           "pass a bundle written by `invoke run-experiment`")
    build = manifest.build
    if build is None or not build.has_output("bzImage") or not build.data.get("version"):
        why = result.reason or "no reason recorded"
        raise KernlabError(
            f"{bundle} records no kernel build (the run failed before it had one: {why})",
            f"there is nothing to reproduce; run it afresh: `invoke run-experiment "
            f"{manifest.experiment_name} --kernel {result.kernel or 'VERSION'}`")
    if manifest.image_named and manifest.image is None:
        raise KernlabError(f"{bundle / 'manifest.json'}: `image` is not a record",
                           "pass a bundle written by `invoke run-experiment`")
    return build, manifest.image


def bundle_experiment(bundle: Path, manifest: Manifest, copies: list[Path]) -> tuple[Experiment, bool]:
    """The experiment the bundle ran, by content hash: its folder, else the bundle's copy,
    else ``copies`` (a pack's); never a suite experiment that merely has its name."""
    name = manifest.experiment_name
    own = [bundle / COPY_DIR / name] if not plain_name(name) else []
    return recorded_experiment(manifest, own + copies)


def reproduce(bundle: Path, anyway: bool = False, keep_vm: bool = False,
              vm_name: str = "default", copies: list[Path] | None = None) -> Comparison:
    """Rebuild or reuse what ``bundle`` names, rerun the experiment it recorded, and compare.

    ``copies``: more folders that may hold the recorded experiment (a pack's copy).
    """
    bundle = bundle.resolve()
    manifest, result = load_bundle(bundle)
    build, image = bundle_inputs(bundle, manifest, result)
    comparison = Comparison(original=bundle)
    with reporter().step("check the bundle's inputs against today's"):
        try:
            new_build, comparison.input_changes = bundle_build(
                build, anyway, manifest.artifacts.get("kernel"))
        except (KeyError, TypeError) as error:
            raise KernlabError(f"{bundle / 'manifest.json'}: its build record lacks {error}",
                               "pass a bundle written by `invoke run-experiment`") from None
        exp, comparison.same_experiment = bundle_experiment(bundle, manifest, copies or [])
        if not comparison.same_experiment:
            comparison.input_changes.append(f"experiment {exp.name} changed since the bundle "
                                            f"(rerun from {exp.dir} as it is now)")
    reporter().note(f"experiment {exp.name}: from {exp.dir}")
    target = Target(choose_kernel(new_build.id), image.recipe if image else "bookworm",
                    vm_name, build=new_build)
    new_image = target.kernel_and_image()[1] if image else None
    comparison.same_kernel = new_build.output_sha256("bzImage") == build.output_sha256("bzImage")
    comparison.source = source_line(build.source, new_build.source)
    if image and new_image:
        comparison.same_image, comparison.image = compare_images(image, new_image)
    assert target.choice is not None
    rerun = run_experiment(exp, target.choice, keep_vm=keep_vm, vm_name=vm_name, target=target)
    comparison.rerun = rerun.dir
    comparison.expectation_changes = compare_expectations(result, RunResult.of(rerun.dir))
    comparison.same_expectations = not comparison.expectation_changes
    comparison.trace = compare_traces(bundle / "trace.txt", rerun.dir / "trace.txt")
    atomic_write_json(rerun.dir / "reproduction.json", comparison.to_json())
    return comparison
