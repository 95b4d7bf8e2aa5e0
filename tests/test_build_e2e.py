"""The real thing: Debian's linux-source-6.1 built by kernlab with the lab config."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from guests import series_of

from kernlab.kernel.kconfig import read_config

ROOT = Path(__file__).resolve().parent.parent
LAB_OPTIONS = ["BPF_SYSCALL", "BPF_EVENTS", "KPROBES", "KPROBE_EVENTS", "KPROBE_EVENTS_ON_NOTRACE",
               "UPROBE_EVENTS", "FTRACE_SYSCALLS", "DEBUG_FS", "DEBUG_INFO_BTF", "MODULES"]

pytestmark = pytest.mark.slow


def invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=3600)


def test_built_kernel_has_the_lab_options_and_copyout(lab_kernel):
    config = read_config(Path(lab_kernel.data["outputs"]["config"]["path"]))
    assert {name: config.get(name) for name in LAB_OPTIONS} == dict.fromkeys(LAB_OPTIONS, "y")
    assert lab_kernel.data["symbols"]["copyout"] == "copyout"
    system_map = Path(lab_kernel.data["outputs"]["System.map"]["path"]).read_text()
    assert " T copyout\n" in system_map
    assert lab_kernel.kernelrelease.startswith("6.1.") and lab_kernel.kernelrelease.endswith("-kernlab")
    assert [p["name"] for p in lab_kernel.data["patches"]] == series_of("6.1")  # every one, in order
    assert lab_kernel.data["source"]["verified"] and lab_kernel.data["source"]["kind"] == "debian"
    for name in ("tracex1", "syscall_tp", "cpustat"):
        assert Path(lab_kernel.data["outputs"]["samples_bpf"][name]["path"]).is_file()
    assert (Path(lab_kernel.data["outputs"]["headers"]["path"]) / "linux" / "bpf.h").is_file()


def test_same_inputs_are_up_to_date_without_running_make(lab_kernel):
    make_log = Path(lab_kernel.data["build_dir"]) / "logs" / "make.log"
    before = make_log.stat().st_mtime_ns
    started = time.monotonic()
    done = invoke("build-kernel", "--version", "6.1")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "6.1 is up to date" in done.stderr
    assert done.stdout.strip().endswith(lab_kernel.data["outputs"]["bzImage"]["path"])
    assert make_log.stat().st_mtime_ns == before
    assert elapsed < 30  # generous bound for a loaded CI runner; bench/ measures the real figure


def test_kernel_info_says_where_the_bzimage_is(lab_kernel):
    done = invoke("kernel-info", "--version", "6.1")
    assert done.returncode == 0, done.stderr
    assert lab_kernel.data["outputs"]["bzImage"]["path"] in done.stdout
    assert "symbol     copyout: copyout" in done.stdout


def test_bzimage_carries_this_builds_vmlinux(lab_kernel, tmp_path):
    """vmlinux -> compressed/vmlinux.bin -> .lz4 -> piggy.o -> bzImage, each from the one before.

    A stale link here (ccache once handed back a piggy.o from an earlier build, since it
    cannot see piggy.S's .incbin) boots another kernel than the vmlinux and System.map say.
    """
    obj = Path(lab_kernel.data["build_dir"]) / "obj"
    compressed = obj / "arch/x86/boot/compressed"
    stripped = tmp_path / "vmlinux.bin"
    subprocess.run(["objcopy", "-R", ".comment", "-S", str(obj / "vmlinux"), str(stripped)], check=True)
    assert stripped.read_bytes() == (compressed / "vmlinux.bin").read_bytes()
    packed = (compressed / "vmlinux.bin.lz4").read_bytes()  # lz4 -l stream + 4-byte size (kbuild)
    unpacked = subprocess.run(["lz4", "-dc"], input=packed[:-4], capture_output=True, check=True).stdout
    assert unpacked == stripped.read_bytes()
    bzimage = Path(lab_kernel.data["outputs"]["bzImage"]["path"]).read_bytes()
    assert packed in bzimage
