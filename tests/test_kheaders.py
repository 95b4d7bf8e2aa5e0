"""The guest's kernel headers stage on a tiny fake kernel tree: merged layout, image, cache.

The tree and objects are fakes (a few files where a real build has them); mke2fs,
debugfs and the QEMU command line are real.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.records import BuildRecord, VmRecord
from kernlab.core.util import sha256_file
from kernlab.guest import qemu, vm
from kernlab.kernel import kheaders

TREE_FILES = {
    "include/linux/kconfig.h": "#include <generated/autoconf.h>\n",
    "include/linux/fs.h": "struct file { unsigned int f_flags; };\n",
    "include/uapi/linux/types.h": "typedef long long __s64;\n",
    "arch/x86/include/asm/types.h": "#include <asm-generic/int-ll64.h>\n",
    "arch/x86/include/uapi/asm/ptrace.h": "struct pt_regs;\n",
    "Makefile": "VERSION = 4\nPATCHLEVEL = 15\n",
    "arch/x86/Makefile": "# arch Makefile\n",
    "kernel/fork.c": "int fork;\n",  # sources: not headers, left out
    "arch/x86/kernel/head64.c": "int head;\n",
}
OBJ_FILES = {
    "include/generated/autoconf.h": "#define CONFIG_BPF 1\n",
    "include/generated/uapi/linux/version.h": "#define LINUX_VERSION_CODE 265984\n",
    "arch/x86/include/generated/asm/syscalls_64.h": "__SYSCALL_64(0, sys_read, )\n",
    "arch/x86/include/generated/uapi/asm/unistd_64.h": "#define __NR_read 0\n",
    "include/config/auto.conf": "CONFIG_BPF=y\n",
    "include/config/kernel.release": "4.15.0-kernlab\n",
    "include/config/bpf.h": "",  # fixdep's per-option stamps: left out
    ".config": "CONFIG_BPF=y\n",
    "Module.symvers": "",
    "kernel/fork.o": "ELF",  # objects: left out
    "vmlinux": "ELF",
}
MERGED = {
    "include/linux/kconfig.h", "include/linux/fs.h", "include/uapi/linux/types.h",
    "include/linux/compiler-link.h",
    "arch/x86/include/asm/types.h", "arch/x86/include/uapi/asm/ptrace.h",
    "include/generated/autoconf.h", "include/generated/uapi/linux/version.h",
    "arch/x86/include/generated/asm/syscalls_64.h",
    "arch/x86/include/generated/uapi/asm/unistd_64.h",
    "include/config/auto.conf", "include/config/kernel.release", ".config", "Module.symvers",
    "Makefile", "arch/x86/Makefile",
}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BuildRecord:
    """A build record over a fake patched tree and O= directory, in its own work area."""
    monkeypatch.setenv("KERNLAB_WORK", str(tmp_path / "work"))
    tree, build_dir = tmp_path / "work/src/4.15-aaaa", tmp_path / "work/build/4.15-bbbb"
    _write(tree, TREE_FILES)
    _write(build_dir / "obj", OBJ_FILES)
    (tree / "include/linux/compiler-link.h").symlink_to("compiler.h")  # kept as a link
    return BuildRecord.from_json({"version": "4.15", "key": "b" * 64, "kernelrelease": "4.15.0-kernlab",
                                  "tree": str(tree), "build_dir": str(build_dir)})


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def _image_ls(image: Path, directory: str) -> set[str]:
    out = subprocess.run(["debugfs", "-R", f"ls -p {directory}", str(image)],
                         capture_output=True, text=True, check=True).stdout
    return {line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6} - {".", ".."}


def _image_cat(image: Path, path: str) -> str:
    return subprocess.run(["debugfs", "-R", f"cat {path}", str(image)],
                          capture_output=True, text=True, check=True).stdout


# ---------------------------------------------------------------- the merged tree
def test_assemble_merges_source_and_generated_headers(fake_build: BuildRecord, tmp_path: Path) -> None:
    tree, obj = kheaders.build_dirs(fake_build)
    dest = tmp_path / "merged"
    count = kheaders.assemble(tree, obj, dest, kheaders.source_arch(obj))
    assert _files(dest) == MERGED and count == len(MERGED)
    # one directory where bpftrace's and bcc's -I list and -include kconfig.h point
    assert (dest / "include/generated/autoconf.h").read_text() == "#define CONFIG_BPF 1\n"
    assert (dest / "arch/x86/include/generated/uapi/asm/unistd_64.h").is_file()
    assert os.readlink(dest / "include/linux/compiler-link.h") == "compiler.h"
    # hard links, not copies, on one file system: nothing of the build is written
    assert (dest / "include/linux/fs.h").stat().st_ino == (tree / "include/linux/fs.h").stat().st_ino


def test_a_missing_part_names_the_file_and_the_fix(fake_build: BuildRecord, tmp_path: Path) -> None:
    tree, obj = kheaders.build_dirs(fake_build)
    (obj / "include/config/auto.conf").unlink()
    with pytest.raises(KernlabError) as error:
        kheaders.assemble(tree, obj, tmp_path / "merged", "x86", "4.15")
    assert f"{obj}/include/config/auto.conf is missing" in error.value.cause
    assert error.value.fix == "rebuild the kernel: `invoke build-kernel --version 4.15 --clean`"


def test_optional_parts_may_be_absent(fake_build: BuildRecord, tmp_path: Path) -> None:
    tree, obj = kheaders.build_dirs(fake_build)
    (obj / "Module.symvers").unlink()  # a kernel without modules has none
    kheaders.assemble(tree, obj, tmp_path / "merged", "x86")
    assert not (tmp_path / "merged/Module.symvers").exists()


def test_arch_comes_from_the_generated_headers(fake_build: BuildRecord) -> None:
    obj = fake_build.obj
    assert kheaders.source_arch(obj) == "x86"
    (obj / "arch/arm64/include/generated").mkdir(parents=True)
    with pytest.raises(KernlabError, match="cannot tell the architecture"):
        kheaders.source_arch(obj)


# ---------------------------------------------------------------- the stage
def test_stage_makes_a_labelled_image_and_a_record(fake_build: BuildRecord) -> None:
    record = kheaders.ensure_headers(fake_build)
    final = paths.work_dir() / "kheaders" / f"4.15-{kheaders.stage_key(fake_build)[:12]}"
    image = Path(record["image"]["path"])
    assert image == final / "kheaders.ext4" and sorted(p.name for p in final.iterdir()) == \
        ["kheaders.ext4", "kheaders.json", "make.log"]  # no tree left behind
    assert record["image"]["sha256"] == sha256_file(image)
    assert record["build_key"] == fake_build.key and record["files"] == len(MERGED)
    assert record["guest_path"] == "/lib/modules/4.15.0-kernlab/build"
    label = subprocess.run(["e2label", str(image)], capture_output=True, text=True).stdout
    assert label.strip() == kheaders.LABEL == "kernlab-kheaders"
    assert {"include", "arch", "Makefile", ".config", "Module.symvers"} <= _image_ls(image, "/")
    assert _image_cat(image, "/include/generated/autoconf.h") == "#define CONFIG_BPF 1\n"
    assert "syscalls_64.h" in _image_ls(image, "/arch/x86/include/generated/asm")


def test_stage_is_cached_by_the_build_key(fake_build: BuildRecord) -> None:
    first = kheaders.ensure_headers(fake_build)
    image = Path(first["image"]["path"])
    before = image.stat().st_mtime_ns
    started = time.monotonic()
    assert kheaders.ensure_headers(fake_build) == first
    assert time.monotonic() - started < 0.1 and image.stat().st_mtime_ns == before
    another = BuildRecord.from_json(fake_build.to_json() | {"key": "c" * 64})
    other = kheaders.ensure_headers(another)  # another build: its own
    assert other["image"]["path"] != first["image"]["path"]


def test_gone_tree_is_one_line_error_and_nothing_is_left(fake_build: BuildRecord, tmp_path: Path) -> None:
    os.rename(fake_build.tree_named, tmp_path / "moved")
    with pytest.raises(KernlabError) as error:
        kheaders.ensure_headers(fake_build)
    assert "source tree" in error.value.cause and "is gone" in error.value.cause
    assert error.value.fix == "rebuild it: `invoke build-kernel --version 4.15 --clean`"
    assert kheaders.find_headers(fake_build) is None
    assert not list((paths.work_dir() / "kheaders").glob("4.15-*/"))


def test_mke2fs_failure_names_its_log_and_leaves_no_output(fake_build: BuildRecord,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(kheaders, "image_size", lambda root: (64 * 1024, 16))  # far too small
    with pytest.raises(KernlabError) as error:
        kheaders.ensure_headers(fake_build)
    log = kheaders.stage_dir(fake_build).with_name(kheaders.stage_dir(fake_build).name + ".log")
    assert f"mke2fs (kernel headers image) failed (exit 1); full log: {log}" in error.value.cause
    assert "mke2fs" in log.read_text()
    assert not kheaders.stage_dir(fake_build).exists()
    assert [p.name for p in log.parent.iterdir() if not p.name.startswith(".")] == [log.name]


# ---------------------------------------------------------------- VM wiring
def test_qemu_attaches_the_headers_read_only_as_the_second_disk(tmp_path: Path) -> None:
    spec = qemu.QemuSpec(kernel=tmp_path / "bzImage", disk=tmp_path / "overlay.qcow2",
                         console_log=tmp_path / "c", qmp_socket=tmp_path / "q",
                         pidfile=tmp_path / "p", cmdline="", accel=qemu.Accel("tcg", "test"),
                         kheaders=tmp_path / "kheaders.ext4")
    drives = [a for a in spec.argv(2222) if a.startswith("file=")]
    assert drives == [f"file={tmp_path}/overlay.qcow2,if=virtio,format=qcow2,discard=unmap",
                      f"file={tmp_path}/kheaders.ext4,if=virtio,format=raw,readonly=on"]
    spec.kheaders = None
    assert len([a for a in spec.argv(2222) if a.startswith("file=")]) == 1


def test_a_vm_boots_without_headers_it_cannot_have_and_says_why(fake_build: BuildRecord, tmp_path,
                                                                capsys) -> None:
    os.rename(fake_build.tree_named, tmp_path / "moved")
    headers = vm.headers_for(fake_build)
    assert headers["key"] is None and "is gone" in headers["missing"]
    assert "the guest gets no kernel headers:" in capsys.readouterr().err


def test_init_mounts_the_disk_by_its_label_where_the_tools_look() -> None:
    init = (paths.vm_dir() / "init").read_text()
    assert f"LABEL={kheaders.LABEL}" in init
    assert 'headers=/lib/modules/$release/build' in init
    assert vm.HEADERS_FAILED in init


def test_a_running_vm_is_reused_only_with_this_builds_headers(fake_build: BuildRecord, tmp_path) -> None:
    def booted(headers: dict | None) -> vm.Vm:
        record = {"name": "t", "ssh_port": 1, "console_log": str(tmp_path / "c")}
        return vm.Vm(tmp_path, VmRecord.from_json(record | ({"kheaders": headers} if headers else {})))

    key = kheaders.stage_key(fake_build)
    assert vm._has_headers(booted({"key": key}), fake_build)
    assert not vm._has_headers(booted({"key": "0" * 64}), fake_build)
    assert not vm._has_headers(booted(None), fake_build)  # booted before the headers stage
    assert vm._has_headers(booted({"key": None, "missing": "gone"}), fake_build)
    kheaders.ensure_headers(fake_build)  # now they can be had: restart to attach them
    assert not vm._has_headers(booted({"key": None, "missing": "gone"}), fake_build)
