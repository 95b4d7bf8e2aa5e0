"""`invoke new-kernel VERSION --like V`: the mechanical part of adding a kernel version.

1. The source: Debian's ``linux-source-VERSION`` when V comes from Debian (the suite is the
   one apt offers it from), else a kernel.org tarball (``--release R --sha256 SUM``) or a local
   one (``--tarball PATH``, pinned by its sha256). It is fetched, verified and extracted into
   ``<work>/new-kernel/VERSION/`` and kept there: the tree to port patches in.
2. V's patches, tried there in series order, each with a dry run that names every hunk:
   - applies exactly: applied, copied into ``patches/VERSION/`` with its header retargeted;
   - applies only at an offset (no fuzz): applied, and refreshed (the same change at its
     new place, regenerated from the tree), copied, the header says so;
   - fuzz or a failed hunk: not applied; the files it touches are saved as they are at that
     point of the series (``base/<patch>/``) so a port is one ``diff -u`` away.
3. Then, and only then, the files: ``configs/lab-VERSION.config`` (V's lab fragment, copied
   with a note; an existing one is kept), ``patches/VERSION/series`` and the catalog entry,
   inserted above V's in configs/kernels.yaml (comments kept) and validated (a catalog that
   no longer loads is put back as it was).
Nothing that exists is overwritten: a version already in the catalog, a series directory
with patches in it or a kept tree from an earlier run are refused, naming what to remove.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from kernlab.core import interrupt, paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.util import atomic_write_text, sha256_file, staging_dir
from kernlab.core.validate import plain_name
from kernlab.kernel.catalog import Catalog, KernelSpec, SourceSpec, load_catalog
from kernlab.kernel.debsource import apt_versions
from kernlab.kernel.patch import Hunk, Patch, collect_patches, dry_run_report, series_dir
from kernlab.kernel.source import SourceOptions, extract_source, resolve_source, tree_release

VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
SUITE = re.compile(r"^\s+\d+\s+\S+\s+(\S+?)/\S+\s+\S+\s+Packages\s*$")


@dataclass
class Tried:
    """One of V's patches on the new tree."""

    patch: Patch
    outcome: str  # exact | refreshed | port
    hunks: list[Hunk] = field(default_factory=list)  # the inexact ones
    copied: Path | None = None
    base: Path | None = None  # the files it touches, as they were when it was tried (port)

    def line(self, width: int) -> str:
        name = f"{self.patch.series.name}/{self.patch.name}"
        if self.outcome == "exact":
            how = "applies cleanly: copied"
        elif self.outcome == "refreshed":
            moved = ", ".join(f"hunk #{h.number} of {h.file} moved {h.offset:+d} lines" for h in self.hunks)
            how = f"applies at an offset ({moved}): refreshed and copied"
        else:
            why = "; ".join(h.describe() for h in self.hunks) or "does not apply (see the log)"
            how = f"NEEDS PORTING: {why}"
        return f"  {name:<{width}}  {how}"


@dataclass
class NewKernel:
    """What `new-kernel` made, for the report."""

    version: str
    like: str
    release: str
    origin: str
    entry: str  # the YAML block added to the catalog
    catalog: Path
    fragment: Path
    fragment_kept: bool
    series: Path
    tree: Path
    log: Path
    tried: list[Tried]

    def report(self) -> str:
        width = max([len(f"{t.patch.series.name}/{t.patch.name}") for t in self.tried] or [10])
        port = [t for t in self.tried if t.outcome == "port"]
        lines = [
            f"new kernel {self.version} (release {self.release}) like {self.like}, from {self.origin}",
            f"  catalog    {self.catalog}: entry {self.version} added above {self.like}",
            f"  fragment   {self.fragment}" + (" (kept: it existed)" if self.fragment_kept
                                               else f" (a copy of {self.like}'s lab fragment: check it)"),
            f"  series     {self.series}",
            f"  tree       {self.tree} (kept, with the patches that apply: port the others here)",
            f"  log        {self.log}",
            f"patches of {self.like} on {self.release}:",
            *(t.line(width) for t in self.tried),
        ]
        if not self.tried:
            lines.append("  (none)")
        lines.append("")
        for t in port:
            files = sorted({h.file for h in t.hunks} or {"the files it touches"})
            base = t.base or self.tree.parent / "base"
            lines.append(f"port {t.patch.name}: edit {', '.join(files)} in {self.tree.name}/, then")
            lines += [f"    diff -u --label a/{f} --label b/{f} {base}/{f} {self.tree}/{f}" for f in files]
            lines.append(f"  into {self.series}/<name>.patch (its header: Kernel: {self.version}), "
                         "and list it in the series file")
        lines.append(f"then: `invoke build-kernel --version {self.version} --update-lock` (pins the source "
                     "in kernlab.lock); README's \"Adding a kernel\" says the rest")
        return "\n".join(lines)


