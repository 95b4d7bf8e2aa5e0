"""Debugging the guest kernel with real tools: gdb through QEMU's gdbstub (a breakpoint on
copyout hit by readiter's workload, the file's bytes in its source buffer; by hand on a
`vm.up --gdb` VM and through `run-experiment --gdb`, which waits for gdb), and a vmcore
written by `vm.dump` opened by Debian's crash and by drgn.

No kernel is built here: the 6.1 build must exist (`invoke build-kernel --version 6.1`);
gdb, crash and python3-drgn come from apt (`invoke setup`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from guests import ci_build

from kernlab.guest import gdb
from kernlab.guest.qemu import free_port
from kernlab.guest.remote import connect, run
from kernlab.guest.vm import dump_vm, start_vm, vmlinux_of

ROOT = Path(__file__).resolve().parent.parent
READITER = ROOT / "experiments" / "readiter"
pytestmark = pytest.mark.slow
# The condition compares the buffer's first 8 bytes, "KERNLAB-", as one little-endian word
# ($_memeq with a string literal needs malloc in the inferior, which a kernel is not).
GDB_SCRIPT = """\
break copyout if n == 42 && *(unsigned long long *)from == 0x2d42414c4e52454b
echo GDB-ARMED\\n
continue
printf "HIT copyout len=%lu\\n", n
x/s from
bt 4
delete
detach
"""


@pytest.fixture(scope="module")
def debug_vm(lab_image, vm_name, tmp_path_factory):
    """A 6.1 guest booted with the gdbstub, readiter's workload and data in /root."""
    build = ci_build("6.1")
    port = int(os.environ.get("KERNLAB_TEST_GDB_PORT", "0")) or free_port()
    vm = start_vm(build, lab_image, vm_name("gdb"), gdb_port=port)
    try:
        binary = tmp_path_factory.mktemp("readiter") / "readiter"
        subprocess.run(["gcc", "-O2", "-o", str(binary), str(READITER / "readiter.c")], check=True)
        conn = connect(vm)
        run(conn, "cat > /root/readiter && chmod +x /root/readiter", timeout=60, stdin=binary.read_bytes())
        run(conn, "cat > /root/data.txt", timeout=60, stdin=(READITER / "data.txt").read_bytes())
        yield vm
    finally:
        vm.stop()


def test_gdb_stops_in_copyout_with_the_files_bytes(debug_vm, tmp_path) -> None:
    vmlinux = vmlinux_of(debug_vm)
    assert vmlinux is not None and gdb.has_dwarf(vmlinux)
    assert f"-gdb tcp:127.0.0.1:{debug_vm.info.data['gdb_port']}" in " ".join(debug_vm.info.data["argv"])
    kaslr = "CONFIG_RANDOMIZE_BASE=y" in Path(debug_vm.info.data["kernel"]["vmlinux"]).with_name(
        ".config").read_text().splitlines()
    assert ("nokaslr" in debug_vm.info.data["cmdline"]) == kaslr  # the lab kernels have no KASLR
    script = tmp_path / "copyout.gdb"
    script.write_text(GDB_SCRIPT)
    out = tmp_path / "gdb.out"
    env = {**os.environ, "KERNLAB_PLAIN": "1"}
    with open(out, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "vm.gdb", "--name",
                                 debug_vm.name, "--batch", str(script)], stdout=handle,
                                stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while "GDB-ARMED" not in out.read_text():
        assert proc.poll() is None, out.read_text()
        assert time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)
    ssh = shutil.which("ssh")
    work = subprocess.run([ssh, "-F", str(debug_vm.info.ssh_config), f"kernlab-{debug_vm.name}",
                           "cd /root && ./readiter data.txt"], capture_output=True, text=True, timeout=600)
    assert proc.wait(timeout=300) == 0, out.read_text()
    transcript = out.read_text()
    print(transcript)
    assert "read 42 bytes: KERNLAB-READITER-CONTENT" in work.stdout
    assert "Breakpoint 1, copyout (" in transcript
    assert "lib/iov_iter.c" in transcript
    assert "HIT copyout len=42" in transcript
    assert '"KERNLAB-READITER-CONTENT-0123456' in transcript


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, seconds: float = 600) -> None:
    deadline = time.monotonic() + seconds
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.2)


