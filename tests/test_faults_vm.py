"""Faults with real parts: real QEMU guests (the 6.1 build; 4.15 for a mismatch), the real
CLI in subprocesses, real signals (SIGINT as a terminal's Ctrl-C sends it, SIGTERM,
SIGSTOP on QEMU), sshd really killed in the guest, and a real guest kernel panic
(tests/guestpanic.py makes init exit). Each case checks the one-line message, its
timing, what the bundle says, and that nothing is left: no QEMU that kernlab started,
no guest process of the run when the user's VM is kept.

No kernel is built here: the builds must exist (`invoke build-kernel --version 6.1`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import guestpanic
import pytest
import yaml
from guests import ci_build
from interrupts import sigint_default

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
CTRL_C_LIMIT = 5.0  # Ctrl-C to exit, everything included
DETECT_LIMIT = 10.0  # a frozen, panicked or silent VM named within this
MARGIN = 1.5  # Python start-up and a loaded host, on top of the limits above
TIMES: dict[str, float] = {}  # measured, printed at the end (pytest -s)


@pytest.fixture(scope="module")
def kernel() -> dict:
    return ci_build("6.1")


@pytest.fixture(scope="module", autouse=True)
def show_times() -> Iterator[None]:
    yield
    for what, seconds in sorted(TIMES.items()):
        print(f"\nmeasured: {what}: {seconds:.2f}s", end="")


# ---------------------------------------------------------------- experiments and the CLI
def experiment(root: Path, name: str, workload: str) -> None:
    """``name``: a background "loader" that waits to be stopped, then the ``workload`` step."""
    (root / name).mkdir(parents=True)
    (root / name / "experiment.yaml").write_text(yaml.safe_dump({
        "title": name, "description": "a fault test",
        "run": {"timeout": 900, "steps": [
            {"name": "loader", "cmd": 'echo "loader ready"; exec sleep 600', "background": True,
             "ready": "loader ready"},
            {"name": "workload", "cmd": workload, "timeout": 800}]},
        "expect": [{"contains": "never printed", "in": "step:workload"}]}))


@pytest.fixture
def env(tmp_path: Path, lab_image) -> dict[str, str]:
    """The CLI's environment: this session's state and builds, bundles and experiments in tmp."""
    root = tmp_path / "experiments"
    experiment(root, "longrun", "echo working; sleep 600")
    experiment(root, "panics", f"echo working; sleep 1; {guestpanic.shell_command()}; sleep 60")
    experiment(root, "sshdies", "echo working; sleep 1; pkill -x sshd; sleep 60")
    return {**os.environ, "KERNLAB_EXPERIMENTS": str(root), "KERNLAB_RESULTS": str(tmp_path / "results"),
            "KERNLAB_PLAIN": "1", "KERNLAB_ACCEL": os.environ.get("KERNLAB_ACCEL", "tcg")}


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


class Background:
    """`invoke ARGS` running in the background, its stderr in a file to watch."""

    def __init__(self, args: list[str], env: dict[str, str], tmp: Path) -> None:
        self.err_path = tmp / f"bg-{time.monotonic_ns()}.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "invoke", "-r", str(ROOT), *args], env=env, stdout=subprocess.PIPE,
            stderr=open(self.err_path, "w"), text=True, preexec_fn=sigint_default)  # noqa: SIM115

    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, marker: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.err():
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {marker!r}:\n{self.err()}"
            assert time.monotonic() < deadline, f"no {marker!r} within {timeout}s:\n{self.err()}"
            time.sleep(0.05)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, self.err()


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


def qemu_pids(name: str) -> list[int]:
    """QEMU processes of VM ``name`` (by the process= marker in their command line)."""
    marker = f"process=kernlab-{name} ".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def vm_up(name: str, env: dict[str, str], kernel: str = "6.1") -> int:
    done = cli("vm.up", "--kernel", kernel, "--name", name, env=env)
    assert done.returncode == 0, done.stderr
    (pid,) = qemu_pids(name)
    return pid


def vm_down(name: str, env: dict[str, str]) -> None:
    cli("vm.down", "--name", name, env=env)
    assert not qemu_pids(name)


def bundle_of(stdout: str) -> Path:
    path = Path(last_line(stdout).rsplit(" ", 1)[0])
    assert (path / "result.json").is_file(), stdout
    return path


def one_error(stderr: str) -> str:
    """The single `kernlab: error:` line, which must be the last; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("kernlab: error:")]
    assert len(errors) == 1 and errors[0] == last_line(stderr), stderr
    return errors[0]