# ---------------------------------------------------------------- checks first
def _checked(version: str, like: str) -> tuple[Catalog, KernelSpec, Path]:
    """The catalog, V's entry and the kept tree's folder; refuses what would overwrite."""
    if not VERSION.match(version) or plain_name(version):
        raise KernlabError(f"{version!r} is not a kernel version like 6.12 or 6.12.118",
                           "give the version the catalog will name, e.g. `invoke new-kernel 6.12 --like 6.1`")
    catalog = load_catalog()
    if version in catalog.kernels:
        raise KernlabError(f"kernel {version} is in the catalog already ({catalog.path})",
                           f"build it: `invoke build-kernel --version {version}`, or remove its entry first")
    spec = catalog.kernel(like)
    series = paths.patches_dir() / version
    if series.is_dir() and any(series.iterdir()):
        raise KernlabError(f"{series} exists and is not empty",
                           f"move it away (new-kernel writes the series of {version} there)")
    kept = paths.work_dir() / "new-kernel" / version
    if kept.exists():
        raise KernlabError(f"{kept} exists (a tree from an earlier `new-kernel {version}`)",
                           f"port in it, or remove it (`rm -r {kept}`) and run new-kernel again")
    return catalog, spec, kept


def apt_suite(package: str) -> str:
    """The suite apt offers ``package``'s candidate from (bookworm-security, say); '' if none."""
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True,
                         check=False).stdout
    candidate = False
    for line in out.splitlines():
        if line.strip().startswith(("***", "Version table")):
            candidate = True
        if candidate and (match := SUITE.match(line)):
            return match.group(1)
    return ""


def new_source(version: str, like: KernelSpec, release: str | None, sha256: str | None,
               tarball: Path | None) -> tuple[SourceSpec, ...]:
    """The new entry's sources: the user's tarball, else Debian's package when V comes from
    Debian (and no --release asks for kernel.org), else kernel.org's tarball of --release."""
    major = version.split(".")[0]
    if tarball is not None:
        if not tarball.is_file():
            raise KernlabError(f"--tarball {tarball} does not exist", "give the path of a kernel tarball")
        pinned = sha256 or sha256_file(tarball)
        return (SourceSpec("file", {"path": str(tarball.resolve()), "sha256": pinned}),)
    if release:
        if not sha256:
            raise KernlabError(f"--release {release} names kernel.org's linux-{release}.tar.xz, which "
                               "needs its sha256", "add --sha256 SUM (from kernel.org's sha256sums.asc)")
        return (SourceSpec("tarball", {"url": f"{{mirror}}/v{major}.x/linux-{release}.tar.xz",
                                       "sha256": sha256}),)
    if any(s.kind == "debian" for s in like.sources):
        package = f"linux-source-{'.'.join(version.split('.')[:2])}"
        candidate, _ = apt_versions(package)
        if not candidate:
            raise KernlabError(f"apt offers no {package}",
                               "add the suite that has it to apt's sources and `apt-get update`, or give "
                               "--release R --sha256 SUM for kernel.org's tarball")
        return (SourceSpec("debian", {"package": package, "suite": apt_suite(package) or "bookworm"}),
                SourceSpec("tarball", {"url": f"{{mirror}}/v{major}.x/linux-{candidate.split('-')[0]}"
                                              ".tar.xz", "sha256": None}))
    raise KernlabError(f"{like.version} is not from Debian: say where {version} comes from",
                       "give --release R --sha256 SUM (kernel.org) or --tarball PATH")


# ---------------------------------------------------------------- the patches
def _files_of(patch: Patch) -> list[str]:
    """The files a patch changes (its ``+++ b/`` lines)."""
    text = patch.path.read_text(errors="replace")
    return list(dict.fromkeys(m.split("\t")[0] for m in re.findall(r"^\+\+\+ b/(\S+)", text, re.MULTILINE)))


