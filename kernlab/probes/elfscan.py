"""Evidence from a build's own outputs: System.map, vmlinux's tables, ``.config``.

- text symbols and their extent (System.map is sorted by address);
- ftrace call sites: ``__start_mcount_loc`` .. ``__stop_mcount_loc`` in vmlinux is an array
  of call-site addresses; a function with none is ``notrace``;
- the kprobe blacklist: ``__start_kprobe_blacklist`` .. ``__stop_kprobe_blacklist``
  (NOKPROBE_SYMBOL entries) and the text areas kprobes refuse (``.kprobes.text``, entry
  text, and where the kernel's source says so irqentry and noinstr text);
- init text (freed after boot), ``.BTF`` and ``.debug_info`` present, the ``.config``.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from kernlab.core.errors import KernlabError
from kernlab.core.records import BuildRecord
from kernlab.kernel.build import vmlinux_of
from kernlab.kernel.kconfig import read_config

TEXT_TYPES = set("tTwW")
CLONE_MARKS = (".isra.", ".constprop.", ".part.", ".cold", ".lto_priv.", ".llvm.")
AREAS = {  # blacklisted text areas: (start symbol, end symbol, what)
    "kprobes": ("__kprobes_text_start", "__kprobes_text_end", ".kprobes.text (__kprobes)"),
    "entry": ("__entry_text_start", "__entry_text_end", "entry text (arch blacklist)"),
    "irqentry": ("__irqentry_text_start", "__irqentry_text_end", "irqentry text (arch blacklist)"),
    "noinstr": ("__noinstr_text_start", "__noinstr_text_end", "noinstr text"),
}


@dataclass
class SymbolMap:
    """System.map: names → (address, type); text symbols sorted by address."""

    by_name: dict[str, tuple[int, str]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)  # every name, for clone lookups
    text_addrs: list[int] = field(default_factory=list)
    text_names: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> SymbolMap:
        smap = cls()
        text: list[tuple[int, str]] = []
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            addr, kind, name = int(parts[0], 16), parts[1], parts[2]
            smap.by_name.setdefault(name, (addr, kind))
            smap.names.append(name)
            if kind in TEXT_TYPES:
                text.append((addr, name))
        text.sort()
        smap.text_addrs = [a for a, _ in text]
        smap.text_names = [n for _, n in text]
        return smap

    def address(self, name: str) -> int | None:
        entry = self.by_name.get(name)
        return entry[0] if entry else None

    def is_text(self, name: str) -> bool:
        entry = self.by_name.get(name)
        return bool(entry and entry[1] in TEXT_TYPES)

    def extent(self, name: str) -> tuple[int, int] | None:
        """[start, end) of a text symbol: up to the next text symbol at a higher address."""
        start = self.address(name)
        if start is None or not self.is_text(name):
            return None
        index = bisect.bisect_right(self.text_addrs, start)
        end = self.text_addrs[index] if index < len(self.text_addrs) else start + 1
        return start, end

    def function_at(self, addr: int) -> str | None:
        index = bisect.bisect_right(self.text_addrs, addr) - 1
        return self.text_names[index] if index >= 0 else None

    def clones(self, name: str) -> list[str]:
        """gcc's clones of ``name`` in the map (``name.isra.0``, ``.constprop.0``, ``.cold``...)."""
        prefix = name + "."
        return sorted({n for n in self.names if n.startswith(prefix) and self.is_text(n)
                       and any(mark in n[len(name):] + "." for mark in CLONE_MARKS)})


