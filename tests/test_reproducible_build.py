"""Builds of the same 6.1 inputs in different directories give the same bzImage (issue 6).

kernlab maps the tree and build paths out of the debug info (``-fdebug-prefix-map``,
see ``kernlab.kernel.build.debug_prefix_maps``), so the DWARF that pahole turns into .BTF
is the same wherever the tree lies. The real rebuilds in another directory are elsewhere,
each one a user's path, so CI pays for each once: `build-kernel --rebuild-check` in a
scratch work area (tests/test_registry_slow.py: bzImage, vmlinux and the rest byte for
byte), a `--hosts` host building in its own directory (tests/test_hosts.py: the same
bzImage) and `reproduce PACK` offline in fresh areas (tests/test_pack.py: IDENTICAL).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_debug_info_paths_are_mapped_for_c_and_assembler():
    from kernlab.kernel.build import make_command, make_plan

    cmd = make_command(make_plan("6.1"), Path("/w/build/k/obj"), Path("/w/src/t"), ["bzImage"])
    maps = "-fdebug-prefix-map=/w/src/t=/kernlab/src -fdebug-prefix-map=/w/build/k/obj=/kernlab/obj"
    assert f"KCFLAGS={maps}" in cmd
    assert f"KAFLAGS={maps}" in cmd


def test_before_4_19_file_names_in_the_kernel_are_made_relative_too():
    """4.15's Makefile leaves __FILE__ absolute (lib/oid_registry.c's path was in vmlinux,
    so --rebuild-check in another directory differed): kernlab adds the map 4.19 brought."""
    from kernlab.kernel.build import make_command, make_plan

    old = make_command(make_plan("4.15"), Path("/w/build/k/obj"), Path("/w/src/t"), ["bzImage"])
    new = make_command(make_plan("6.1"), Path("/w/build/k/obj"), Path("/w/src/t"), ["bzImage"])
    assert "-fmacro-prefix-map=/w/src/t/=" in next(a for a in old if a.startswith("KCFLAGS="))
    assert not any("-fmacro-prefix-map" in a for a in new)
    assert any("-fmacro-prefix-map=/S/=" in a for a in make_plan("4.15").inputs("x")["make"])  # in the key
