"""The atlas: for each target and built kernel, a verdict with its reason, its fix and the
evidence it rests on, from the build's own outputs (no boot).

Verdicts: ``attachable``, ``clone`` (attachable under gcc's clone name, shown as
``attachable as NAME``), ``no`` (not attachable).
"""

from __future__ import annotations

import functools
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

from kernlab.core import paths
from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.core.util import atomic_write_json, read_json, sha256_file, sha256_text
from kernlab.kernel import variant
from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.patch import series_dir
from kernlab.kernel.selection import builds_of, choose_kernel, complete_builds
from kernlab.probes import dwarf
from kernlab.probes.elfscan import KernelFacts, scan_build
from kernlab.probes.source import (
    SYSCALL_PREFIXES,
    Definition,
    compiled_sources,
    find_definition,
    patch_defines,
)
from kernlab.probes.successor import FormerHome, Peer, Successor, former_home, home_in_patches, successor
from kernlab.probes.target import Target

NOTRACE_CHECK_SINCE = (4, 19)  # 45408c4f9250 "tracing: kprobes: Prohibit probing on notrace function"
FENTRY_SINCE = (5, 5)  # BPF trampolines (fentry/fexit)
SYSCALL_RENAME = "4.17"  # SyS_X/sys_X became __x64_sys_X (x86 syscall wrappers)


@dataclass
class Row:
    """One target on one kernel."""

    target: str
    kernel: str  # build id
    release: str
    verdict: str  # attachable | clone | no
    use: str = ""  # the name to register on this kernel
    reason: str = ""
    fix: str = ""
    evidence: list[str] = field(default_factory=list)  # what the verdict rests on
    config: dict[str, str] = field(default_factory=dict)  # the options that gate it, as set
    fentry: str = ""  # fentry/fexit: yes, or no and why (kprobe targets)
    inlined_into: list[str] = field(default_factory=list)
    successor: str = ""  # a function gone from this kernel: what its old callers use instead

    @property
    def shown(self) -> str:
        return {"attachable": "attachable", "clone": f"attachable as {self.use}",
                "no": "not attachable"}.get(self.verdict, self.verdict)

    @property
    def attachable(self) -> bool:
        return self.verdict in ("attachable", "clone")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "shown": self.shown}


