"""QEMU for the lab guest: accelerator probe, command line, launch, QMP.

KVM is used only when probes show it works *and is worth it*: a 512-byte boot sector
that writes to QEMU's isa-debug-exit port must make QEMU exit within 3 s under KVM;
then the kernel to be booted is booted to its no-root-disk panic twice, under TCG and
under KVM, and KVM must get there at least ``KVM_SPEEDUP`` times faster than TCG did.
A nested KVM that runs the boot sector but crawls through a kernel (it can finish the
sector in time by luck) is found out by the comparison, not by an absolute bound that
depends on how loaded the host is. Without a kernel only the sector is probed, and
that verdict is not used for a kernel boot: the first boot probes again with it.

The verdict is cached per host kernel and QEMU version (``<state>/accel.json``); each
decision and its evidence (every probe's time and outcome) are appended to
``<state>/kvm-verdict.log``, each probe's command line and output to ``kvm-probe.log``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.proc import capture, require_tool, run_logged
from kernlab.core.progress import reporter
from kernlab.core.util import atomic_write_json, read_json

QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
PROBE_LIMIT = 3.0  # a working KVM runs the probe sector in well under 1 s
KERNEL_PROBE_LIMIT = 180.0  # TCG booting the kernel to its root-mount panic (~4 s unloaded)
KVM_SPEEDUP = 2.0  # KVM must boot the kernel this many times faster than TCG (a good one: 5-20x)
PROBE_EXIT = (0x2A << 1) | 1  # isa-debug-exit turns the byte written into (v << 1) | 1
# mov al,0x2a; out 0xf4,al; cli; hlt; jmp $   then the boot signature
PROBE_SECTOR = bytes.fromhex("b02ae6f4faf4ebfe").ljust(510, b"\0") + b"\x55\xaa"
TIMEOUT_SCALE = {"kvm": 1.0, "tcg": 5.0}
PORT_TRIES = 8


def qemu_binary() -> str:
    return require_tool(QEMU, QEMU_PACKAGE)


def qemu_version() -> str:
    """QEMU's version line (asked once per binary: the binary's path, size and mtime)."""
    binary = Path(qemu_binary())
    stat = binary.stat()
    return _version_of(str(binary), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _version_of(binary: str, _size: int, _mtime: int) -> str:
    first = capture([binary, "--version"]).splitlines()
    return first[0] if first else "unknown"


# ---------------------------------------------------------------- accelerator
@dataclass
class Accel:
    """The accelerator chosen for this host, and why."""

    name: str  # "kvm" or "tcg"
    reason: str

    @property
    def scale(self) -> float:
        return TIMEOUT_SCALE[self.name]

    def args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        return ["-accel", f"tcg,thread={tcg_threads()}", "-cpu", "max"]


def tcg_threads() -> str:
    """TCG's vCPU threading: ``single`` (one host thread runs the guest's vCPUs in turn), or
    ``multi`` (a thread per vCPU) when KERNLAB_TCG_THREADS says so.

    Single by default. Under QEMU 7.2's multi-threaded TCG a restored 6.12 guest once died
    of ``Oops: int3`` in __schedule: one vCPU ran a stale translation of code another had
    just re-patched (text_poke_bp, as every tracepoint or static key switch does). One
    thread cannot race itself, and the suite in three lanes on two cores was as fast
    (bench/README.md: 6.12 100 s against 113 s, 6.1 152 s against 135 s, one run each).
    """
    chosen = os.environ.get("KERNLAB_TCG_THREADS", "").strip().lower() or "single"
    if chosen not in ("multi", "single"):
        raise KernlabError(f"KERNLAB_TCG_THREADS={chosen!r} is not multi or single",
                           "unset it or set it to multi or single")
    return chosen


def probe_cache() -> Path:
    return paths.state_dir() / "accel.json"


def choose_accel(kernel: Path | None = None, refresh: bool = False) -> Accel:
    """KVM if it works here (probed once, cached), else TCG with a one-line note.

    ``kernel`` lets the probe also boot a real kernel under KVM. ``KERNLAB_ACCEL=kvm|tcg``
    forces a choice.
    """
    forced = forced_accel()
    if forced:
        return Accel(forced, f"forced by KERNLAB_ACCEL={forced}")
    works, reason = kvm_verdict(kernel, refresh)
    if works:
        return Accel("kvm", reason)
    accel = Accel("tcg", reason)
    reporter().note(f"KVM unusable ({reason}): using TCG, timeouts x{accel.scale:.0f}"
                    f" (evidence: {verdict_log()})")
    return accel


def verdict_log() -> Path:
    return paths.state_dir() / "kvm-verdict.log"


def forced_accel() -> str | None:
    """``KERNLAB_ACCEL`` (kvm or tcg) if set; a one-line error for anything else.

    Commands that boot call it first, so a typo fails before any kernel or image is built
    (KERNLAB_TCG_THREADS's too).
    """
    tcg_threads()
    forced = os.environ.get("KERNLAB_ACCEL", "").strip().lower()
    if forced and forced not in TIMEOUT_SCALE:
        raise KernlabError(f"KERNLAB_ACCEL={forced!r} is not kvm or tcg", "unset it or set it to kvm or tcg")
    return forced or None


def kvm_verdict(kernel: Path | None = None, refresh: bool = False) -> tuple[bool, str]:
    """(works, reason) from the cache, or from fresh probes that are then cached and logged."""
    host = {"kernel": platform.release(), "qemu": qemu_version(),
            "kvm_dev": os.path.exists("/dev/kvm")}
    cache = probe_cache()
    if not refresh and cache.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            cached = read_json(cache)
            if cached["host"] == host and (cached["kernel_probed"] or not cached["kvm"]
                                           or kernel is None):
                return bool(cached["kvm"]), cached["reason"]
    evidence: list[str] = []
    works, reason = probe_kvm()
    evidence.append(f"boot sector under kvm (limit {PROBE_LIMIT:.0f}s): {reason}")
    if works and kernel is not None:
        works, reason = compare_kernel_boot(kernel, evidence)
    _log_verdict(host, kernel, works, reason, evidence)
    atomic_write_json(cache, {"host": host, "kvm": works, "reason": reason, "evidence": evidence,
                              "kernel_probed": kernel is not None, "probed_at": time.time()})
    return works, reason


def _log_verdict(host: dict, kernel: Path | None, works: bool, reason: str,
                 evidence: list[str]) -> None:
    log = verdict_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{time.strftime('%Y-%m-%d %H:%M:%S')} verdict: {'kvm' if works else 'tcg'} ({reason})",
             f"  host kernel {host['kernel']}, {host['qemu']}, /dev/kvm "
             f"{'present' if host['kvm_dev'] else 'absent'}; probed with kernel {kernel or '(none)'}",
             *(f"  evidence: {line}" for line in evidence)]
    with open(log, "a") as handle:
        handle.write("\n".join(lines) + "\n")


def compare_kernel_boot(kernel: Path, evidence: list[str]) -> tuple[bool, str]:
    """Boot ``kernel`` to its root-mount panic under TCG, then under KVM with the time TCG
    took divided by KVM_SPEEDUP as the limit; KVM is worth using only if it gets there."""
    tcg = probe_kernel_boot(kernel, "tcg", KERNEL_PROBE_LIMIT)
    evidence.append(f"kernel under tcg (limit {KERNEL_PROBE_LIMIT:.0f}s): {_shown(tcg)}")
    if tcg is None:
        return False, ("the kernel did not reach its root-mount panic under TCG, so KVM cannot be "
                       "compared with it; using TCG")
    limit = max(tcg / KVM_SPEEDUP, 0.5)
    kvm = probe_kernel_boot(kernel, "kvm", limit)
    evidence.append(f"kernel under kvm (limit {limit:.1f}s = tcg / {KVM_SPEEDUP:g}): {_shown(kvm)}")
    return judge(tcg, kvm, limit)


def judge(tcg_seconds: float, kvm_seconds: float | None, limit: float) -> tuple[bool, str]:
    """The verdict from the two kernel boots: KVM must have beaten ``limit`` (tcg / speedup)."""
    if kvm_seconds is None or kvm_seconds > limit:
        took = "did not get there" if kvm_seconds is None else f"took {kvm_seconds:.1f}s"
        return False, (f"a kernel under kvm {took} within {limit:.1f}s, while TCG booted it in "
                       f"{tcg_seconds:.1f}s: KVM crawls here")
    return True, (f"a kernel under kvm booted to its root-mount panic in {kvm_seconds:.1f}s, "
                  f"{tcg_seconds / max(kvm_seconds, 0.01):.1f}x faster than TCG ({tcg_seconds:.1f}s)")


def _shown(seconds: float | None) -> str:
    return "no root-mount panic in time" if seconds is None else f"root-mount panic after {seconds:.1f}s"


def probe_kvm(limit: float = PROBE_LIMIT, accel: str = "kvm") -> tuple[bool, str]:
    """Boot a one-sector guest that exits through isa-debug-exit; (works, reason).

    It must finish within ``limit`` seconds: a working KVM needs well under one; a
    nested KVM without hardware support may finish it, but crawls (or hangs) on a kernel.
    """
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    with tempfile.TemporaryDirectory(prefix="kernlab-kvm-probe-") as tmp:
        disk = Path(tmp) / "probe.img"
        disk.write_bytes(PROBE_SECTOR)
        argv = [qemu_binary(), "-accel", accel, "-machine", "pc", "-m", "16",
                "-display", "none", "-nodefaults", "-no-user-config", "-no-reboot",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-drive", f"file={disk},format=raw,if=ide"]
        code, out, seconds = _run_probe(argv, limit)
    if code is None:
        return False, f"a {accel} test guest did not finish in {limit:.0f}s"
    if code == PROBE_EXIT:
        return True, f"a {accel} test guest ran in {seconds:.1f}s"
    text = out.strip().splitlines()
    return False, f"{accel} test guest failed: {text[-1] if text else code}"


def probe_kernel_boot(kernel: Path, accel: str, limit: float) -> float | None:
    """Seconds ``kernel`` takes under ``accel`` (no root disk) to reach its panic; None if not
    within ``limit`` or if it stopped without one."""
    cpu = ["-cpu", "host"] if accel == "kvm" else ["-cpu", "max"]
    argv = [qemu_binary(), "-accel", accel, *cpu, "-machine", "pc", "-m", "256",
            "-display", "none", "-nodefaults", "-no-user-config", "-no-reboot",
            "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 root=/dev/kernlab-probe-none"]
    code, out, seconds = _run_probe(argv, limit)
    if code is None or "Kernel panic" not in out:
        return None
    return seconds


def _run_probe(argv: list[str], limit: float) -> tuple[int | None, str, float]:
    """(exit code or None on timeout, output, seconds); a timed-out QEMU is killed.

    Every probe's command line and output are appended to ``<state>/kvm-probe.log``.
    """
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        kill(proc.pid)
        out = proc.communicate()[0] + f"(killed after {limit:.0f}s)\n".encode()
        timed_out = True
    text = out.decode(errors="replace")
    log = paths.state_dir() / "kvm-probe.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(argv)}\n# at {time.ctime()}\n{text}# exit {proc.returncode}\n")
    if timed_out:
        return None, text, limit
    return proc.returncode, text, time.monotonic() - started


# ---------------------------------------------------------------- command line
@dataclass
class QemuSpec:
    """What a lab guest boots: kernel, disk, console, sockets, memory, CPUs."""

    kernel: Path
    disk: Path
    console_log: Path
    qmp_socket: Path
    pidfile: Path
    cmdline: str
    accel: Accel
    memory: str = "2G"
    cpus: int = 2
    name: str = "kernlab"
    kheaders: Path | None = None  # the kernel headers image, attached read-only (vdb)
    gdb_port: int | None = None  # QEMU's gdbstub on 127.0.0.1:gdb_port (kernlab.guest.gdb)

    def argv(self, port: int) -> list[str]:
        """The full QEMU command line with SSH forwarded from 127.0.0.1:``port``."""
        headers = (["-drive", f"file={self.kheaders},if=virtio,format=raw,readonly=on"]
                   if self.kheaders else [])
        return [
            qemu_binary(), "-name", f"{self.name},process={self.name}",
            "-machine", "pc", *self.accel.args(), "-smp", str(self.cpus), "-m", self.memory,
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(self.kernel), "-append", self.cmdline,
            "-drive", f"file={self.disk},if=virtio,format=qcow2,discard=unmap", *headers,
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
            "-chardev", f"file,id=con0,path={self.console_log},append=on",
            "-serial", "chardev:con0",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-pidfile", str(self.pidfile),
            *(["-gdb", f"tcp:127.0.0.1:{self.gdb_port}"] if self.gdb_port else []),
        ]


def make_overlay(base: Path, overlay: Path, log: Path) -> None:
    """A qcow2 copy-on-write overlay over the (never written) raw base image."""
    qemu_img = require_tool("qemu-img", "qemu-utils")
    run_logged([qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, overlay],
               log, what="qemu-img create")


# ---------------------------------------------------------------- launch
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gdb_attached(port: int) -> bool:
    """A debugger is connected to the gdbstub on 127.0.0.1:``port``: an established TCP
    connection whose local end is the stub's (/proc/net/tcp; QEMU pauses the guest on it)."""
    local = f"0100007F:{port:04X}"
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(len(f) > 3 and f[1] == local and f[3] == "01" for f in (row.split() for row in rows))


def candidate_ports(first: int | None) -> Iterator[int]:
    if first:
        yield first
    while True:
        yield free_port()


def launch(argv_for_port: Callable[[int], list[str]], qmp_socket: Path, log: Path,
           first_port: int | None = None, timeout: float = 30.0
           ) -> tuple[subprocess.Popen, int]:
    """Start QEMU, retrying on another port only when the SSH forward's port is taken.

    Returns once QEMU answers on QMP (all devices and the forward are set up). Any other
    start failure is reported with QEMU's own error line.
    """
    ports = candidate_ports(first_port)
    for _ in range(PORT_TRIES):
        port = next(ports)
        proc, offset = _spawn(argv_for_port(port), log)
        try:
            if _wait_qmp(proc, qmp_socket, timeout):
                return proc, port
        except BaseException:  # Ctrl-C while QEMU starts: do not leave it behind
            kill(proc.pid)
            raise
        output = _output_since(log, offset)  # QEMU's words only, not its logged command line
        if port_taken(output, port):
            reporter().note(f"port {port} on 127.0.0.1 is taken; trying another")
            continue
        raise start_failure(output, proc.returncode, log)
    raise KernlabError(f"no free port for SSH after {PORT_TRIES} tries; log: {log}",
                       "free some ports on 127.0.0.1, then run the command again")


def port_taken(output: str, port: int) -> bool:
    """QEMU's own message that the SSH forward's host port is in use (and nothing else)."""
    return re.search(rf"Could not set up host forwarding rule '[^']*:{port}-", output) is not None


def qemu_error_line(output: str) -> str:
    """QEMU's first error line (``qemu-system-x86_64: ...``), without the program name."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(f"{QEMU}:") or line.startswith("qemu-system-"):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else ""


def start_failure(output: str, code: int | None, log: Path) -> KernlabError:
    """The one-line error for a QEMU that exited while starting: its own words, a fitting fix."""
    said = qemu_error_line(output) or f"exit {code}, no message"
    text = said.lower()
    if "memory" in text or "cannot allocate" in text:
        fix = "free memory on this host, or give the guest less (vm.up --memory, e.g. 2G)"
    elif "kvm" in text:
        fix = "use TCG: set KERNLAB_ACCEL=tcg"
    elif "could not open" in text or "no such file" in text:
        fix = "rebuild what it names: `invoke build-kernel` or `invoke build-image`"
    elif "cpus" in text or "smp" in text:
        fix = "give the guest fewer CPUs (vm.up --cpus, e.g. 2)"
    else:
        fix = "read QEMU's message; the full log is named above"
    return KernlabError(f"QEMU failed to start: {said} (exit {code}); log: {log}", fix, details=output)


def _spawn(argv: list[str], log: Path) -> tuple[subprocess.Popen, int]:
    """Start QEMU with its output appended to ``log``; (process, where its output begins)."""
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n# at {time.ctime()}\n")
        out.flush()
        offset = out.tell()
        # own session: a Ctrl-C in the terminal reaches kernlab, which stops QEMU itself
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True), offset


def _wait_qmp(proc: subprocess.Popen, qmp_socket: Path, timeout: float) -> bool:
    """True once QEMU answers ``query-status``; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError, ValueError, KernlabError):
            qmp(qmp_socket, "query-status", timeout=2.0)
            return True
        time.sleep(0.05)
    kill(proc.pid)
    raise KernlabError(f"QEMU did not answer on {qmp_socket} within {timeout:.0f}s",
                       "see the QEMU log")


