"""`invoke build-kernel`: source → patch → configure → verify → make → record.

Inputs (source checksum, patches, fragments, base, compiler, make variables) are
hashed into a key; outputs live in ``<work>/build/<version>-<key12>/`` with
``build.json`` written last. Same key and a complete record: "up to date", no make.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlab.core import filelock, inuse, lock, oci, paths, registry
from kernlab.core.errors import KernlabError
from kernlab.core.proc import capture, require_tool, run_logged, status_from_make
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.core.util import (
    atomic_write_json,
    hash_inputs,
    scoped_environ,
    sha256_file,
    short,
    staging_dir,
    why_not_a_file,
)
from kernlab.kernel import identity, layers, symbols, treecache, variant
from kernlab.kernel.catalog import Catalog, KernelSpec, load_catalog
from kernlab.kernel.kconfig import load_model, raise_if_dropped, requested_options, verify_config
from kernlab.kernel.kheaders import find_headers
from kernlab.kernel.patch import Patch, PatchFailed, apply_series, collect_patches, series_dir
from kernlab.kernel.source import (
    ResolvedSource,
    SourceOptions,
    describe_sources,
    extract_source,
    resolve_source,
    tree_release,
)

BUILD_LOGIC_VERSION = 2  # bump when the way a build is made changes its outputs
REPRODUCIBLE_ENV = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "kernlab",
    "KBUILD_BUILD_HOST": "kernlab",
    "KBUILD_BUILD_VERSION": "1",
    "LOCALVERSION": "",
    "LC_ALL": "C",
    "TZ": "UTC",
}


@dataclass
class BuildOptions:
    source: SourceOptions = field(default_factory=SourceOptions)
    extra_patches: list[Path] = field(default_factory=list)
    extra_fragments: list[Path] = field(default_factory=list)
    without_patches: tuple[str, ...] = ()  # catalog patches left out (--no-patch NAME)
    jobs: int = 0
    ccache: bool = True
    clean: bool = False
    samples: bool = True
    update_lock: bool = False
    registry: bool = True  # look the build up by key in KERNLAB_REGISTRY before building it

    def __post_init__(self) -> None:
        if self.without_patches and self.update_lock:
            raise KernlabError("--no-patch builds a variant; --update-lock would record it as the "
                               "kernel's inputs",
                               "leave --update-lock out (the lock is checked without the patches left out)")


@dataclass
class Plan:
    """Everything that determines a build, resolved without network or make."""

    spec: KernelSpec
    catalog: Catalog
    patches: list[Patch]
    fragments: list[Path]
    compiler: str
    opts: BuildOptions
    left_out: tuple[str, ...] = ()  # catalog patches --no-patch left out, named when planned
    variant_fragment: Path | None = None  # a variant's own fragment (kernlab.kernel.variant)

    def lock_entry(self, source: ResolvedSource) -> dict[str, Any]:
        """The inputs kernlab.lock pins for the base kernel (a variant's fragment is its own)."""
        return lock.kernel_entry(
            source.sha256, [p.record() for p in self.patches],
            [(f.name, sha256_file(f)) for f in self.fragments if f != self.variant_fragment],
            compiler_version(self.compiler), binutils_version(), debian=source.extra.get("debian"),
        )

    def inputs(self, source_id: str) -> dict[str, Any]:
        return {
            "logic": BUILD_LOGIC_VERSION,
            "version": self.spec.version,
            "arch": self.spec.arch,
            "source": source_id,
            "patches": [p.record()["sha256"] for p in self.patches],
            # the patches left out by file name, however --no-patch spelled them
            **({"without_patches": list(self.left_out)} if self.opts.without_patches else {}),
            "base": self.spec.base,
            "fragments": [[f.name, sha256_file(f)] for f in self.fragments],
            "compiler": compiler_version(self.compiler),
            "binutils": binutils_version(),
            "samples_bpf": list(self.spec.samples_bpf) if self.opts.samples else [],
            "env": REPRODUCIBLE_ENV,
            "make": make_command(self, Path("/O"), Path("/S"), ["bzImage", "modules"])[3:],
            "pahole": capture(["pahole", "--version"]),
            "cc_wrapper": sha256_file(CC_WRAPPER) if self.opts.ccache else "",
        }


def compiler_version(compiler: str) -> str:
    return capture([compiler, "--version"]).splitlines()[0] if shutil.which(compiler) else ""


def binutils_version() -> str:
    out = capture(["ld", "--version"])
    return out.splitlines()[0] if out else ""


def make_plan(version: str, opts: BuildOptions | None = None, catalog: Catalog | None = None) -> Plan:
    """What building ``version`` takes: patches, fragments, compiler (``catalog``: already loaded)."""
    opts = opts or BuildOptions()
    catalog = catalog or load_catalog()
    spec = catalog.kernel(version)
    if spec.variant is not None and opts.update_lock:
        raise KernlabError(f"{version} is a variant; --update-lock would record its changes as "
                           f"{spec.base_version}'s inputs",
                           f"leave --update-lock out, or update {spec.base_version} itself")
    patch_dirs = [series_dir(name) for name in spec.patches] + list(opts.extra_patches)
    for directory in patch_dirs:
        if not directory.is_dir():
            named = ("--patches" if directory in opts.extra_patches
                     else f"the patches of {version} in {catalog.path}")
            raise KernlabError(f"patch directory {directory} does not exist",
                               f"create it with a `series` file, or fix {named}")
    fragments = [paths.configs_dir() / name for name in spec.fragments] + list(opts.extra_fragments)
    for fragment in fragments:
        if not fragment.is_file():
            raise KernlabError(f"config fragment {fragment} {why_not_a_file(fragment)}", "fix --fragment")
    every = collect_patches(patch_dirs)
    own = variant_fragment(spec)
    kept = _without(every, opts.without_patches, version)
    if spec.variant is not None:
        kept = _without(kept, spec.variant.without_patches, version,
                        f"variants.{spec.variant.name}.without_patches in {catalog.path}")
    return Plan(spec, catalog, kept, fragments + ([own] if own else []), spec.compiler, opts,
                tuple(p.name for p in every if p not in kept), own)


def variant_fragment(spec: KernelSpec) -> Path | None:
    """The fragment a variant adds after the entry's own (None for a catalog entry)."""
    return variant.fragment_path(spec.variant) if spec.variant is not None else None


def _without(patches: list[Patch], names: tuple[str, ...], version: str, where: str = "") -> list[Patch]:
    """``patches`` minus the ones named (by file name or series/name); a name not in the series
    is refused (``where``: the catalog key that named it; else --no-patch did)."""
    def named(patch: Patch, name: str) -> bool:
        return name in (patch.name, f"{patch.series.name}/{patch.name}", patch.path.stem)

    for name in names:
        if not any(named(p, name) for p in patches):
            raise KernlabError(f"{where or '--no-patch'} {name}: no such patch in the series of {version}",
                               f"give a name `invoke build-kernel --version {version} --plan` lists")
    return [p for p in patches if not any(named(p, name) for name in names)]


def _written_for(patch: Patch, plan: Plan) -> str:
    """`--plan`'s flag on a patch whose header names another release line than the entry's."""
    other = patch.names_another_release(plan.spec.release)
    return f"  WRITTEN FOR {other} (its header), not {plan.spec.release}" if other else ""


def describe_plan(plan: Plan) -> dict[str, Any]:
    """What `build-kernel --plan` prints: no network, no build."""
    mirror = plan.catalog.effective_mirror()
    return {
        "version": plan.spec.version,
        "release": plan.spec.release,
        "sources (in order)": describe_sources(plan.spec, plan.opts.source, mirror),
        "patches": [f"{p.series.name}/{p.name} sha256={p.record()['sha256'][:16]}" + _written_for(p, plan)
                    for p in plan.patches],
        **({"left out (--no-patch)": list(_left_out(plan))} if plan.opts.without_patches else {}),
        "config": {"base": plan.spec.base, "fragments": [str(f) for f in plan.fragments]},
        "compiler": f"{plan.compiler} ({compiler_version(plan.compiler) or 'NOT INSTALLED'})",
        "binutils": binutils_version(),
        "make": " ".join(make_command(plan, Path("<build>/obj"), Path("<src>"), ["bzImage", "modules"])),
        "samples_bpf": list(plan.spec.samples_bpf) if plan.opts.samples else [],
        "environment": REPRODUCIBLE_ENV,
    }


# ---------------------------------------------------------------- the pipeline
def build_kernel(version: str, opts: BuildOptions | None = None) -> BuildRecord:
    """Build (or find up to date) the kernel ``version``; returns its build record."""
    started = time.monotonic()
    plan = make_plan(version, opts)
    if (pulled := from_registry(plan)) is not None:
        return pulled
    return build_planned(plan, plan_source(plan), started)


def plan_source(plan: Plan) -> ResolvedSource:
    """The source tree of ``plan``, resolved (fetched, verified, unpacked) once."""
    opts = plan.opts
    opts.source.update_lock = opts.source.update_lock or opts.update_lock
    require_tool(plan.compiler, plan.compiler)
    logs = paths.work_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with reporter().step(f"source for {plan.spec.version}"):
        return resolve_source(plan.spec, plan.catalog, opts.source, logs / f"source-{plan.spec.version}.log")


def build_planned(plan: Plan, source: ResolvedSource, started: float | None = None) -> BuildRecord:
    """Build (or find up to date) what ``plan`` describes from the resolved ``source``."""
    started = time.monotonic() if started is None else started
    opts, version = plan.opts, plan.spec.version
    lock_entry = plan.lock_entry(source)
    lock.check_kernel(plan.spec.base_version, lock_entry, opts.update_lock, without=_left_out(plan))
    key = hash_inputs(plan.inputs(source.sha256))
    build_dir = paths.work_dir() / "build" / f"{version}-{short(key)}"
    if not opts.clean and (record := _up_to_date(version, build_dir, not plan.left_out)):
        return _accepted(version, lock_entry, opts, record)
    with filelock.exclusive(build_lock(build_dir), f"build {build_dir.name}"):
        # built while we waited:
        if not opts.clean and (record := _up_to_date(version, build_dir, not plan.left_out)):
            return _accepted(version, lock_entry, opts, record)
        return _accepted(version, lock_entry, opts,
                         BuildRecord.from_json(_build_locked(plan, source, key, build_dir, started)))


# ---------------------------------------------------------------- the registry
def pinned_source_sha256(plan: Plan) -> str | None:
    """The source checksum a build of ``plan`` has without resolving (or fetching) it:
    kernlab.lock's for the version, else the catalog's first pinned tarball or file."""
    locked = lock.read_lock()["kernels"].get(plan.spec.base_version) or {}
    if locked.get("source_sha256"):
        return str(locked["source_sha256"])
    for source in plan.spec.sources:
        if source.kind in ("tarball", "file") and source.options.get("sha256"):
            return str(source.options["sha256"])
    return None


def from_registry(plan: Plan) -> BuildRecord | None:
    """The build of ``plan`` from KERNLAB_REGISTRY by its key (pulled, verified, in place),
    or the one already here; None when no registry is set, the key cannot be known without
    resolving the source (--tarball, --git, --url, --deb), or the registry lacks it."""
    opts = plan.opts
    chosen = opts.source
    if not opts.registry or opts.clean or opts.update_lock or oci.configured() is None or \
            any((chosen.tarball, chosen.git, chosen.url, chosen.deb)):
        return None
    source_sha256 = pinned_source_sha256(plan)
    if source_sha256 is None:
        return None
    key = hash_inputs(plan.inputs(source_sha256))
    build_dir = paths.work_dir() / "build" / f"{plan.spec.version}-{short(key)}"
    if record := _up_to_date(plan.spec.version, build_dir, not plan.left_out):
        return record
    pulled = registry.lookup(layers.KERNEL, plan.spec.version, key, build_dir, build_lock(build_dir))
    if pulled is None:
        return None
    if not plan.left_out:
        _remember_latest(plan.spec.version, build_dir)
    return BuildRecord.from_json(pulled.record)


def vmlinux_of(build: BuildRecord) -> Path:
    """The build's vmlinux, pulled now from the registry if the build was pulled without it."""
    path = build.vmlinux
    if path.is_file() or not registry.pulled_digest(build):
        return path
    return registry.lazy_layer(layers.KERNEL, build, "vmlinux.zst", build_lock(build.build_dir))


def rebuild_check(version: str, opts: BuildOptions | None = None) -> tuple[BuildRecord, BuildRecord]:
    """Rebuild ``version``'s build (pulled from the registry, or found here) from source in
    a scratch work area and compare the bzImages byte for byte: (the build, the rebuild).
    The source is extracted and patched anew there (not this machine's kept tree).

    A difference is an error naming both sha256s (the scratch area is kept for diffing);
    the same bytes remove it.
    """
    opts = opts or BuildOptions()
    build = build_kernel(version, dataclasses.replace(opts, clean=False))
    if not registry.pulled_digest(build):
        reporter().note(f"build {build.id} was made here, not pulled: rebuilding it all the same")
    scratch = paths.work_dir() / "rebuild-check" / build.id
    shutil.rmtree(scratch, ignore_errors=True)
    with reporter().step(f"rebuild {build.id} from source in {scratch}"), \
            scoped_environ({"KERNLAB_WORK": str(scratch), treecache.ENV: "0"}, unset=(oci.REGISTRY_ENV,)):
        rebuilt = build_kernel(version, dataclasses.replace(opts, registry=False, clean=False))
    ours, theirs = rebuilt.output_sha256("bzImage"), build.output_sha256("bzImage")
    if rebuilt.key != build.key:
        raise KernlabError(f"the rebuild of {version} has key {short(rebuilt.key)}, the build "
                           f"{build.id} key {short(build.key)}: not the same inputs",
                           f"compare `invoke kernel-info --version {build.id}` with the rebuild in {scratch}")
    if sha256_file(rebuilt.bzimage) != ours or ours != theirs:
        raise KernlabError(f"bzImage differs: {build.id} has sha256 {theirs}, the rebuild from source "
                           f"{ours}", f"compare them (diffoscope {build.bzimage} {rebuilt.bzimage}); "
                           f"the rebuild is kept in {scratch}")
    shutil.rmtree(scratch, ignore_errors=True)
    reporter().note(f"rebuild check of {build.id}: identical bzImage, sha256 {ours}")
    return build, rebuilt


def _left_out(plan: Plan) -> tuple[str, ...]:
    """File names of the catalog patches --no-patch left out (the lock is checked without them)."""
    return plan.left_out


def _accepted(version: str, lock_entry: dict[str, Any], opts: BuildOptions,
              record: BuildRecord) -> BuildRecord:
    """``record``, after --update-lock has written its inputs to kernlab.lock (a build of
    those inputs may already exist: accepting them must not need a rebuild)."""
    if opts.update_lock:
        lock.update_kernel(version, lock_entry)
        reporter().note(f"{lock.lock_path()} updated for {version}")
    return record


def build_lock(build_dir: Path) -> Path:
    """The lock file of one build key: one process at a time builds into ``build_dir``."""
    return filelock.locks_dir(paths.work_dir()) / f"build-{build_dir.name}.lock"


def _up_to_date(version: str, build_dir: Path, remember: bool = True) -> BuildRecord | None:
    """The complete record in ``build_dir`` (noted, and remembered as latest when ``remember``:
    not a --no-patch variant), else None."""
    record = complete_record(build_dir / "build.json")
    if record:
        reporter().note(f"{version} is up to date: {record.bzimage}")
        if remember:
            _remember_latest(version, build_dir)
    return record


def _build_locked(plan: Plan, source: ResolvedSource, key: str, build_dir: Path,
                  started: float) -> dict[str, Any]:
    """build_kernel's work, under the build key's lock; its source tree is marked in use
    (kernlab.core.inuse) from when it is made until the build ends, so `clean` leaves it."""
    with contextlib.ExitStack() as held:
        with reporter().step(f"patched tree for {plan.spec.base_version}"), _tree_lock(plan, source):
            tree = prepared_tree(plan, source)
            held.enter_context(inuse.using(tree, f"build {build_dir.name}"))
        return _compile(plan, source, key, build_dir, tree, started)


def _compile(plan: Plan, source: ResolvedSource, key: str, build_dir: Path, tree: Path,
             started: float) -> dict[str, Any]:
    """Configure, make and record the build of ``tree`` into ``build_dir``."""
    version, opts = plan.spec.version, plan.opts
    record_path = build_dir / "build.json"
    obj = build_dir / "obj"
    if opts.clean and build_dir.exists():
        shutil.rmtree(build_dir)
    obj.mkdir(parents=True, exist_ok=True)
    log_dir = build_dir / "logs"
    with reporter().step("configure and verify"):
        verification = configure(plan, tree, obj, log_dir)
    with reporter().step(f"make bzImage modules (-j{jobs(opts)})"):
        make(plan, tree, obj, ["bzImage", "modules"], log_dir / "make.log")
    verify_symbols(plan, tree, obj, log_dir / "make.log")
    with reporter().step("headers_install"):
        make(plan, tree, obj, ["headers_install"], log_dir / "headers.log")
    samples = {}
    if opts.samples and plan.spec.samples_bpf:
        with reporter().step("samples/bpf"):
            samples = build_samples(plan, tree, obj, log_dir / "samples-bpf.log")
    record = make_record(plan, source, key, tree, obj, verification, samples, started)
    atomic_write_json(record_path, record)
    if not plan.left_out:  # a --no-patch variant never becomes the version's latest build
        _remember_latest(version, build_dir)
    return record


def jobs(opts: BuildOptions) -> int:
    return opts.jobs or os.cpu_count() or 1


def _tree_key(plan: Plan, source: ResolvedSource) -> str:
    return hash_inputs([source.sha256, [p.record()["sha256"] for p in plan.patches]])


@contextlib.contextmanager
def _tree_lock(plan: Plan, source: ResolvedSource) -> Iterator[None]:
    """One process at a time makes a source tree; staging left by a killed one is removed."""
    name = f"{plan.spec.base_version}-{short(_tree_key(plan, source))}"
    with filelock.exclusive(filelock.locks_dir(paths.work_dir()) / f"src-{name}.lock", f"source tree {name}"):
        for stale in (paths.work_dir() / "src").glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield


def prepared_tree(plan: Plan, source: ResolvedSource) -> Path:
    """The extracted, patched source tree, shared by builds with the same source+patches."""
    tree_key = _tree_key(plan, source)
    final = paths.work_dir() / "src" / f"{plan.spec.base_version}-{short(tree_key)}"
    log = paths.work_dir() / "logs" / f"patch-{plan.spec.base_version}-{short(tree_key)}.log"
    if (final / treecache.DONE).exists() or treecache.take(final):
        if (final / identity.MARKER).is_file():
            source.set_tree((final / identity.MARKER).read_text().strip())
        treecache.keep(final)
        return final
    with staging_dir(final) as staging:
        reporter().note(f"extracting {source.origin}")
        top = extract_source(source, staging / "x", log)
        release = tree_release(top, source.origin)  # a tree without a Makefile stops here
        # before any patch: the source's own tree (remembered by the source's sha256 once hashed)
        source.set_tree(source.tree_sha256 or identity.tree_sha256(top))
        (staging / identity.MARKER).write_text(f"{source.tree_sha256}\n")
        if release != plan.spec.release:
            reporter().note(f"tree is {release} (catalog names {plan.spec.release})")
        for patch in plan.patches:
            if other := patch.names_another_release(release):
                reporter().warn(f"{patch.series.name}/{patch.name}: its header says Kernel {other}, "
                                f"this tree is {release}")
        try:
            apply_series(top, plan.patches, release, log)
        except PatchFailed as failed:
            raise _kept_failure(failed, top, final) from None
        for item in top.iterdir():
            os.replace(item, staging / item.name)
        shutil.rmtree(staging / "x")  # now empty: the tree's top directory was inside it
        (staging / treecache.DONE).write_text(release + "\n")
    treecache.keep(final)
    return final


def _kept_failure(failed: PatchFailed, top: Path, final: Path) -> KernlabError:
    """The tree a patch did not apply to, kept beside the trees (``<tree>.failed``, replacing
    an older one) with the series applied up to that patch: the place to refresh it."""
    kept = final.with_name(final.name + ".failed")
    shutil.rmtree(kept, ignore_errors=True)
    os.replace(top, kept)
    return KernlabError(f"{failed.cause}; the tree is kept at {kept} (the patches before "
                        f"{failed.patch.name} applied, it not)",
                        f"refresh {failed.patch.path} against {kept} (edit there, `diff -u` the files "
                        "it touches), or build the release it was written for", details=failed.details)


def make_command(plan: Plan, obj: Path | None, tree: Path, targets: list[str],
                 host_ccache: bool = True) -> list[str]:
    """make with the catalog's compiler (through ccache), -j cores, O=obj unless in-tree.

    ``host_ccache`` False keeps HOSTCC a single word: samples/bpf builds bpftool with an
    unquoted ``CC=$(HOSTCC)``, which splits ``kernlab-ccache gcc-12``.

    Its arguments after ``-C <tree>`` go into the build key (with placeholder paths), so
    a change of flags here gives a new key and a rebuild.
    """
    cc = plan.compiler
    if plan.opts.ccache and shutil.which("ccache"):
        cc = f"{CC_WRAPPER.name} {cc}"  # ccache, but not for .incbin sources (see the script)
    maps = debug_prefix_maps(tree, obj, maps_file_macro(plan.spec.base_version))
    # HOSTCC through ccache too: a --clean rebuild otherwise recompiles objtool,
    # resolve_btfids and their libbpf/libsubcmd twice (obj/ and the samples tree's prepare).
    # Host tools only run at build time; the bzImage is unchanged (measured, README).
    hostcc = cc if host_ccache else plan.compiler
    cmd = ["make", "-C", str(tree), *([f"O={obj}"] if obj else []), f"ARCH={plan.spec.arch}", f"CC={cc}",
           f"HOSTCC={hostcc}", f"KCFLAGS={maps}", f"KAFLAGS={maps}", f"-j{jobs(plan.opts)}"]
    flags = pahole_flags(tree)
    if flags is not None:
        cmd.append(f"PAHOLE_FLAGS={flags}")
    return cmd + targets


SOURCE_NAME = "/kernlab/src"  # what debug info calls the source tree, wherever it lives
OBJ_NAME = "/kernlab/obj"  # ... and the O= directory (the compiler's working directory)


def debug_prefix_maps(tree: Path, obj: Path | None, file_macro_mapped: bool = True) -> str:
    """Compiler flags that take the tree's and build directory's paths out of debug info.

    Under O= the compiler runs in ``obj`` on ``<tree>/kernel/fork.c``, so the DWARF holds
    both absolute paths (DW_AT_comp_dir, DW_AT_name, line tables), pahole carries them
    into .BTF, and a build elsewhere gave another bzImage. The kernel itself maps only
    __FILE__ (-fmacro-prefix-map=$(srctree)/=, from 4.19; before, ``file_macro_mapped``
    False adds that map here); -ffile-prefix-map would override that, so
    this maps debug info only (gcc also hands it to gas for .S files, hence KAFLAGS too).
    ccache (4.x) hashes only the option's name and the working directory after the map,
    so with base_dir at the work area (KERNLAB_CCACHE_SHARE), work areas share objects.
    In-tree builds (``obj`` None, the samples/bpf copy) compile in the tree itself.
    """
    maps = [f"-fdebug-prefix-map={tree}={SOURCE_NAME}"]
    if obj is not None:
        maps.append(f"-fdebug-prefix-map={obj}={OBJ_NAME}")
    if not file_macro_mapped:
        maps.append(f"-fmacro-prefix-map={tree}/=")
    return " ".join(maps)


def maps_file_macro(version: str) -> bool:
    """Whether this release's Makefile makes __FILE__ relative itself (from 4.19 on).

    Before it (4.15), __FILE__ in BUG()/WARN() sites and lib/oid_registry.c's generated
    table carried the tree's absolute path into vmlinux, so a rebuild in another directory
    (--rebuild-check, --hosts, reproduce) gave other bytes: kernlab then passes the same
    -fmacro-prefix-map=$(srctree)/= the newer Makefiles add. Decided by the catalog
    version, not by reading the tree, so that the flag is in the build key.
    """
    match = re.match(r"^(\d+)\.(\d+)", version)
    return not match or (int(match.group(1)), int(match.group(2))) >= (4, 19)


def pahole_flags(tree: Path) -> str | None:
    """The tree's pahole flags without `-j`: parallel BTF encoding is not reproducible."""
    script = tree / "scripts" / "pahole-flags.sh"
    if not script.exists() or not shutil.which("pahole"):
        return None
    done = subprocess.run(["sh", str(script)], env={**os.environ, "PAHOLE": "pahole"},
                          capture_output=True, text=True, check=False)
    out = done.stdout.strip()
    return " ".join(flag for flag in out.split() if flag != "-j")


CC_WRAPPER = Path(__file__).resolve().parents[1] / "bin" / "kernlab-ccache"
# ccache hashes these (they localise compiler messages): fixed, so that a build over SSH
# (no LANG) and one from a terminal (LANG=C.UTF-8) share objects. LC_ALL=C already rules
# what the compiler does, so they are not part of the build key.
LOCALE_ENV = {"LANG": "C", "LC_CTYPE": "C", "LC_MESSAGES": "C"}


SHARE_ENV = "KERNLAB_CCACHE_SHARE"  # set (1): work areas on this machine share objects


def build_env() -> dict[str, str]:
    """The fixed build environment, plus ccache's settings and kernlab's CC wrapper."""
    env = {**REPRODUCIBLE_ENV, **LOCALE_ENV}
    env["PATH"] = f"{CC_WRAPPER.parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
    env["CCACHE_DIR"] = str(paths.ccache_dir())
    # base_dir makes the paths ccache hashes relative to the work area, so a build in another
    # work area (another checkout, a test's, a --hosts host on this machine) hits the first
    # one's objects; but ccache then rewrites every dependency file it stores, which made
    # each miss about 4 % dearer (bench/ccache_miss.py): only when asked for (CI sets it).
    if os.environ.get(SHARE_ENV, "") not in ("", "0"):
        env["CCACHE_BASEDIR"] = str(paths.work_dir())
    # Keep ccache's hash_dir: ccache hashes the working directory as debug_prefix_maps()
    # renames it, so objects (whose debug info is path-free) are shared between work
    # areas when base_dir is set, and never with a build whose debug info names another path.
    env["CCACHE_HASHDIR"] = "1"
    # Depend mode: on a miss ccache compiles once and takes the dependencies from the
    # compiler's -MMD output, instead of preprocessing every file a second time to hash it.
    env["CCACHE_DEPEND"] = "1"
    return env


def make(plan: Plan, tree: Path, obj: Path, targets: list[str], log: Path) -> None:
    cmd = make_command(plan, obj, tree, targets)
    env = {**build_env(), "PAHOLE": "pahole"}
    run_logged(cmd, log, what=f"make {' '.join(targets)}", env=env, on_line=status_from_make,
               fix="read the log; `invoke build-kernel --clean` starts from scratch")


def configure(plan: Plan, tree: Path, obj: Path, log_dir: Path):
    """Base config, merge fragments, olddefconfig, then verify every requested option."""
    log = log_dir / "config.log"
    base = [plan.spec.base]
    run_logged(make_command(plan, obj, tree, base), log, what=f"make {plan.spec.base}", env=build_env())
    merge = tree / "scripts" / "kconfig" / "merge_config.sh"
    run_logged(["sh", merge, "-m", "-O", obj, obj / ".config", *plan.fragments], log,
               what="merge_config.sh", cwd=tree, env=build_env())
    run_logged(make_command(plan, obj, tree, ["olddefconfig"]), log, what="make olddefconfig",
               env=build_env())
    requests = requested_options(plan.fragments)
    config = obj / ".config"
    result = verify_config(requests, config)
    if result.dropped or any(r.optional for r in requests):
        model = load_model(tree, config, plan.spec.arch)
        if model:
            result = verify_config(requests, config, explain=model.explain, exists=model.exists)
    for request in result.not_applicable:
        reporter().note(f"CONFIG_{request.name}: not applicable to this kernel (optional)")
    raise_if_dropped(result, config)
    reporter().note(result.summary())
    return result


# ---------------------------------------------------------------- samples/bpf
def build_samples(plan: Plan, tree: Path, obj: Path, log: Path) -> dict[str, Any]:
    """Build samples/bpf in-tree, in a hard-linked copy of the patched tree.

    6.1's samples/bpf Makefile mishandles O= builds (it writes libbpf into the source
    tree and loses its .bpf.c sources), so kernlab uses the documented in-tree route
    on a private copy: sources are shared hard links, outputs are new files. The
    catalog's targets must come out; other samples may fail (logged).
    """
    require_tool("clang", "clang")
    require_tool("llc", "llvm")
    copy = obj.parent / "samples-tree"
    shutil.rmtree(copy, ignore_errors=True)
    run_logged(["cp", "-al", tree, copy], log, what="hard-linked copy of the tree")
    shutil.copy(obj / ".config", copy / ".config")
    env = {**build_env(), "PAHOLE": "pahole"}
    run_logged(make_command(plan, None, copy, ["olddefconfig", "prepare", "headers_install"]), log,
               what="make prepare headers_install (samples tree)", env=env, on_line=status_from_make)
    samples = [*make_command(plan, None, copy, ["M=samples/bpf", f"VMLINUX_BTF={obj / 'vmlinux'}"],
                             host_ccache=False), "-k"]
    try:
        run_logged(samples, log, what="make M=samples/bpf", env=env, on_line=status_from_make)
    except KernlabError as error:
        reporter().warn(f"some samples/bpf targets failed; checking the catalog's ({error.cause})")
    out_dir = copy / "samples" / "bpf"
    missing = [t for t in plan.spec.samples_bpf if not (out_dir / t).is_file()]
    if missing:
        raise KernlabError(
            f"samples/bpf did not produce {', '.join(missing)}; full log: {log}",
            "read the log; `invoke setup` installs clang, llvm and libelf-dev",
        )
    return {t: {"path": str(out_dir / t), "sha256": sha256_file(out_dir / t)}
            for t in plan.spec.samples_bpf} | {"dir": {"path": str(out_dir)}}


# ---------------------------------------------------------------- symbols
def verify_symbols(plan: Plan, tree: Path, obj: Path, make_log: Path) -> None:
    """A ``noinline`` gcc ignored fails the build; so does a catalog ``symbols:`` entry missing
    from System.map, with the reason (a ``--no-patch`` variant only warns: it asked for that)."""
    ignored = symbols.ignored_noinline(make_log, tree)
    if ignored:
        raise KernlabError(f"{'; '.join(i.describe() for i in ignored)}; make log: {make_log}",
                           "drop `__always_inline` in the patch that adds `noinline` (or probe a caller)")
    exact = exact_symbols(obj / "System.map", plan.spec.symbols)
    missing = [name for name, found in exact.items() if found is None]
    if not missing:
        return
    reasons = "; ".join(f"{n}: {symbols.why_missing(n, tree, obj)}" for n in missing)
    if plan.left_out:
        reporter().warn(f"not in System.map ({', '.join(plan.left_out)} left out): {reasons}")
        return
    raise KernlabError(
        f"{', '.join(missing)} not in System.map of {obj.parent.name}, which the catalog's symbols: "
        f"for {plan.spec.version} requires ({reasons})",
        f"fix patches/{plan.spec.base_version}/ (the tree: {tree}), or drop the name from symbols: in "
        f"{plan.catalog.path}")


def exact_symbols(system_map: Path, names: tuple[str, ...]) -> dict[str, str | None]:
    """Exact System.map name for each wanted symbol (a clone such as copyout.isra.0 counts)."""
    found: dict[str, str | None] = dict.fromkeys(names)
    pattern = re.compile(r"^[0-9a-f]+ [tTwW] (\S+)$")
    for line in system_map.read_text().splitlines():
        match = pattern.match(line)
        if not match:
            continue
        symbol = match.group(1)
        base = symbol.split(".", 1)[0]
        if base in found and (found[base] is None or "." in str(found[base])):
            found[base] = symbol
    return found


# ---------------------------------------------------------------- the record
def find_symbols(system_map: Path, names: tuple[str, ...]) -> dict[str, str | None]:
    """Exact System.map name for each wanted symbol, each said (missing, a clone, present)."""
    found = exact_symbols(system_map, names)
    for name, exact in found.items():
        if exact is None:
            reporter().warn(f"{name} is not in System.map: not probe-able on this build")
        elif exact != name:
            reporter().warn(f"{name} exists only as the clone {exact}; probe that name")
        else:
            reporter().note(f"System.map has {name}")
    return found


def _output(path: Path) -> dict[str, Any]:
    return {"path": str(path), "sha256": sha256_file(path), "size": path.stat().st_size}


def make_record(plan, source, key, tree, obj, verification, samples, started) -> dict[str, Any]:
    system_map = obj / "System.map"
    cmd = make_command(plan, obj, tree, ["bzImage", "modules"])
    return {
        "version": plan.spec.version,
        "release": tree_release(tree),
        "kernelrelease": (obj / "include" / "config" / "kernel.release").read_text().strip(),
        "key": key,
        "build_dir": str(obj.parent),
        "tree": str(tree),
        "source": source.record(),
        "patches": [p.record() for p in plan.patches],
        **({"without_patches": list(_left_out(plan))} if plan.opts.without_patches else {}),
        "fragments": [{"path": str(f), "sha256": sha256_file(f)} for f in plan.fragments],
        "config_base": plan.spec.base,
        "config_sha256": sha256_file(obj / ".config"),
        "config_check": {"verified": len(verification.ok),
                         "not_applicable": [r.name for r in verification.not_applicable]},
        "compiler": compiler_version(plan.compiler),
        "binutils": binutils_version(),
        "pahole": capture(["pahole", "--version"]),
        "make_command": shlex.join(cmd),
        "environment": REPRODUCIBLE_ENV,
        "outputs": {
            "bzImage": _output(obj / "arch" / "x86" / "boot" / "bzImage"),
            "vmlinux": _output(obj / "vmlinux"),
            "System.map": _output(system_map),
            "config": _output(obj / ".config"),
            "headers": {"path": str(obj / "usr" / "include")},
            **({"samples_bpf": samples} if samples else {}),
        },
        "symbols": find_symbols(system_map, plan.spec.symbols),
        "duration_s": round(time.monotonic() - started, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def complete_record(path: Path) -> BuildRecord | None:
    """The build record at ``path`` (the one reader of build.json) if it and its bzImage,
    vmlinux and System.map exist (vmlinux may wait in the registry: a pulled build fetches
    it when a command reads it)."""
    if not path.is_file():
        return None
    try:
        record = BuildRecord.load(path)
        lazy = registry.is_lazy(record, "vmlinux.zst")
        names = ("bzImage", "System.map") + (() if lazy else ("vmlinux",))
        paths_ = [record.output(name) for name in names]
        if not record.id:  # a record without version or key is no build (KeyError)
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return record if all(p.is_file() for p in paths_) else None


def _remember_latest(version: str, build_dir: Path) -> None:
    atomic_write_json(paths.work_dir() / "latest" / f"{version}.json", {"build_dir": str(build_dir)})


def summarize_record(build: BuildRecord) -> str:
    """Human summary of a build record for `invoke kernel-info`."""
    source = build.source
    fragments = ", ".join(Path(f["path"]).name for f in build.fragments)
    lines = [
        f"kernel {build.version}: {build.kernelrelease} (build {build.id})",
        f"  source     {source['origin']} sha256={source['sha256'][:16]}"
        + ("" if source.get("verified") else "  UNVERIFIED"),
        f"  tree       {source.get('tree_sha256', '')[:16] or 'not recorded (an older build)'}"
        + (f"  .deb sha256={source['debian']['deb_sha256'][:16]}" if source.get("debian") else ""),
        f"  patches    {', '.join(p['name'] for p in build.patches) or 'none'}",
        f"  config     {build.config_base} + {fragments} ({build.verified_options} options verified)",
        f"  compiler   {build.compiler}; {build.binutils}",
    ]
    for name in ("bzImage", "vmlinux", "System.map", "config"):
        lines.append(f"  {name:<11}{build.output(name)}  sha256={build.output_sha256(name)[:16]}")
    lines.append(f"  headers    {build.headers}")
    lines.append(f"  kheaders   {_kheaders_line(build)}")
    if build.samples_bpf is not None:
        lines.append(f"  samples    {build.samples_bpf}")
    for name, exact in build.symbols.items():
        lines.append(f"  symbol     {name}: {exact or 'MISSING'}")
    lines.append(f"  built in   {build.duration_s}s at {build.built_at}")
    return "\n".join(lines)


def _kheaders_line(build: BuildRecord) -> str:
    """Where the guest's kernel headers image is, or that the first boot will make it."""
    made = find_headers(build)
    if made is None:
        return "(made at the first boot: mounted at /lib/modules/<release>/build)"
    return f"{made['image']['path']}  sha256={made['image']['sha256'][:16]}"