def version_tuple(release: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", release)[:3])


class Kernel:
    """One build's facts, with the source tree and DWARF read only when a verdict needs them."""

    def __init__(self, build: BuildRecord) -> None:
        self.build = build
        self.facts: KernelFacts = scan_build(build)
        self.version = build.version
        self.id = self.facts.build_id
        self.tree = build.tree
        self.obj = build.obj
        self._compiled: list[Path] | None = None
        self._definitions: dict[str, Definition | None] = {}
        self.peers: list[Peer] | None = None  # other builds to ask where a gone function lived

    def peer(self) -> Peer | None:
        """This build as another build's peer (None without its tree)."""
        return Peer(self.release, self.id, self.tree, self.obj) if self.tree else None

    def compiles(self, file: str) -> bool:
        """Whether this build has an object for ``file`` (a tree's .c file)."""
        return bool(self.tree) and (self.obj / file).with_suffix(".o").is_file()

    def former_home(self, name: str) -> FormerHome | None:
        """Where another release defines ``name``: a peer build's tree (the atlas's other
        kernels first, then every other build here), else a lab patch that defines it."""
        if self.peers is None:
            self.peers = other_builds(self)
        home = former_home(name, [p for p in self.peers if p.release != self.release])
        if home is None:
            try:
                spec = load_catalog().kernels.get(variant.split(self.version)[0])
            except KernlabError:
                spec = None
            series = [series_dir(s) for s in (spec.patches if spec else ())]
            every = sorted(paths.patches_dir().glob("*/*.patch"))
            mine = [p for d in series for p in sorted(d.glob("*.patch"))]
            home = home_in_patches(name, [p for p in every if p not in mine])
        return home

    @property
    def release(self) -> str:
        return self.facts.release

    def at_least(self, since: tuple[int, ...]) -> bool:
        return version_tuple(self.release) >= since

    def definition(self, name: str) -> Definition | None:
        if self.tree is None:
            return None
        if name not in self._definitions:
            if self._compiled is None:
                self._compiled = compiled_sources(self.tree, self.obj)
            self._definitions[name] = find_definition(self.tree, self.obj, name, self._compiled)
        return self._definitions[name]

    def option(self, name: str) -> str:
        return self.facts.option(name)

    def options(self, *names: str) -> dict[str, str]:
        return {f"CONFIG_{n}": self.option(n) for n in names}

    def fix_setting(self, option: str) -> str:
        """How to get ``option`` set: in the lab fragment, or, when this build is a variant
        that changes it (``5.4.286+no-notrace``), by using the kernel it was made from."""
        base, name = variant.split(self.version)
        try:
            spec = load_catalog().kernel(self.version).variant if name else None
        except KernlabError:
            spec = None
        if spec is not None and option in (*spec.unset, *(k for k, _ in spec.set)):
            return f"use {base}: this build is its variant {name}, which changes CONFIG_{option}"
        return f"set CONFIG_{option}=y in {self.fragment()} and rebuild"

    def fragment(self) -> str:
        """The build's own lab fragment (configs/lab-<v>.config), where a fix adds an option."""
        names = [Path(str(f.get("path", ""))).name for f in self.build.fragments]
        mine = [n for n in names if n.startswith("lab-")]
        return f"configs/{mine[-1] if mine else 'lab.config'}"


# ---------------------------------------------------------------- kprobes
def kprobe_row(target: Target, kernel: Kernel) -> Row:
    """kprobe/kretprobe: symbol (or clone), init text, blacklist, notrace, gating options."""
    facts = kernel.facts
    row = Row(str(target), kernel.id, kernel.release, "no",
              config=kernel.options("KPROBES", "KPROBE_EVENTS", "KPROBE_EVENTS_ON_NOTRACE", "BPF_EVENTS"))
    if kernel.option("KPROBES") != "y" or kernel.option("KPROBE_EVENTS") != "y":
        missing = "KPROBES" if kernel.option("KPROBES") != "y" else "KPROBE_EVENTS"
        row.reason = f"CONFIG_{missing} is not set in this build"
        row.fix = f"add CONFIG_{missing}=y (KPROBES needs MODULES) to {kernel.fragment()} and rebuild"
        row.evidence = [".config"]
        return row
    name = target.name
    use = name if facts.symbols.is_text(name) else ""
    if not use:
        clones = [c for c in facts.symbols.clones(name) if ".cold" not in c]
        use = clones[0] if clones else ""
        if not use:
            return _absent(row, target, kernel)
        row.evidence.append(f"System.map: no {name}, clone {use}")
    else:
        row.evidence.append(f"System.map: {facts.symbols.by_name[name][1]} {name}")
    row.use = use
    addr = facts.symbols.address(use) or 0
    refused = _refusal(kernel, name, use, addr)
    if refused:
        row.reason, row.fix = refused
        return row
    ftrace = facts.has_ftrace_site(use)
    site = _ftrace_words(kernel, name, ftrace)
    row.evidence.append("__mcount_loc: " + ("call site" if ftrace else "none" if ftrace is False
                                            else "no table"))
    if ftrace is False and _notrace_refused(kernel):
        row.reason = (f"notrace ({site}): kprobe_events refuses it "
                      f"(\"trace_kprobe: Could not probe notrace function {use}\")")
        row.fix = kernel.fix_setting("KPROBE_EVENTS_ON_NOTRACE")
        return row
    row.verdict = "clone" if use != name else "attachable"
    row.reason = _attach_reason(kernel, name, use, ftrace, site)
    row.fix = f"probe {use} (gcc's clone) on this kernel" if use != name else ""
    row.fentry = _fentry(kernel, ftrace)
    inlined = _inlined(kernel, name)
    if inlined:
        row.inlined_into = inlined
        row.reason += f"; also inlined into {', '.join(inlined)} (those calls do not hit the probe)"
    return row


def _refusal(kernel: Kernel, name: str, use: str, addr: int) -> tuple[str, str] | None:
    """(reason, fix) when kprobes refuse the symbol: init text, NOKPROBE_SYMBOL, a blacklisted area."""
    facts = kernel.facts
    if facts.in_init_text(addr):
        return (f"{use} is __init: its text is freed after boot",
                "probe it at boot only (kprobe_event= on the command line), or probe its caller")
    if facts.nokprobe(use) or facts.nokprobe(name):
        where = kernel.definition(name)
        at = f" ({where.file}:{where.line})" if where and where.nokprobe else ""
        return (f"on the kprobe blacklist: NOKPROBE_SYMBOL({name}){at} (vmlinux _kprobe_blacklist)",
                "none for kprobes (probing it would recurse into kprobes); probe a caller or a tracepoint")
    area = facts.area_of(addr)
    if area:
        return (f"in the {area}: kprobes refuse that area",
                "none for kprobes; probe a caller or a tracepoint")
    return None


def _notrace_refused(kernel: Kernel) -> bool:
    return (kernel.at_least(NOTRACE_CHECK_SINCE) and kernel.option("DYNAMIC_FTRACE") == "y"
            and kernel.option("KPROBE_EVENTS_ON_NOTRACE") != "y")


def _ftrace_words(kernel: Kernel, name: str, ftrace: bool | None) -> str:
    """Why a function has no ftrace call site, as the source says."""
    if ftrace is not False:
        return ""
    found = kernel.definition(name)
    if found and found.notrace_dir:
        return f"{found.notrace_dir} drops the ftrace flags for {found.file}"
    if found and "notrace" in found.words:
        return f"declared notrace at {found.file}:{found.line}"
    return "no ftrace call site in __mcount_loc"


def _attach_reason(kernel: Kernel, name: str, use: str, ftrace: bool | None, site: str) -> str:
    head = f"{use} is a text symbol" + (f" (gcc clone of {name})" if use != name else "")
    if ftrace:
        return head + " with an ftrace call site"
    if ftrace is None:
        return head + " (no __mcount_loc table: FUNCTION_TRACER off)"
    if not kernel.at_least(NOTRACE_CHECK_SINCE):
        return head + f"; notrace ({site}), but Linux {kernel.release} has no notrace check for kprobes"
    return head + f"; notrace ({site}), allowed by CONFIG_KPROBE_EVENTS_ON_NOTRACE=y"


def _fentry(kernel: Kernel, ftrace: bool | None) -> str:
    if not kernel.at_least(FENTRY_SINCE):
        return f"no: fentry/fexit need Linux 5.5 (BPF trampolines), this is {kernel.release}"
    if not kernel.facts.has_btf:
        return "no: needs BTF (CONFIG_DEBUG_INFO_BTF=y and a .BTF section)"
    if not ftrace:
        return "no: no ftrace call site for the trampoline"
    return "yes"


def _inlined(kernel: Kernel, name: str) -> list[str]:
    found = kernel.definition(name)
    if not kernel.facts.has_dwarf or found is None or found.header or found.macro:
        return []
    return dwarf.inlined_into(kernel.build.vmlinux, kernel.id,
                              found.file, name) or []


def syscall_forms(name: str) -> tuple[str, str] | None:
    """('SyS_', 'write') for SyS_write, __x64_sys_write, sys_write ... (None for others)."""
    for prefix in SYSCALL_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix, name[len(prefix):]
    return None


def _absent(row: Row, target: Target, kernel: Kernel) -> Row:
    """Not in System.map: renamed, a macro, not compiled, inlined, or not in this kernel."""
    name = target.name
    row.evidence.append(f"System.map: no {name} and no clone")
    forms = syscall_forms(name)
    if forms:
        here = [p + forms[1] for p in ("__x64_sys_", "SyS_", "sys_")
                if kernel.facts.symbols.is_text(p + forms[1])]
        if here:
            row.reason = (f"no {name} in Linux {kernel.release}: the {forms[1]} syscall's entry is "
                          f"{here[0]} here (x86 syscall wrappers renamed it in {SYSCALL_RENAME})")
            row.fix = f"probe {here[0]} on this kernel"
            return row
    found = kernel.definition(name)
    if (found is None or not found.compiled) and kernel.tree:
        home = kernel.former_home(name)
        if home is not None and kernel.compiles(home.file):
            return _gone(row, name, kernel, home, found)
    if found is None:
        row.reason = (f"{name} is not in this kernel: not in System.map"
                      + (", not defined in its source" if kernel.tree else " (no source tree to say why)"))
        row.fix = "use a kernel that has it, or find its new name in the source"
        row.evidence.append("source: no definition" if kernel.tree else "source: tree absent")
        return row
    where = f"{found.file}:{found.line}"
    row.evidence.append(f"source: {where}")
    if found.macro:
        row.reason = f"{name} is a macro ({where}): there is no function to probe"
        row.fix = "probe the function it expands to"
        return row
    if not found.compiled:
        gate = found.gate or "an option"
        row.reason = f"{found.file} is not compiled into this build (gated by {gate})"
        row.fix = (f"set {gate}=y in {kernel.fragment()} and rebuild" if found.gate
                   else "enable it in the config")
        row.config[gate] = kernel.option(gate.removeprefix("CONFIG_"))
        return row
    return _inlined_row(row, name, kernel, found)


def _gone(row: Row, name: str, kernel: Kernel, home: FormerHome, found: Definition | None) -> Row:
    """``name`` lived in a file this build compiles, which no longer defines it: say so,
    name its successor, and never send the user to a driver's static of the same name."""
    after = successor(name, kernel.tree, home) if kernel.tree else None
    row.evidence.append(f"source: no {name} in {home.file}; {home.release}: {home.file}:{home.line}")
    later = version_tuple(home.release) > version_tuple(kernel.release)  # not gone: not there yet
    row.reason = (f"{name} is not in Linux {kernel.release} yet: a later release added it ({home.describe()})"
                  if later else f"{name} is gone from Linux {kernel.release}: {home.file} no longer defines "
                  f"it ({home.describe()})")
    if after is not None:
        row.successor = after.name
        row.reason += (f"; {'here' if later else 'its successor is'} {_successor_words(kernel, after)}"
                       f"{' is what' if later else ', which'} {after.via} uses in its place")
        row.evidence.append(f"source: {after.via} uses {after.name} (not before)")
    if found is not None and not found.compiled:
        row.reason += f"; the static {name} in {found.file} is another function (not compiled here)"
    patch = existing_patch(kernel, name)
    if patch:
        row.fix = f"build with {patch}: `invoke build-kernel --version {kernel.version}`"
    elif after is not None:
        row.fix = _successor_fix(kernel, name, after)
    else:
        row.fix = f"find what replaced it in {home.file}, or port the patch that made it probe-able"
    return row


def _successor_words(kernel: Kernel, after: Successor) -> str:
    """``copy_to_user_iter (lib/iov_iter.c:17, static __always_inline)``."""
    found = kernel.definition(after.name)
    words = " ".join(w for w in ("static", "inline", "__always_inline", "noinline")
                     if found and w in found.words)
    return f"{after.name} ({after.file}:{after.line}{', ' + words if words else ''})"


def _successor_fix(kernel: Kernel, name: str, after: Successor) -> str:
    """Probe the successor if it is a symbol, else the caller it is inlined into."""
    if kernel.facts.symbols.is_text(after.name):
        return f"probe {after.name} on this kernel (check its arguments: they are not {name}'s)"
    return (f"probe {after.via}, which inlines {after.name}, or bring {name} back with a patch in "
            f"patches/{kernel.version}/ (the copyout patches show how)")


def _inlined_row(row: Row, name: str, kernel: Kernel, found: Definition) -> Row:
    words = " ".join(w for w in ("static", "inline", "__always_inline") if w in found.words)
    callers = _inlined(kernel, name) if kernel.facts.has_dwarf else []
    if callers:
        row.evidence.append("DWARF: inlined_subroutine")
        into = ", ".join(callers)
    else:
        row.evidence.append("source: callers in the same file (no DWARF)" if not kernel.facts.has_dwarf
                            else "DWARF: no inlined instance (source callers)")
        callers = found.callers
        into = ", ".join(callers) or "its callers"
    row.inlined_into = callers
    row.reason = (f"{(words + ' ') if words else ''}{name} ({found.file}:{found.line}) was inlined "
                  f"into {into}: no symbol")
    patch = existing_patch(kernel, name)
    if patch:
        row.fix = f"build with {patch}: `invoke build-kernel --version {kernel.version}`"
    elif "__always_inline" in found.words or found.header:
        kind = "a header inline" if found.header else "__always_inline"
        row.fix = f"probe a caller ({into}): {name} is {kind}"
    else:
        row.fix = f"`invoke make-probeable {name} --version {kernel.version}`, then rebuild"
    return row


def existing_patch(kernel: Kernel, name: str) -> str:
    """A patch of this version's catalog series that makes ``name`` probe-able, not in this build."""
    applied = {p.get("sha256") for p in kernel.build.patches}
    try:
        series = load_catalog().kernel(kernel.version).patches
    except KernlabError:
        return ""
    for directory in (series_dir(s) for s in series):
        for patch in sorted(directory.glob("*.patch")):
            if patch_defines(patch.read_text(errors="replace"), name) and sha256_file(patch) not in applied:
                return str(patch.relative_to(paths.root()))
    return ""


def other_builds(kernel: Kernel) -> list[Peer]:
    """Every other complete build here whose tree exists, as peers (newest release last)."""
    peers = []
    for ref in complete_builds():
        if ref.id != kernel.id and ref.record.tree is not None:
            peers.append(Peer(ref.release, ref.id, ref.record.tree, ref.record.obj))
    return sorted(peers, key=lambda p: version_tuple(p.release))


# ---------------------------------------------------------------- tracepoints and uprobes
def tracepoint_row(target: Target, kernel: Kernel) -> Row:
    symbols = kernel.facts.symbols
    row = Row(str(target), kernel.id, kernel.release, "no", use=f"{target.where}:{target.name}",
              config=kernel.options("FTRACE", "TRACEPOINTS", "FTRACE_SYSCALLS", "BPF_EVENTS"))
    if target.where == "syscalls":
        match = re.match(r"sys_(enter|exit)_(\w+)$", target.name)
        symbol = f"__event_{match.group(1)}__{match.group(2)}" if match else ""
        if kernel.option("FTRACE_SYSCALLS") != "y":
            row.reason, row.fix = "CONFIG_FTRACE_SYSCALLS is not set", f"add it to {kernel.fragment()}"
            return row
    else:
        symbol = f"__event_{target.name}"
    row.evidence.append(f"System.map: {symbol}" + ("" if symbols.address(symbol) else " absent"))
    if symbols.address(symbol) is not None:
        row.verdict, row.reason = "attachable", f"trace event {target.where}:{target.name} is built in"
        return row
    if symbols.address(f"__tracepoint_{target.name}") is not None:
        row.reason = f"{target.name} is a bare tracepoint (no trace event in tracefs)"
        row.fix = f"attach it as raw_tracepoint:{target.name} (BPF), not tracepoint:"
        return row
    row.reason = f"no trace event {target.where}:{target.name} in this build"
    row.fix = "check the name in /sys/kernel/tracing/events, or enable the subsystem that defines it"
    return row


def uprobe_row(target: Target, kernel: Kernel) -> Row:
    row = Row(str(target), kernel.id, kernel.release, "no", use=f"{target.where}:{target.name}",
              config=kernel.options("UPROBES", "UPROBE_EVENTS", "BPF_EVENTS"))
    if kernel.option("UPROBE_EVENTS") != "y":
        row.reason = "CONFIG_UPROBE_EVENTS is not set in this build"
        row.fix = f"add CONFIG_UPROBE_EVENTS=y to {kernel.fragment()} and rebuild"
        return row
    binary = Path(target.where)
    if not binary.is_file():
        row.verdict = "attachable"
        row.reason = f"uprobes are built in; {target.where} is not on the host (checked with --live)"
        row.evidence = [".config"]
        return row
    found = elf_symbol(binary, target.name)
    row.evidence = [".config", f"{binary}: symtab"]
    if found:
        row.verdict, row.reason = "attachable", f"{target.name} is in {binary}'s symbol table"
    else:
        row.reason, row.fix = f"{target.name} is not in {binary}'s symbol table", "build it with symbols"
    return row


def elf_symbol(binary: Path, name: str) -> bool:
    try:
        with open(binary, "rb") as handle:
            elf = ELFFile(handle)
            for section in (elf.get_section_by_name(".symtab"), elf.get_section_by_name(".dynsym")):
                if section is not None and section.get_symbol_by_name(name):
                    return True
    except (OSError, ValueError):
        return False
    return False


def row_for(target: Target, kernel: Kernel) -> Row:
    if target.kind in ("kprobe", "kretprobe"):
        return kprobe_row(target, kernel)
    if target.kind == "tracepoint":
        return tracepoint_row(target, kernel)
    return uprobe_row(target, kernel)


# ---------------------------------------------------------------- verdicts kept per build
ATLAS_CODE = Path(__file__).resolve().parent


@functools.cache
def _code_hash() -> str:
    """This package's code, hashed once per process (it does not change while kernlab runs)."""
    return sha256_text("".join(sha256_file(f) for f in sorted(ATLAS_CODE.glob("*.py"))))


def _verdicts_file(build: BuildRecord) -> Path:
    """Where a build's verdicts are kept: keyed by the build's key and this package's code,
    so a changed build or a changed analysis never reads an old verdict."""
    key = build.key[:16]
    return paths.state_dir() / "probe-verdicts" / f"{key}-{_code_hash()[:12]}.json"


def rows_kept(targets: list[Target], build: BuildRecord) -> list[Row]:
    """The static rows of ``targets`` on ``build``; each verdict is worked out once per build
    and then read back (a build never changes), so the check before every run costs nothing."""
    file = _verdicts_file(build)
    try:
        kept: dict[str, Any] = read_json(file)
    except (OSError, ValueError):
        kept = {}
    missing = [t for t in targets if str(t) not in kept]
    if missing:
        kernel = Kernel(build)
        for target in missing:
            kept[str(target)] = row_for(target, kernel).to_json()
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(file, kept)
    return [_row_from_json(kept[str(t)]) for t in targets]


def _row_from_json(data: dict[str, Any]) -> Row:
    return Row(**{k: v for k, v in data.items() if k in Row.__dataclass_fields__})


# ---------------------------------------------------------------- kernels and the atlas
def resolve_kernel(asked: str) -> BuildRecord:
    """The build ``asked`` names; a catalog version without a build falls back to a built
    point release of it (5.4 → a 5.4.286 build), with a note."""
    choice = choose_kernel(asked)
    if choice.record is not None:
        return choice.record
    every = complete_builds()
    versions = sorted({b.version for b in every if b.version.startswith(asked + ".")})
    for version in versions:
        build = builds_of(version, every)[0]
        reporter().note(f"kernel {asked}: no build of it; using {build.id} ({version})")
        return build.record
    raise NotFound(f"kernel {asked} is not built", f"run `invoke build-kernel --version {asked}`")


def atlas(targets: list[Target], kernels: list[str]) -> list[Row]:
    """Every target on every kernel, target-major."""
    loaded = [Kernel(resolve_kernel(k)) for k in kernels]
    for kernel in loaded:  # where a function gone from one kernel lived: the others asked first
        asked = [p for k in loaded if k is not kernel and (p := k.peer())]
        kernel.peers = asked + [p for p in other_builds(kernel) if p.build not in {a.build for a in asked}]
    return [row_for(t, k) for t in targets for k in loaded]


def table(rows: list[Row]) -> str:
    """Targets × kernels with verdicts, then each row's reason, fix and evidence."""
    kernels = list(dict.fromkeys(r.kernel for r in rows))
    targets = list(dict.fromkeys(r.target for r in rows))
    cell = {(r.target, r.kernel): r.shown for r in rows}
    width = max([len(t) for t in targets] + [6])
    widths = [max(len(k), *(len(cell.get((t, k), "-")) for t in targets)) for k in kernels]
    lines = ["  ".join([f"{'target':<{width}}",
                        *(f"{k:<{w}}" for k, w in zip(kernels, widths, strict=True))])]
    for t in targets:
        lines.append("  ".join([f"{t:<{width}}", *(f"{cell.get((t, k), '-'):<{w}}"
                                                    for k, w in zip(kernels, widths, strict=True))]))
    lines.append("")
    for r in rows:
        lines.append(f"{r.target} on {r.kernel}: {r.shown}")
        lines.append(f"    why:      {r.reason}")
        if r.fix:
            lines.append(f"    fix:      {r.fix}")
        if r.fentry:
            lines.append(f"    fentry:   {r.fentry}")
        lines.append(f"    evidence: {'; '.join(r.evidence)}")
    return "\n".join(line.rstrip() for line in lines)