def test_run_experiment_waits_for_gdb_and_its_breakpoint_sees_the_workloads_read(lab_image, vm_name,
                                                                                 tmp_path) -> None:
    """`run-experiment readiter --gdb PORT`: the workload waits until gdb (`vm.gdb --batch`)
    is attached and continues; readiter's read stops at the breakpoint in copyout with the
    file's bytes, the guest stopped in the debugger is no fault, and the run PASSes."""
    ci_build("6.1")
    name, port = vm_name("rungdb"), free_port()
    env = {**os.environ, "KERNLAB_PLAIN": "1", "KERNLAB_RESULTS": str(tmp_path / "results")}
    err = tmp_path / "run.err"
    with open(err, "w") as handle:
        run_proc = subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), "run-experiment",
                                     "readiter", "--kernel", "6.1", "--vm-name", name, "--gdb", str(port)],
                                    stdout=subprocess.PIPE, stderr=handle, text=True, env=env)
    try:
        wait_for_text(err, f"waiting for a debugger on 127.0.0.1:{port}", run_proc)
        time.sleep(3)
        assert "run readiter in the guest" not in err.read_text()  # no debugger yet: no workload
        script, transcript = tmp_path / "copyout.gdb", tmp_path / "gdb.out"
        script.write_text(GDB_SCRIPT)
        with open(transcript, "w") as handle:
            debugger = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "vm.gdb", "--name",
                                       name, "--batch", str(script)], stdout=handle, stderr=subprocess.STDOUT,
                                      env=env, timeout=600, check=False)
        out, _ = run_proc.communicate(timeout=600)
    finally:
        run_proc.kill()
    said, gdb_said = err.read_text(), transcript.read_text()
    print(said[-3000:], gdb_said)
    assert debugger.returncode == 0, gdb_said
    assert run_proc.returncode == 0 and out.strip().endswith("PASS"), out + said
    assert "debugger attached after" in said
    assert "Breakpoint 1, copyout (" in gdb_said and "HIT copyout len=42" in gdb_said
    assert '"KERNLAB-READITER-CONTENT-0123456' in gdb_said


@pytest.fixture(scope="module")
def vmcore(debug_vm, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dump") / "vmcore.elf"
    return dump_vm(debug_vm.name, str(out), "elf")


def test_crash_reads_the_task_list_and_log_of_a_vmcore(vmcore) -> None:
    crash = shutil.which("crash")
    if crash is None:
        pytest.skip("Debian's crash is not installed (`apt-get install crash`)")
    assert vmcore["vmcoreinfo"].startswith(("from the guest", "added by kernlab"))
    argv = shlex.split(vmcore["open"]["crash"])  # as `vm.dump` prints it
    assert argv[0] == "crash"
    commands = "list task_struct.tasks -s task_struct.pid,comm -h init_task\nlog\nquit\n"
    done = subprocess.run([crash, "-s", *argv[1:]], input=commands, capture_output=True, text=True,
                          timeout=600)
    print(done.stdout[-3000:], done.stderr[-2000:])
    assert done.returncode == 0, done.stderr
    assert 'comm = "kernlab-init' in done.stdout and 'comm = "sshd' in done.stdout  # the task list
    assert "Linux version 6.1" in done.stdout  # the log buffer


def test_drgn_reads_the_task_list_of_a_vmcore(vmcore, tmp_path) -> None:
    if subprocess.run(["/usr/bin/python3", "-c", "import drgn"], capture_output=True, check=False).returncode:
        pytest.skip("python3-drgn is not installed (`apt-get install python3-drgn`)")
    script = tmp_path / "tasks.py"
    script.write_text(
        "from drgn.helpers.linux.pid import for_each_task\n"
        "print('RELEASE', prog['init_uts_ns'].name.release.string_().decode())\n"
        "for task in for_each_task(prog):\n"
        "    print('TASK', int(task.pid), task.comm.string_().decode())\n")
    done = subprocess.run(["/usr/bin/python3", "-m", "drgn", "-q", "-c", vmcore["vmcore"], "-s",
                           vmcore["vmlinux"]["path"], str(script)], capture_output=True, text=True,
                          timeout=600)
    print(done.stdout[-3000:], done.stderr[-2000:])
    assert done.returncode == 0, done.stderr
    assert "RELEASE 6.1" in done.stdout
    assert "TASK 1 " in done.stdout and "sshd" in done.stdout