@dataclass
class KernelFacts:
    """Everything the static atlas reads from one build."""

    build_id: str
    release: str
    symbols: SymbolMap
    config: dict[str, str]
    mcount: list[int] | None  # sorted ftrace call-site addresses; None: no table
    blacklist: set[int]  # addresses of NOKPROBE_SYMBOL functions
    sections: set[str]
    areas: dict[str, tuple[int, int]]  # blacklisted text areas that exist in this kernel

    def option(self, name: str) -> str:
        """``y``, ``m``, a value, or ``n`` (not set)."""
        return self.config.get(name, "n")

    @property
    def has_btf(self) -> bool:
        return ".BTF" in self.sections and self.option("DEBUG_INFO_BTF") == "y"

    @property
    def has_dwarf(self) -> bool:
        return ".debug_info" in self.sections

    def has_ftrace_site(self, name: str) -> bool | None:
        """Whether ``name`` has an ftrace call site (None: this kernel has no mcount table)."""
        extent = self.symbols.extent(name)
        if self.mcount is None or extent is None:
            return None
        index = bisect.bisect_left(self.mcount, extent[0])
        return index < len(self.mcount) and self.mcount[index] < extent[1]

    def nokprobe(self, name: str) -> bool:
        return self.symbols.address(name) in self.blacklist

    def area_of(self, addr: int) -> str | None:
        for key, (start, end) in self.areas.items():
            if start <= addr < end:
                return AREAS[key][2]
        return None

    def in_init_text(self, addr: int) -> bool:
        start, end = self.symbols.address("_sinittext"), self.symbols.address("_einittext")
        return start is not None and end is not None and start <= addr < end


def _read_vaddr(elf: ELFFile, start: int, end: int) -> bytes:
    """The bytes of vmlinux at virtual addresses [start, end) (from the section holding them)."""
    for section in elf.iter_sections():
        base, size = section["sh_addr"], section["sh_size"]
        if base <= start and end <= base + size and section["sh_type"] != "SHT_NOBITS":
            offset = section["sh_offset"] + start - base
            elf.stream.seek(offset)
            return elf.stream.read(end - start)
    return b""


def _pointer_table(elf: ELFFile, smap: SymbolMap, first: str, last: str) -> list[int] | None:
    start, end = smap.address(first), smap.address(last)
    if start is None or end is None:
        return None
    data = _read_vaddr(elf, start, end)
    return [v for (v,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8])]


def blacklisted_areas(smap: SymbolMap, tree: Path | None) -> dict[str, tuple[int, int]]:
    """The text areas this kernel's kprobes refuse. kprobes and entry text always (x86); irqentry
    and noinstr only where the kernel's source adds them (5.x irqentry, 5.8+/backports noinstr)."""
    wanted = ["kprobes", "entry"]
    if tree is not None:
        code = "".join(_read(tree / p) for p in ("kernel/kprobes.c", "arch/x86/kernel/kprobes/core.c"))
        wanted += [k for k in ("irqentry", "noinstr") if AREAS[k][0] in code]
    areas = {}
    for key in wanted:
        start, end = smap.address(AREAS[key][0]), smap.address(AREAS[key][1])
        if start is not None and end is not None and end > start:
            areas[key] = (start, end)
    return areas


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def scan_build(build: BuildRecord) -> KernelFacts:
    """Read one build's System.map, vmlinux tables and .config (no boot)."""
    try:
        system_map, config = build.system_map, build.config
        vmlinux = vmlinux_of(build)  # a pulled build fetches it now
    except (KeyError, TypeError) as error:
        raise KernlabError(f"build {build.build_dir} records no {error}",
                           f"rebuild it: `invoke build-kernel --version {build.version}`") from None
    tree = build.tree
    try:
        smap = SymbolMap.read(system_map)
        with open(vmlinux, "rb") as handle:
            elf = ELFFile(handle)
            sections = {s.name for s in elf.iter_sections()}
            mcount = _pointer_table(elf, smap, "__start_mcount_loc", "__stop_mcount_loc")
            black = _pointer_table(elf, smap, "__start_kprobe_blacklist", "__stop_kprobe_blacklist") or []
    except (OSError, ValueError, ELFError) as error:
        raise KernlabError(f"cannot read the build's vmlinux or System.map ({vmlinux}): {error}",
                           f"rebuild it: `invoke build-kernel --version {build.version}`") from None
    return KernelFacts(
        build_id=build.id,
        release=build.release_or_version,
        symbols=smap, config=read_config(config), mcount=None if mcount is None else sorted(mcount),
        blacklist=set(black), sections=sections,
        areas=blacklisted_areas(smap, tree),
    )
