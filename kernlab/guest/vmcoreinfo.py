"""A VMCOREINFO note for QEMU ELF dumps of kernels that publish none.

drgn finds the kernel in a vmcore through its VMCOREINFO note (OSRELEASE, PAGESIZE,
SYMBOL(swapper_pg_dir), KERNELOFFSET). QEMU writes that note only when the guest kernel
hands it over (``-device vmcoreinfo`` with CONFIG_FW_CFG_SYSFS and CONFIG_CRASH_CORE, from
Linux 4.17); the lab kernels have neither, so a QEMU dump of them has only QEMU's own notes
and drgn refuses it ("unrecognized QEMU memory dump"). The lab kernels are not
relocatable (no KASLR), so the note's facts come from the build: its release and the
address of ``init_top_pgt`` (x86-64's swapper_pg_dir) in System.map. ``add_note`` writes
that note into the dump's PT_NOTE segment in place, in the room QEMU's per-CPU "QEMU"
notes (CPU state that neither drgn nor crash needs for such a kernel) took.
"""

from __future__ import annotations

import struct
from pathlib import Path

from kernlab.core.errors import KernlabError

PT_NOTE = 4
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
NHDR = struct.Struct("<III")
PAGE_SIZE = 4096
TOP_PGT = ("init_top_pgt", "init_level4_pgt", "swapper_pg_dir")  # x86-64 names, newest first


def _align4(n: int) -> int:
    return (n + 3) & ~3


def notes(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """An ELF note segment as (name, type, desc) triples."""
    found, at = [], 0
    while at + NHDR.size <= len(data):
        namesz, descsz, kind = NHDR.unpack_from(data, at)
        name_at = at + NHDR.size
        desc_at = name_at + _align4(namesz)
        found.append((data[name_at:name_at + namesz].rstrip(b"\0"), kind, data[desc_at:desc_at + descsz]))
        at = desc_at + _align4(descsz)
    return found


def pack_note(name: bytes, kind: int, desc: bytes) -> bytes:
    named = name + b"\0"
    return (NHDR.pack(len(named), len(desc), kind) + named.ljust(_align4(len(named)), b"\0")
            + desc.ljust(_align4(len(desc)), b"\0"))


def text_for(release: str, system_map: Path) -> str:
    """The VMCOREINFO text for a non-relocatable x86-64 kernel built as ``system_map`` says."""
    symbols = {}
    for line in system_map.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] in TOP_PGT:
            symbols.setdefault(parts[2], parts[0])
    top = next((symbols[name] for name in TOP_PGT if name in symbols), None)
    if top is None:
        raise KernlabError(f"{system_map} names no top-level page table ({', '.join(TOP_PGT)})",
                           "the dump cannot get a VMCOREINFO note; open it with crash")
    return (f"OSRELEASE={release}\nPAGESIZE={PAGE_SIZE}\nSYMBOL(swapper_pg_dir)={int(top, 16):x}\n"
            "KERNELOFFSET=0\n")


def _note_header(handle: object, path: Path) -> tuple[int, int, int]:
    """(offset of the PT_NOTE program header, the segment's file offset, its size)."""
    head = handle.read(EHDR.size)  # type: ignore[attr-defined]
    if len(head) < EHDR.size or head[:4] != b"\x7fELF" or head[4] != 2:
        raise KernlabError(f"{path} is not a 64-bit ELF core", "dump with --format elf")
    fields = EHDR.unpack(head)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    for i in range(phnum):
        handle.seek(phoff + i * phentsize)  # type: ignore[attr-defined]
        ph = PHDR.unpack(handle.read(PHDR.size))  # type: ignore[attr-defined]
        if ph[0] == PT_NOTE:
            return phoff + i * phentsize, ph[2], ph[5]
    raise KernlabError(f"{path} has no PT_NOTE segment", "dump with --format elf")


def has_vmcoreinfo(path: Path) -> bool:
    with open(path, "rb") as handle:
        _, offset, size = _note_header(handle, path)
        handle.seek(offset)
        return any(name == b"VMCOREINFO" for name, _, _ in notes(handle.read(size)))


def add_note(path: Path, text: str) -> None:
    """Put a VMCOREINFO note with ``text`` into the ELF core ``path`` (in place), dropping
    QEMU's "QEMU" notes to make room."""
    with open(path, "r+b") as handle:
        where, offset, size = _note_header(handle, path)
        handle.seek(offset)
        kept = [n for n in notes(handle.read(size)) if n[0] not in (b"QEMU", b"VMCOREINFO")]
        data = b"".join(pack_note(*n) for n in kept) + pack_note(b"VMCOREINFO", 0, text.encode())
        if len(data) > size:
            raise KernlabError(f"no room for a VMCOREINFO note in {path} ({len(data)} > {size} bytes)",
                               "open the dump with crash, which needs no note")
        handle.seek(offset)
        handle.write(data.ljust(size, b"\0"))
        handle.seek(where)
        ph = list(PHDR.unpack(handle.read(PHDR.size)))
        ph[5] = ph[6] = len(data)  # p_filesz, p_memsz
        handle.seek(where)
        handle.write(PHDR.pack(*ph))
