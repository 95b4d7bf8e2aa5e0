"""The probe atlas on real kernel builds (built once, then cached) and in real TCG guests.

One kernel is built without its copyout patch here: 6.12, where copyout is gone and the atlas
names its successor and the patch. 6.1 without the patch (copyout inlined, the fix is the
patch) is not built as well (three minutes of CI): inlining read from a real build's DWARF
is 5.4.286's copy_page_to_iter_iovec below, and "the fix is the series' patch" for an
inlined function is tests/test_probes_fast.py on the synthetic kernel."""

from __future__ import annotations

import shutil

import pytest
from guests import ci_build

from kernlab.core import paths
from kernlab.experiments.probecheck import atlas_rows
from kernlab.kernel.build import BuildOptions, build_kernel
from kernlab.probes.atlas import Kernel, row_for
from kernlab.probes.target import parse_target

pytestmark = pytest.mark.slow
MUST_SHOW = ["copyout", "copy_page_to_iter", "copy_page_to_iter_iovec", "vfs_read", "ext4_file_open",
             "__x64_sys_write", "SyS_write"]


@pytest.fixture(scope="module")
def kernels() -> dict[str, Kernel]:
    """The three lab kernels: built in CI, found (or skipped) elsewhere; ./kl test without
    KERNLAB_LOCAL_KERNELS cannot fetch 4.15 and 5.4.286 here, and need not when they are built."""
    builds = {v: ci_build(v) for v in ("4.15", "5.4.286", "6.1")}
    return {v: Kernel(b) for v, b in builds.items()}


def verdicts(kernel: Kernel) -> dict[str, str]:
    return {name: row_for(parse_target(name), kernel).shown for name in MUST_SHOW}


def test_the_atlas_of_the_three_lab_kernels(kernels):
    assert verdicts(kernels["4.15"]) == {
        "copyout": "attachable", "copy_page_to_iter": "attachable",
        "copy_page_to_iter_iovec": "not attachable", "vfs_read": "attachable",
        "ext4_file_open": "attachable", "__x64_sys_write": "not attachable",
        "SyS_write": "attachable"}
    for version in ("5.4.286", "6.1"):
        got = verdicts(kernels[version])
        assert got["SyS_write"] == "not attachable" and got["__x64_sys_write"] == "attachable"
        assert got["copyout"] == got["vfs_read"] == "attachable"
    iovec = row_for(parse_target("copy_page_to_iter_iovec"), kernels["5.4.286"])
    assert iovec.inlined_into == ["copy_page_to_iter"] and "DWARF: inlined_subroutine" in iovec.evidence
    assert row_for(parse_target("SyS_write"), kernels["6.1"]).fix == "probe __x64_sys_write on this kernel"


def test_live_registration_agrees_with_every_static_verdict_on_6_1(vm_name):
    result = atlas_rows([*MUST_SHOW, "do_int3", "tracepoint:syscalls:sys_enter_read", "file_ppos"],
                        ["6.1"], None, live=True, vm_name=vm_name("atlas"))
    assert len(result.live) == len(MUST_SHOW) + 3
    assert not result.defects, [d.to_json() for d in result.defects]
    assert {r.symbol: r.registered for r in result.live}["do_int3"] is False


COPYOUT_612 = "0001-lib-iov_iter-bring-back-copyout-probe-able.patch"


def test_6_12_brings_copyout_back_and_without_the_patch_names_its_successor():
    """6.12's reworked iov_iter: with its patch copyout is a symbol again and file_ppos too;
    copy_to_user_iter is __always_inline (the line above its name); without the patch the
    atlas says copyout is gone, names copy_to_user_iter via _copy_to_iter (6.1's tree says
    where copyout lived) and the patch, never pcnet_cs.c's static copyout."""
    patched = Kernel(ci_build("6.12"))
    assert verdicts(patched)["copyout"] == "attachable"
    assert row_for(parse_target("file_ppos"), patched).verdict == "attachable"
    inline = row_for(parse_target("copy_to_user_iter"), patched)
    assert inline.verdict == "no"
    assert "static __always_inline copy_to_user_iter (lib/iov_iter.c:" in inline.reason
    assert inline.fix == "probe a caller (_copy_to_iter): copy_to_user_iter is __always_inline"
    builds = paths.work_dir() / "build"
    before = set(builds.iterdir()) if builds.is_dir() else set()
    record = build_kernel("6.12", BuildOptions(without_patches=(COPYOUT_612,), samples=False))
    try:
        variant = Kernel(record)
        older = Kernel(ci_build("6.1")).peer()
        variant.peers = [older] if older else []
        row = row_for(parse_target("copyout"), variant)
        assert row.verdict == "no" and row.successor == "copy_to_user_iter", row
        assert "copyout is gone from Linux 6.12" in row.reason and "which _copy_to_iter uses" in row.reason
        assert f"patches/6.12/{COPYOUT_612}" in row.fix and "PCMCIA" not in row.fix
    finally:  # a variant this test made is a few GB no other test needs
        if record.build_dir not in before:
            shutil.rmtree(record.build_dir, ignore_errors=True)