# ---------------------------------------------------------------- Ctrl-C during a run
@dataclass
class Interrupt:
    id: str
    user_vm: bool  # the user started the VM (vm.up): the run reuses it and leaves it running
    marker: str  # stderr line after which the signals are sent
    delay: float
    signals: tuple[int, ...]  # sent 0.3 s apart


MID_RUN = "> run longrun in the guest"
INTERRUPTS = [
    Interrupt("ctrl-c-mid-run", False, MID_RUN, 2.0, (signal.SIGINT,)),
    Interrupt("ctrl-c-mid-run-users-vm", True, MID_RUN, 2.0, (signal.SIGINT,)),
    Interrupt("ctrl-c-twice", False, MID_RUN, 2.0, (signal.SIGINT, signal.SIGINT)),
    Interrupt("sigterm-mid-run-users-vm", True, MID_RUN, 2.0, (signal.SIGTERM,)),
    Interrupt("ctrl-c-while-booting", False, "> boot ", 0.3, (signal.SIGINT,)),
]


def guest_leftovers(name: str, env: dict[str, str]) -> str:
    """The run's processes still alive in the guest (driver, loader, workload)."""
    done = cli("vm.ssh", "--name", name, "-c",
               "ps -eo pid,args | grep -E 'kernlab_driver|sleep 600' | grep -v grep; true", env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wait_for_steps(name: str, env: dict[str, str], run: Background, limit: float = 60.0) -> None:
    """Until the guest runs both steps' ``sleep 600`` (a fixed delay is not enough on a
    loaded machine: the driver may not have started the workload yet)."""
    deadline = time.monotonic() + limit
    while guest_leftovers(name, env).count("sleep 600") < 2:
        assert time.monotonic() < deadline, f"the steps did not start within {limit:.0f}s\n{run.err()}"
        time.sleep(0.5)


@pytest.mark.parametrize("case", INTERRUPTS, ids=[c.id for c in INTERRUPTS])
def test_ctrl_c_stops_the_run_and_its_guest_processes_and_writes_the_bundle(
        case: Interrupt, kernel, env, tmp_path, vm_name) -> None:
    from kernlab.guest.vm import run_dir_of

    name = vm_name(f"int{INTERRUPTS.index(case)}")
    user_pid = vm_up(name, env) if case.user_vm else None
    try:
        run = Background(["run-experiment", "longrun", "--kernel", "6.1", "--vm-name", name], env, tmp_path)
        run.wait_for(case.marker)
        time.sleep(case.delay)
        if case.marker == MID_RUN:  # the loader and the workload both run: now stop them
            wait_for_steps(name, env, run)
        sent = time.monotonic()
        for sig in case.signals:
            run.proc.send_signal(sig)
            time.sleep(0.3)
        code, out, err = run.finish(timeout=60)
        took = time.monotonic() - sent
        TIMES[f"Ctrl-C to exit, {case.id}"] = took

        assert code == 130, err
        assert "Traceback" not in err
        assert last_line(err).startswith("kernlab: interrupted; the bundle holds what was collected: "), err
        assert took < CTRL_C_LIMIT + MARGIN, f"exit {took:.1f}s after the signal\n{err}"
        bundle = bundle_of(out)
        assert last_line(err).endswith(str(bundle)) and last_line(out) == f"{bundle} FAIL"
        result = json.loads((bundle / "result.json").read_text())
        assert (result["status"], result["reason"]) == ("FAIL", "interrupted")
        assert (bundle / "manifest.json").is_file()
        if case.marker == MID_RUN:  # what the guest did is in the bundle
            steps = {s["name"]: s for s in result["steps"]}
            assert steps["loader"]["stopped"] and steps["workload"]["exit"] == -signal.SIGKILL
            assert "working" in (bundle / "steps" / "workload.log").read_text()
            assert (bundle / "console.log").is_file()
        if case.user_vm:
            assert qemu_pids(name) == [user_pid], "the user's VM must be left running"
            assert guest_leftovers(name, env) == ""
            assert "already runs this kernel and image" in err
        else:
            assert not qemu_pids(name), "the VM this run started must be stopped"
            assert not (run_dir_of(name) / "vm.json").exists()
    finally:
        if case.user_vm:
            vm_down(name, env)


def test_ctrl_c_stops_every_lane_of_a_suite_and_each_keeps_its_bundle(kernel, env, tmp_path,
                                                                     vm_name) -> None:
    """A suite in two lanes (two VMs): one Ctrl-C stops both running experiments, each bundle
    keeps what its guest did, and both VMs the suite started are stopped."""
    root = tmp_path / "two"
    for name in ("longrun-a", "longrun-b"):
        experiment(root, name, "echo working; sleep 600")
    name = vm_name("lanes")
    run = Background(["run-experiment", "--all", "--kernel", "6.1", "--vm-name", name,
                      "--lanes", "2"], {**env, "KERNLAB_EXPERIMENTS": str(root)}, tmp_path)
    run.wait_for("run longrun-a in the guest")  # one of them with [lane 2] before it
    run.wait_for("run longrun-b in the guest")
    time.sleep(2.0)
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    code, _out, err = run.finish(timeout=60)
    took = time.monotonic() - sent
    TIMES["Ctrl-C to exit, a suite in two lanes"] = took

    assert code == 130 and "Traceback" not in err, err
    assert took < CTRL_C_LIMIT + MARGIN, f"exit {took:.1f}s after the signal\n{err}"
    for exp in ("longrun-a", "longrun-b"):
        (bundle,) = (Path(env["KERNLAB_RESULTS"]) / exp / "6.1").iterdir()
        result = json.loads((bundle / "result.json").read_text())
        assert (result["status"], result["reason"]) == ("FAIL", "interrupted"), exp
        assert "working" in (bundle / "steps" / "workload.log").read_text(), exp
        assert (bundle / "manifest.json").is_file() and (bundle / "console.log").is_file()
    assert not qemu_pids(name) and not qemu_pids(f"{name}-l2"), "the suite's VMs must be stopped"


def test_ctrl_c_in_vm_ssh_stops_the_guest_command(kernel, env, tmp_path, vm_name) -> None:
    name = vm_name("sshint")
    vm_up(name, env)
    try:
        ssh = Background(["vm.ssh", "--name", name, "-c", "echo started >&2; sleep 600"], env, tmp_path)
        ssh.wait_for("started")
        sent = time.monotonic()
        ssh.proc.send_signal(signal.SIGINT)
        code, _, err = ssh.finish(timeout=30)
        TIMES["Ctrl-C to exit, vm.ssh"] = time.monotonic() - sent
        assert code == 130 and last_line(err) == "kernlab: interrupted", err
        assert TIMES["Ctrl-C to exit, vm.ssh"] < CTRL_C_LIMIT + MARGIN
        assert guest_leftovers(name, env) == ""
    finally:
        vm_down(name, env)


# ---------------------------------------------------------------- the user's VM is not ours
def test_a_users_vm_with_another_kernel_is_refused_not_restarted(kernel, env, vm_name) -> None:
    other = ci_build("4.15")
    name = vm_name("theirs")
    pid = vm_up(name, env, kernel="4.15")
    try:
        done = cli("run-experiment", "longrun", "--kernel", "6.1", "--vm-name", name, env=env)
        assert done.returncode == 1
        line = one_error(done.stderr)
        assert f"VM {name} is running {other.id}" in line
        assert f"not {kernel.id}" in line
        assert f"stop it first: `invoke vm.down --name {name}`" in line
        assert qemu_pids(name) == [pid], "refused, and left running"
    finally:
        vm_down(name, env)


# ---------------------------------------------------------------- a VM that stops answering
def freeze(name: str) -> int:
    (pid,) = qemu_pids(name)
    os.kill(pid, signal.SIGSTOP)
    return pid


def kill_sshd(name: str, env: dict[str, str]) -> None:
    done = cli("vm.ssh", "--name", name, "-c", "pkill -x sshd", env=env)
    assert done.returncode == 1  # the command's own connection went with sshd
    assert "SSH is not answering" in one_error(done.stderr)


def panic(name: str, env: dict[str, str]) -> None:
    started = time.monotonic()
    done = cli("vm.ssh", "--name", name, "-c", guestpanic.shell_command(), env=env)
    TIMES["panic during vm.ssh to its error"] = time.monotonic() - started
    assert done.returncode == 1
    line = one_error(done.stderr)
    assert line.startswith("kernlab: error: guest kernel panic: Kernel panic - not syncing: "
                           "Attempted to kill init!"), line
    assert f"(VM {name}; console: " in line and "boot it again: `invoke vm.up --kernel 6.1-" in line


@dataclass
class VmFault:
    kind: str
    inject: str
    ssh_words: str  # in vm.ssh's (and vm.verify's) one error line
    status_words: str  # in vm.status's line for the VM


VM_FAULTS = [
    VmFault("sshd-killed", "kill_sshd", "SSH is not answering (127.0.0.1:",
            ": ssh not answering (127.0.0.1:"),
    VmFault("frozen", "freeze", "is frozen: QEMU (pid", ": frozen (QEMU (pid"),
    VmFault("panicked", "panic", "is not running: guest kernel panic: Kernel panic - not syncing: Attempted "
            "to kill init!", ": panicked (Kernel panic - not syncing: Attempted to kill init!"),
]


@pytest.mark.parametrize("fault", VM_FAULTS, ids=[f.kind for f in VM_FAULTS])
def test_a_vm_that_stops_answering_is_named_by_vm_ssh_verify_and_status(fault: VmFault, kernel, env,
                                                                        vm_name) -> None:
    name = vm_name(f"f-{fault.kind}")
    vm_up(name, env)
    try:
        if fault.inject == "freeze":
            freeze(name)
        elif fault.inject == "kill_sshd":
            kill_sshd(name, env)
        else:
            panic(name, env)
        for command in (["vm.ssh", "--name", name, "-c", "true"], ["vm.verify", "--name", name]):
            started = time.monotonic()
            done = cli(*command, env=env)
            took = time.monotonic() - started
            TIMES[f"{fault.kind}: {command[0]} to its error"] = took
            assert done.returncode == 1
            assert fault.ssh_words in one_error(done.stderr)
            assert took < DETECT_LIMIT + MARGIN
        started = time.monotonic()
        status = cli("vm.status", env=env)
        TIMES[f"{fault.kind}: vm.status"] = time.monotonic() - started
        assert status.returncode == 0 and "Traceback" not in status.stderr
        (row,) = [line for line in status.stdout.splitlines() if line.startswith(f"{name}:")]
        assert fault.status_words in row, status.stdout
        one = cli("vm.status", "--name", name, "--json", env=env)
        assert json.loads(one.stdout)[0]["state"] == fault.status_words.split(" (")[0].lstrip(": ")
    finally:
        vm_down(name, env)
        assert not qemu_pids(name)


def test_a_vm_frozen_mid_command_ends_vm_ssh_within_seconds(kernel, env, tmp_path, vm_name) -> None:
    name = vm_name("midfreeze")
    vm_up(name, env)
    try:
        ssh = Background(["vm.ssh", "--name", name, "-c", "echo started >&2; sleep 60"], env, tmp_path)
        ssh.wait_for("started")
        pid = freeze(name)
        frozen = time.monotonic()
        code, _, err = ssh.finish(timeout=60)
        TIMES["frozen mid vm.ssh to its error"] = time.monotonic() - frozen
        assert code == 1
        assert f"is frozen: QEMU (pid {pid}) is stopped" in one_error(err)
        assert TIMES["frozen mid vm.ssh to its error"] < DETECT_LIMIT
    finally:
        vm_down(name, env)


# ---------------------------------------------------------------- a VM lost during a run
@dataclass
class RunFault:
    kind: str
    experiment: str
    reason: str  # the bundle's reason starts with (or, after "...", holds) this


RUN_FAULTS = [
    RunFault("panic", "panics", "guest kernel panic: Kernel panic - not syncing: Attempted to kill init!"),
    RunFault("sshd-killed", "sshdies", "...SSH is not answering (127.0.0.1:"),
    RunFault("frozen", "longrun", "...is frozen: QEMU (pid"),
]


@pytest.mark.parametrize("fault", RUN_FAULTS, ids=[f.kind for f in RUN_FAULTS])
def test_a_vm_lost_mid_run_is_named_in_the_bundle(fault: RunFault, kernel, env, tmp_path, vm_name) -> None:
    name = vm_name(f"r-{fault.kind}")
    args = ["run-experiment", fault.experiment, "--kernel", "6.1", "--vm-name", name]
    run = Background(args, env, tmp_path)
    run.wait_for(f"> run {fault.experiment} in the guest")
    if fault.kind == "frozen":
        time.sleep(2)
        freeze(name)
    elif fault.kind == "panic":  # QEMU ends once the panicked guest's memory is dumped
        deadline = time.monotonic() + 120
        while qemu_pids(name):
            assert time.monotonic() < deadline, run.err()
            time.sleep(0.05)
    happened = time.monotonic() + (1.0 if fault.kind == "sshd-killed" else 0.0)  # its workload sleeps 1 s
    code, out, err = run.finish(timeout=90)
    took = time.monotonic() - happened
    TIMES[f"{fault.kind} mid-run to the run's end"] = took
    assert code == 1 and "Traceback" not in err, err
    result = json.loads((bundle_of(out) / "result.json").read_text())
    assert result["status"] == "FAIL"
    if fault.reason.startswith("..."):
        assert fault.reason[3:] in result["reason"], result["reason"]
    else:
        assert result["reason"].startswith(fault.reason), result["reason"]
    assert "SSH connection lost" not in result["reason"]
    assert f"reason: {result['reason']}" in out
    assert took < DETECT_LIMIT + MARGIN, f"{took:.1f}s"
    assert (bundle_of(out) / "console.log").is_file()
    assert not qemu_pids(name), "the VM this run started is stopped, frozen or not"
    if fault.kind == "panic":
        panicked_guest_dump_opens_in_crash(bundle_of(out))
    else:
        assert not (bundle_of(out) / "vmcore").exists(), "a vmcore only of a guest that panicked"


def panicked_guest_dump_opens_in_crash(bundle: Path) -> None:
    """The bundle keeps the panicked guest's memory (kdump-compressed) and says how to open
    it; Debian's crash, as the record says, finds the panic in the dump's own log buffer."""
    vmcore = bundle / "vmcore" / "vmcore.kdump"
    record = json.loads(vmcore.with_name("vmcore.kdump.json").read_text())
    assert record["format"] == "kdump-zlib" and vmcore.stat().st_size > 1 << 20, record
    assert json.loads((bundle / "result.json").read_text())["vmcore"] == "vmcore/vmcore.kdump"
    if not shutil.which("crash"):
        pytest.skip("Debian's crash is not installed (`apt-get install crash`)")
    argv = shlex.split(record["open"]["crash"])
    done = subprocess.run([argv[0], "-s", *argv[1:]], input="log\nquit\n", capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Kernel panic - not syncing: Attempted to kill init!" in done.stdout, done.stdout[-3000:]


# what the tests above cover, for tests/test_bad_input.py's count by kind
FAULTS = ([("signal", f"run-experiment-{case.id}") for case in INTERRUPTS]
          + [("signal", "vm.ssh-ctrl-c"), ("vm-reuse", "users-vm-with-another-kernel")]
          + [("vm-fault", f"{fault.kind}-{command}") for fault in VM_FAULTS
             for command in ("vm.ssh", "vm.verify", "vm.status")]
          + [("vm-fault", "sshd-killed-by-vm.ssh"), ("vm-fault", "panic-during-vm.ssh"),
             ("vm-fault", "frozen-mid-vm.ssh")]
          + [("run-fault", f"{fault.kind}-mid-run") for fault in RUN_FAULTS])