def retarget(text: str, version: str, release: str, note: str) -> str:
    """The patch's header with its ``Kernel:`` line naming ``version`` (the old line kept in
    ``note``'s words); a header without one gets the line on top."""
    head, sep, diff = text.partition("\n--- ")
    line = f"Kernel:  {version} (written for {release}; {note})"
    if re.search(r"^Kernel:.*$", head, re.MULTILINE):
        head = re.sub(r"^Kernel:.*$", line, head, count=1, flags=re.MULTILINE)
    else:
        head = f"{line}\n\n{head}"
    return head + sep + diff


def refreshed_diff(tree: Path, before: dict[str, str], files: list[str]) -> str:
    """The unified diff of ``files`` from ``before`` to the tree, as a patch's body."""
    out = []
    for name in files:
        after = (tree / name).read_text(errors="replace") if (tree / name).exists() else ""
        out += difflib.unified_diff(before[name].splitlines(True), after.splitlines(True),
                                    f"a/{name}", f"b/{name}", n=3)
    return "".join(out)


def _apply(tree: Path, patch: Patch, log: Path) -> None:
    done = subprocess.run(["patch", "-p1", "--batch", "--forward", "--fuzz=0", "--no-backup-if-mismatch",
                           "-i", str(patch.path)], cwd=tree, capture_output=True, text=True, check=False)
    with open(log, "a") as out:
        out.write(f"\n$ patch {patch.path}\n{done.stdout}{done.stderr}")
    if done.returncode:
        raise KernlabError(f"{patch.name} failed after a clean dry run; full log: {log}",
                           "read the log")


def try_patch(tree: Path, patch: Patch, version: str, release: str, work: Path, log: Path) -> Tried:
    """``patch`` on ``tree``: applied and copied (exactly or refreshed), or left for porting."""
    exact, inexact, _ = dry_run_report(tree, patch, log)
    files = _files_of(patch)
    fuzzy = [h for h in inexact if not h.applied or h.fuzz]
    origin = f"patches/{patch.series.name}/{patch.name}"
    if exact:
        _apply(tree, patch, log)
        text = retarget(patch.path.read_text(), version, release,
                        f"{origin} applies as is, by `invoke new-kernel`")
        return Tried(patch, "exact", copied=_copy(work, patch.name, text))
    if not fuzzy and inexact:
        before = {f: (tree / f).read_text(errors="replace") if (tree / f).exists() else "" for f in files}
        _apply(tree, patch, log)
        head = patch.path.read_text(errors="replace").partition("\n--- ")[0]
        text = retarget(head, version, release, f"{origin} refreshed by `invoke new-kernel`: its hunks "
                        "applied here at an offset") + "\n" + refreshed_diff(tree, before, files)
        return Tried(patch, "refreshed", inexact, copied=_copy(work, patch.name, text))
    base = work / "base" / patch.path.stem
    for name in files:
        if (tree / name).is_file():
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / name, base / name)
    return Tried(patch, "port", inexact, base=base)


def _copy(work: Path, name: str, text: str) -> Path:
    """The patch's new text, staged in ``work/patches`` until the series is written."""
    path = work / "patches" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------- the files
def entry_text(spec: KernelSpec, version: str, release: str, like: str) -> str:
    """The catalog entry's YAML, in the file's style (comments name where it came from)."""
    def flow(values: tuple[str, ...] | list[str]) -> str:
        return "[" + ", ".join(values) + "]"

    sources = []
    for source in spec.sources:
        if source.kind == "debian":
            sources.append(f"      - debian: {{package: {source.options['package']}, "
                           f"suite: {source.options['suite']}}}")
        else:
            sha = source.options.get("sha256")
            key = "url" if source.kind == "tarball" else "path"
            sources.append(f"      - {source.kind}: {{{key}: \"{source.options[key]}\", "
                           f"sha256: {sha or 'null'}}}")
    lines = [
        f"  \"{version}\":",
        f"    release: \"{release}\"  # made by `invoke new-kernel {version} --like {like}`",
        f"    description: {version} (added like {like}; describe it)",
        "    sources:",
        *sources,
        f"    patches: [\"{version}\"]",
        "    config:",
        f"      base: {spec.base}",
        f"      fragments: {flow(spec.fragments)}",
        f"    compiler: {spec.compiler}",
    ]
    if spec.samples_bpf:
        lines.append(f"    samples_bpf: {flow(spec.samples_bpf)}")
    if spec.symbols:
        lines.append(f"    symbols: {flow(spec.symbols)}")
    if spec.arch != "x86_64":
        lines.append(f"    arch: {spec.arch}")
    return "\n".join(lines) + "\n\n"