def _output_since(log: Path, offset: int, lines: int = 20) -> str:
    """The last ``lines`` lines QEMU wrote to ``log`` after ``offset``."""
    try:
        with open(log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- QMP and stopping
class Qmp:
    """One QMP connection (greeting read, capabilities negotiated), for several commands."""

    def __init__(self, sock_path: Path, timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(str(sock_path))
            self.stream = self.sock.makefile("rwb")
            _qmp_read(self.stream)  # greeting
            self.execute("qmp_capabilities")
        except BaseException:
            self.sock.close()
            raise

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run ``command``; its result, or a KernlabError with QEMU's description."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.stream.write(json.dumps(message).encode() + b"\n")
        self.stream.flush()
        reply = _qmp_read(self.stream)
        if "error" in reply:
            raise KernlabError(f"QMP {command} failed: {reply['error'].get('desc')}")
        return reply.get("return")

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(OSError):
            self.stream.close()
        self.sock.close()


def qmp(sock_path: Path, command: str, timeout: float = 5.0, **arguments: Any) -> Any:
    """Run one QMP command and return its result (a new connection each time)."""
    with Qmp(sock_path, timeout) as monitor:
        return monitor.execute(command, **arguments)


def _qmp_read(stream: Any) -> dict[str, Any]:
    """The next reply or greeting, skipping asynchronous events."""
    while True:
        line = stream.readline()
        if not line:
            raise ValueError("QMP connection closed")
        message = json.loads(line)
        if "event" not in message:
            return message


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (reaping it first if it is our own exited child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def kill(pid: int, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; waits until ``pid`` is gone."""
    import signal

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)
