"""Real boots: the 6.1 kernel on the real image under TCG, fabric, testinfra, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from interrupts import sigint_default

from kernlab.core.errors import KernlabError
from kernlab.core.util import sha256_file
from kernlab.guest import qemu, remote
from kernlab.guest.ensure import ensure_vm
from kernlab.guest.verify import verify_vm
from kernlab.guest.vm import find_vm, run_dir_of, start_vm

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _invoke(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def test_guest_runs_the_built_kernel_over_fabric(lab_vm, lab_kernel: dict) -> None:
    conn = remote.connect(lab_vm)
    assert remote.run(conn, "uname -r", timeout=30).stdout.strip() == lab_kernel.data["kernelrelease"]
    assert remote.connect(lab_vm) is conn  # one connection, kept open
    assert "KERNLAB-READY" in lab_vm.console_log.read_text()
    rec = lab_vm.info.to_json()
    assert rec["accel"] == "tcg" and rec["ready_seconds"] < 120
    assert f"hostfwd=tcp:127.0.0.1:{lab_vm.ssh_port}-:22" in " ".join(rec["argv"])


def test_guest_writes_go_to_the_overlay(lab_vm, lab_image: dict) -> None:
    base = Path(lab_image.data["image"]["path"])
    before = base.stat().st_mtime_ns
    remote.run(remote.connect(lab_vm), "dd if=/dev/urandom of=/root/blob bs=1M count=8 && sync",
               timeout=120)
    assert base.stat().st_mtime_ns == before
    assert lab_vm.info.overlay.stat().st_size > 8 << 20


def test_ensure_vm_reuses_the_running_guest(lab_vm, lab_kernel: dict, lab_image: dict) -> None:
    started = time.monotonic()
    again = ensure_vm(lab_kernel, lab_image, lab_vm.name)
    assert again.pid == lab_vm.pid
    assert time.monotonic() - started < 10


def test_testinfra_checks_pass(lab_vm) -> None:
    log = verify_vm(lab_vm)
    text = log.read_text()
    assert "test_running_kernel_is_the_built_one PASSED" in text
    assert "test_bpftrace_runs_a_one_liner PASSED" in text
    assert "FAILED" not in text


def test_command_timeout_is_enforced(lab_vm) -> None:
    started = time.monotonic()
    with pytest.raises(KernlabError, match="timed out after 2s: sleep 60"):
        remote.run(remote.connect(lab_vm), "sleep 60", timeout=2)
    assert time.monotonic() - started < 10
    assert remote.run(remote.connect(lab_vm), "echo still here", timeout=30).ok


def test_cli_ssh_and_status(lab_vm) -> None:
    done = _invoke("vm.ssh", "--name", lab_vm.name, "-c", "cat /proc/sys/kernel/osrelease")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == lab_vm.info.kernelrelease
    assert _invoke("vm.ssh", "--name", lab_vm.name, "-c", "exit 3").returncode == 3
    status = _invoke("vm.status", "--name", lab_vm.name)
    assert f"ssh 127.0.0.1:{lab_vm.ssh_port}, tcg" in status.stdout


def test_openssh_client_uses_the_generated_config(lab_vm) -> None:
    done = subprocess.run(["ssh", "-F", str(lab_vm.info.ssh_config), f"kernlab-{lab_vm.name}",
                           "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_guest_panic_is_reported_and_qemu_ends(lab_kernel: dict, vm_name) -> None:
    """A bad root= panics the guest: exit 1, the panic line, the console tail; no QEMU left."""
    name = vm_name("panic")
    done = _invoke("vm.up", "--kernel", "6.1", "--name", name, "--append",
                   "root=/dev/kernlab-missing")
    assert done.returncode == 1
    console = run_dir_of(name) / "console.log"
    assert "guest kernel panicked: Kernel panic - not syncing: VFS: Unable to mount root" \
        in done.stderr
    assert str(console) in done.stderr
    assert "Call Trace:" in done.stderr  # the console tail is shown
    assert find_vm(name) is None


def test_sshd_never_ready_times_out_naming_the_console(lab_kernel: dict, lab_image: dict,
                                                        vm_name) -> None:
    """init=/bin/sh boots fine but never starts sshd: a timeout naming the console log."""
    name = vm_name("nossh")
    started = time.monotonic()
    with pytest.raises(KernlabError) as error:
        start_vm(lab_kernel, lab_image, name, append="init=/bin/sh", timeout=25)
    assert time.monotonic() - started < 60
    console = run_dir_of(name) / "console.log"
    assert f"was not ready within 25s; console log: {console}" in error.value.cause
    assert find_vm(name) is None
    assert not [p for p in _qemu_pids() if f"process=kernlab-{name} " in qemu.cmdline_of(p)]


def test_ctrl_c_during_boot_leaves_no_qemu(lab_kernel: dict, lab_image: dict,
                                           vm_name) -> None:
    name = vm_name("ctrlc")
    # --cold: a snapshot restore is over in about a second, too soon to be interrupted
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "vm.up", "--kernel", "6.1",
                             "--name", name, "--cold"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_default)
    pidfile = run_dir_of(name) / "qemu.pid"
    deadline = time.monotonic() + 60
    while not (pidfile.is_file() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "QEMU never started"
        time.sleep(0.1)
    qemu_pid = int(pidfile.read_text())
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "kernlab: interrupted" in err
    assert not qemu.pid_alive(qemu_pid)
    assert find_vm(name) is None


def test_vm_down_stops_qemu(lab_kernel: dict, lab_image: dict, vm_name) -> None:
    vm = start_vm(lab_kernel, lab_image, vm_name("down"))
    pid = vm.pid
    image_sha = lab_image.data["image"]["sha256"]
    done = _invoke("vm.down", "--name", vm.name)
    assert done.returncode == 0, done.stderr
    assert not qemu.pid_alive(pid)
    assert find_vm(vm.name) is None
    assert not vm.info.overlay.exists()
    assert sha256_file(Path(lab_image.data["image"]["path"])) == image_sha  # base never written


def _qemu_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()
            and "qemu-system" in qemu.cmdline_of(int(p))]