def insert_entry(catalog: Path, block: str, like: str) -> None:
    """``block`` above ``like``'s entry in the catalog file; the file is put back if the
    catalog no longer loads."""
    text = catalog.read_text()
    match = re.search(r"^  [\"']?" + re.escape(like) + r"[\"']?:\s*$", text, re.MULTILINE)
    if not match:
        raise KernlabError(f"{catalog}: no line `  \"{like}\":` to add the new entry above",
                           f"add this entry under kernels: yourself:\n{block}")
    atomic_write_text(catalog, text[:match.start()] + block + text[match.start():])
    try:
        load_catalog(catalog)
    except KernlabError:
        atomic_write_text(catalog, text)
        raise


def write_fragment(spec: KernelSpec, like: str, version: str) -> tuple[tuple[str, ...], Path, bool]:
    """The new fragment list and file (V's lab fragment copied with a note; kept if it exists)."""
    old, new = f"lab-{like}.config", f"lab-{version}.config"
    target = paths.configs_dir() / new
    if old not in spec.fragments:
        return spec.fragments, target, target.exists()
    fragments = tuple(new if f == old else f for f in spec.fragments)
    if target.exists():
        return fragments, target, True
    text = (paths.configs_dir() / old).read_text()
    note = (f"# kernlab: {version}, copied from {old} by `invoke new-kernel {version} --like {like}`:\n"
            f"# check every option against {version} (an option it lacks fails the build, named).\n")
    atomic_write_text(target, note + text)
    return fragments, target, False


# ---------------------------------------------------------------- the command
def new_kernel(version: str, like: str, *, release: str | None = None, sha256: str | None = None,
               tarball: Path | None = None) -> NewKernel:
    """Add ``version`` to the catalog like ``like`` and try ``like``'s patches on its tree."""
    catalog, spec, kept = _checked(version, like)
    sources = new_source(version, spec, release, sha256, tarball)
    probe = replace(spec, version=version, release=release or "", sources=sources, patches=())
    log = kept / "new-kernel.log"
    with interrupt.scope(), staging_dir(kept) as work:  # SIGTERM too: the half-made tree goes
        with reporter().step(f"source for {version}"):
            resolved = resolve_source(probe, catalog, SourceOptions(update_lock=True), work / "source.log")
        with reporter().step(f"extracting {resolved.origin}"):
            top = extract_source(resolved, work / "x", work / "source.log")
            got = tree_release(top, resolved.origin)
            tree = work / f"linux-{got}"
            top.rename(tree)
            shutil.rmtree(work / "x", ignore_errors=True)
        tried = []
        with reporter().step(f"{like}'s patches on {got}"):
            for patch in collect_patches([series_dir(s) for s in spec.patches]):
                tried.append(try_patch(tree, patch, version, got, work, work / "new-kernel.log"))
                reporter().note(f"{patch.name}: {tried[-1].outcome}")
    tree = kept / f"linux-{got}"
    for item in tried:  # the staging folder is ``kept`` now
        item.copied = kept / "patches" / item.patch.name if item.copied else None
        item.base = kept / "base" / item.patch.path.stem if item.base else None
    return _write_files(catalog, spec, version, like, got, sources, resolved.origin, tree, log, tried)


def _write_files(catalog: Catalog, spec: KernelSpec, version: str, like: str, release: str,
                 sources: tuple[SourceSpec, ...], origin: str, tree: Path, log: Path,
                 tried: list[Tried]) -> NewKernel:
    """The fragment, the series and the catalog entry, once everything else worked."""
    fragments, fragment, fragment_kept = write_fragment(spec, like, version)
    series = paths.patches_dir() / version
    series.mkdir(parents=True, exist_ok=True)
    listed = [f"# written for: {release}"]
    for item in tried:
        if item.copied:
            shutil.copy2(item.copied, series / item.patch.name)
            listed.append(item.patch.name)
        else:
            listed.append(f"# {item.patch.name}: needs porting (patches/{item.patch.series.name}; "
                          "`invoke new-kernel` report)")
    atomic_write_text(series / "series", "\n".join(listed) + "\n")
    new_spec = replace(spec, sources=sources, fragments=fragments)
    block = entry_text(new_spec, version, release, like)
    insert_entry(catalog.path, block, like)
    return NewKernel(version, like, release, origin, block, catalog.path, fragment, fragment_kept,
                     series, tree, log, tried)
