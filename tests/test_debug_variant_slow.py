"""The catalog's `debug` variant for real: 4.15+debug (the thesis kernel, whose lab build has no
DWARF) built with DWARF, the kernel's gdb scripts, KASAN and lockdep; gdb on it reads the
source line of a breakpoint in copyout and runs the kernel's own lx-dmesg; a module that
reads past a kmalloc'ed object or takes two mutexes in both orders (tests/data/splatmod)
makes the run FAIL with the KASAN or lockdep report, where the lab build says nothing.

In CI the variant is built (tests/guests.py CI_BUILDS); elsewhere these tests skip unless it
is built (`invoke build-kernel --version 4.15+debug`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from guests import ci_build
from test_debug_slow import GDB_SCRIPT, READITER
from test_splats_slow import MODULE, result_of

from kernlab.guest import gdb
from kernlab.guest.qemu import free_port
from kernlab.guest.remote import connect, run
from kernlab.guest.vm import start_vm, vmlinux_of
from kernlab.kernel.kconfig import read_config

ROOT = Path(__file__).resolve().parent.parent
DEBUG = "4.15+debug"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def debug_build():
    return ci_build(DEBUG)


def test_the_debug_build_has_dwarf_gdb_scripts_kasan_and_lockdep(debug_build) -> None:
    config = read_config(Path(debug_build.data["outputs"]["config"]["path"]))
    assert {name: config.get(name) for name in ("DEBUG_INFO", "GDB_SCRIPTS", "KASAN", "PROVE_LOCKING")} == \
        dict.fromkeys(("DEBUG_INFO", "GDB_SCRIPTS", "KASAN", "PROVE_LOCKING"), "y")
    vmlinux = Path(debug_build.data["outputs"]["vmlinux"]["path"])
    assert gdb.has_dwarf(vmlinux) and gdb.missing(vmlinux) == ""
    lab = ci_build("4.15")
    assert not gdb.has_dwarf(Path(lab.data["outputs"]["vmlinux"]["path"]))  # why the variant exists
    assert debug_build.id.startswith("4.15+debug-")


def splat_experiment(root: Path, name: str, param: str) -> None:
    """An experiment that builds kl_splat.ko against the kernel and loads it with ``param``."""
    folder = root / name
    shutil.copytree(MODULE, folder / "mod")
    (folder / "experiment.yaml").write_text(yaml.safe_dump({
        "title": name, "description": f"loads kl_splat.ko {param}",
        "build": [{"host": 'make -C "$KERNEL_BUILD/obj" M="$PWD/mod" modules'}],
        "run": {"timeout": 600, "steps": [
            {"name": "load", "cmd": f"insmod mod/kl_splat.ko {param} && rmmod kl_splat && echo loaded"}]},
        "capture": {"trace_pipe": False},
        "expect": [{"contains": "^loaded", "in": "step:load"}]}))


def test_kasan_and_lockdep_reports_fail_the_run_on_the_debug_kernel(debug_build, lab_image, vm_name,
                                                                     tmp_path) -> None:
    root = tmp_path / "experiments"
    splat_experiment(root, "kasanread", "kasan=1")
    splat_experiment(root, "lockorder", "lockdep=1")
    env = {**os.environ, "KERNLAB_EXPERIMENTS": str(root), "KERNLAB_RESULTS": str(tmp_path / "results"),
           "KERNLAB_PLAIN": "1"}
    name = vm_name("dbgsplat")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], env=env,
                              capture_output=True, text=True, timeout=1800, check=False)

    try:
        # lockdep first: a KASAN report turns lockdep off for the rest of the boot
        # (add_taint(..., LOCKDEP_NOW_UNRELIABLE)), so on the same guest it would say nothing
        locks = cli("run-experiment", "lockorder", "--kernel", DEBUG, "--keep-vm", "--vm-name", name)
        assert locks.returncode == 1, locks.stdout + locks.stderr[-3000:]
        bundle, result = result_of(locks.stdout)
        assert result["reason"].startswith("kernel splat: lockdep: "), result
        assert "possible circular locking dependency detected" in result["reason"]
        assert "kl_lock_a" in (bundle / "splats.txt").read_text()
        kasan = cli("run-experiment", "kasanread", "--kernel", DEBUG, "--keep-vm", "--vm-name", name)
        assert kasan.returncode == 1, kasan.stdout + kasan.stderr[-3000:]
        bundle, result = result_of(kasan.stdout)
        assert result["reason"].startswith("kernel splat: kasan: BUG: KASAN: slab-out-of-bounds"), result
        assert "kl_read_past_end" in (bundle / "splats.txt").read_text()
    finally:
        cli("vm.down", "--name", name)
    # the same module on the lab build (no KASAN, no lockdep): the read and the lock order pass unseen
    quiet = cli("run-experiment", "kasanread", "--kernel", "4.15", "--vm-name", vm_name("labsplat"))
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr[-3000:]
    assert quiet.stdout.strip().endswith("PASS")


GDB_LX = GDB_SCRIPT.replace("bt 4\n", "bt 4\nlx-dmesg\n")


def test_gdb_on_the_debug_variant_has_source_lines_and_the_kernels_scripts(debug_build, lab_image, vm_name,
                                                                            tmp_path) -> None:
    """gdb on 4.15+debug: the breakpoint in copyout names lib/iov_iter.c and its line (the lab
    build of 4.15 gives symbols only), and lx-dmesg, from the build's vmlinux-gdb.py, prints
    the guest's log."""
    port = int(os.environ.get("KERNLAB_TEST_GDB_PORT", "0")) or free_port()
    vm = start_vm(debug_build, lab_image, vm_name("dbggdb"), gdb_port=port)
    try:
        binary = tmp_path / "readiter"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(READITER / "readiter.c")], check=True)
        conn = connect(vm)
        run(conn, "cat > /root/readiter && chmod +x /root/readiter", timeout=120, stdin=binary.read_bytes())
        run(conn, "cat > /root/data.txt", timeout=120, stdin=(READITER / "data.txt").read_bytes())
        assert vmlinux_of(vm) is not None
        script, out = tmp_path / "copyout.gdb", tmp_path / "gdb.out"
        script.write_text(GDB_LX)
        with open(out, "w") as handle:
            proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "vm.gdb", "--name",
                                     vm.name, "--batch", str(script)], stdout=handle,
                                    stderr=subprocess.STDOUT, env={**os.environ, "KERNLAB_PLAIN": "1"})
        deadline = time.monotonic() + 600
        while "GDB-ARMED" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        work = subprocess.run([shutil.which("ssh"), "-F", str(vm.info.ssh_config), f"kernlab-{vm.name}",
                               "cd /root && ./readiter data.txt"], capture_output=True, text=True,
                              timeout=900)
        assert proc.wait(timeout=600) == 0, out.read_text()
    finally:
        vm.stop()
    transcript = out.read_text()
    print(transcript)
    assert "read 42 bytes: KERNLAB-READITER-CONTENT" in work.stdout
    assert "Breakpoint 1, copyout (" in transcript and "HIT copyout len=42" in transcript
    assert "lib/iov_iter.c:" in transcript  # a source line: DWARF
    assert "Linux version 4.15.0" in transcript  # lx-dmesg read the guest's log buffer
