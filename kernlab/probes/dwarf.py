"""Which callers a function was inlined into, from vmlinux's DWARF (pyelftools).

Only the compile unit of the file that defines the function is read (the source tree
names it): its ``DW_TAG_inlined_subroutine`` entries whose abstract origin is the function,
each under the function it was inlined into. The list of compile units is cached per build
(``<state>/probes/<build id>-cus.json``): reading it takes seconds, one unit well under one.
"""

from __future__ import annotations

from pathlib import Path

from elftools.elf.elffile import ELFFile

from kernlab.core import paths
from kernlab.core.util import atomic_write_json, read_json


def _cu_index(vmlinux: Path, dwarf, build_id: str) -> dict[str, int]:
    cache = paths.state_dir() / "probes" / f"{build_id}-cus.json"
    try:
        data = read_json(cache)
        if data.get("vmlinux_mtime") == vmlinux.stat().st_mtime:
            return data["units"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    units = {}
    for cu in dwarf.iter_CUs():
        name = cu.get_top_DIE().attributes.get("DW_AT_name")
        if name:
            units[name.value.decode(errors="replace")] = cu.cu_offset
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, {"vmlinux_mtime": vmlinux.stat().st_mtime, "units": units})
    return units


def _name(die) -> str:
    """A DIE's name, following abstract_origin/specification for concrete instances."""
    for _ in range(4):
        if die is None:
            return ""
        if "DW_AT_name" in die.attributes:
            return die.attributes["DW_AT_name"].value.decode(errors="replace")
        ref = die.attributes.get("DW_AT_abstract_origin") or die.attributes.get("DW_AT_specification")
        if ref is None:
            return ""
        die = die.get_DIE_from_attribute(ref.name)
    return ""


def inlined_into(vmlinux: Path, build_id: str, source_file: str, function: str) -> list[str] | None:
    """Callers ``function`` (defined in ``source_file``, tree-relative) was inlined into, sorted;
    [] if it was not inlined anywhere; None when vmlinux has no DWARF or no unit for the file."""
    with open(vmlinux, "rb") as handle:
        elf = ELFFile(handle)
        if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
            return None
        dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
        units = _cu_index(vmlinux, dwarf, build_id)
        offset = next((o for n, o in units.items()
                       if n == source_file or n.endswith("/" + source_file)), None)
        if offset is None:
            return None
        cu = dwarf.get_CU_at(offset)
        callers: set[str] = set()
        origins: set[int] = set()
        for die in cu.iter_DIEs():
            if die.tag == "DW_TAG_subprogram" and _name(die) == function and "DW_AT_inline" in die.attributes:
                origins.add(die.offset)
        if not origins:
            return []
        for die in cu.iter_DIEs():
            if die.tag != "DW_TAG_inlined_subroutine":
                continue
            ref = die.attributes.get("DW_AT_abstract_origin")
            if ref is None or die.get_DIE_from_attribute("DW_AT_abstract_origin").offset not in origins:
                continue
            parent = die.get_parent()
            while parent is not None and parent.tag not in ("DW_TAG_subprogram",):
                parent = parent.get_parent()
            if parent is not None:
                callers.add(_name(parent) or "?")
        return sorted(callers - {function})
