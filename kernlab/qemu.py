"""QEMU for the lab guest: accelerator probe, command line, launch, QMP.

KVM is used only when a probe shows it works: a 512-byte boot sector that writes to
QEMU's isa-debug-exit port must make QEMU exit within 3 s, then the kernel to be
booted must reach its no-root-disk panic under KVM within 20 s. On hosts where
/dev/kvm exists but nested KVM crawls or hangs, a probe times out and kernlab uses
TCG with longer timeouts. The verdict is cached per host kernel and QEMU version.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths
from .errors import KernlabError
from .proc import capture, require_tool
from .report import reporter
from .util import atomic_write_json, read_json

QEMU = "qemu-system-x86_64"
QEMU_PACKAGE = "qemu-system-x86"
PROBE_LIMIT = 3.0  # a working KVM runs the probe sector in well under 1 s
KERNEL_PROBE_LIMIT = 20.0
PROBE_EXIT = (0x2A << 1) | 1  # isa-debug-exit turns the byte written into (v << 1) | 1
# mov al,0x2a; out 0xf4,al; cli; hlt; jmp $   then the boot signature
PROBE_SECTOR = bytes.fromhex("b02ae6f4faf4ebfe").ljust(510, b"\0") + b"\x55\xaa"
TIMEOUT_SCALE = {"kvm": 1.0, "tcg": 5.0}
PORT_TRIES = 8


def qemu_binary() -> str:
    return require_tool(QEMU, QEMU_PACKAGE)


def qemu_version() -> str:
    first = capture([QEMU, "--version"]).splitlines()
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
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]


def probe_cache() -> Path:
    return paths.state_dir() / "accel.json"


def choose_accel(kernel: Path | None = None, refresh: bool = False) -> Accel:
    """KVM if it works here (probed once, cached), else TCG with a one-line note.

    ``kernel`` lets the probe also boot a real kernel under KVM. ``KERNLAB_ACCEL=kvm|tcg``
    forces a choice.
    """
    forced = os.environ.get("KERNLAB_ACCEL", "").strip().lower()
    if forced in TIMEOUT_SCALE:
        return Accel(forced, f"forced by KERNLAB_ACCEL={forced}")
    if forced:
        raise KernlabError(f"KERNLAB_ACCEL={forced!r} is not kvm or tcg", "unset it or fix it")
    works, reason = kvm_verdict(kernel, refresh)
    if works:
        return Accel("kvm", reason)
    accel = Accel("tcg", reason)
    reporter().note(f"KVM unusable ({reason}): using TCG, timeouts x{accel.scale:.0f}"
                    f" (probe log: {paths.state_dir() / 'kvm-probe.log'})")
    return accel


def kvm_verdict(kernel: Path | None = None, refresh: bool = False) -> tuple[bool, str]:
    """(works, reason) from the cache, or from a fresh probe that is then cached."""
    host = {"kernel": platform.release(), "qemu": qemu_version(),
            "kvm_dev": os.path.exists("/dev/kvm")}
    cache = probe_cache()
    if not refresh and cache.is_file():
        with contextlib.suppress(ValueError, KeyError):
            cached = read_json(cache)
            if cached["host"] == host and (cached["kernel_probed"] or not cached["kvm"]
                                           or kernel is None):
                return bool(cached["kvm"]), cached["reason"]
    works, reason = probe_kvm()
    if works and kernel is not None:
        works, reason = probe_kvm_kernel(kernel)
    atomic_write_json(cache, {"host": host, "kvm": works, "reason": reason,
                              "kernel_probed": kernel is not None, "probed_at": time.time()})
    return works, reason


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


def probe_kvm_kernel(kernel: Path, limit: float = KERNEL_PROBE_LIMIT) -> tuple[bool, str]:
    """Boot ``kernel`` under KVM with no root disk: it must reach its panic within ``limit``."""
    argv = [qemu_binary(), "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "256",
            "-display", "none", "-nodefaults", "-no-user-config", "-no-reboot",
            "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 root=/dev/kernlab-probe-none"]
    code, out, seconds = _run_probe(argv, limit)
    if code is None:
        return False, f"a kernel under kvm did not reach its root-mount panic in {limit:.0f}s"
    if "Kernel panic" in out:
        return True, f"a kernel under kvm booted to its root-mount panic in {seconds:.1f}s"
    return False, f"a kernel under kvm stopped early (exit {code}; no panic line)"


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
            "-chardev", f"file,id=con0,path={self.console_log}",
            "-serial", "chardev:con0",
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off",
            "-pidfile", str(self.pidfile),
        ]


def make_overlay(base: Path, overlay: Path, log: Path) -> None:
    """A qcow2 copy-on-write overlay over the (never written) raw base image."""
    from .proc import run_logged

    qemu_img = require_tool("qemu-img", "qemu-utils")
    run_logged([qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, overlay],
               log, what="qemu-img create")


# ---------------------------------------------------------------- launch
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def candidate_ports(first: int | None) -> Iterator[int]:
    if first:
        yield first
    while True:
        yield free_port()


def launch(argv_for_port: Callable[[int], list[str]], qmp_socket: Path, log: Path,
           first_port: int | None = None, timeout: float = 30.0
           ) -> tuple[subprocess.Popen, int]:
    """Start QEMU, retrying on another port when the SSH forward's port is taken.

    Returns once QEMU answers on QMP (all devices and the forward are set up).
    """
    ports = candidate_ports(first_port)
    for _ in range(PORT_TRIES):
        port = next(ports)
        proc = _spawn(argv_for_port(port), log)
        try:
            if _wait_qmp(proc, qmp_socket, timeout):
                return proc, port
        except BaseException:  # Ctrl-C while QEMU starts: do not leave it behind
            kill(proc.pid)
            raise
        output = _log_tail(log)
        if "host forwarding" in output or "hostfwd" in output:
            reporter().note(f"port {port} on 127.0.0.1 is taken; trying another")
            continue
        raise KernlabError(f"QEMU failed to start (exit {proc.returncode}); log: {log}",
                           "see the log; check the kernel and image paths",
                           details=output)
    raise KernlabError(f"no free port for SSH after {PORT_TRIES} tries; log: {log}",
                       "free some ports on 127.0.0.1 or pass another port")


def _spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n# at {time.ctime()}\n")
        out.flush()
        # own session: a Ctrl-C in the terminal reaches kernlab, which stops QEMU itself
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


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


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- QMP and stopping
def qmp(sock_path: Path, command: str, timeout: float = 5.0, **arguments: Any) -> Any:
    """Run one QMP command and return its result (a new connection each time)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(sock_path))
        stream = sock.makefile("rwb")
        _qmp_read(stream)  # greeting
        for execute, args in (("qmp_capabilities", {}), (command, arguments)):
            message: dict[str, Any] = {"execute": execute}
            if args:
                message["arguments"] = args
            stream.write(json.dumps(message).encode() + b"\n")
            stream.flush()
            reply = _qmp_read(stream)
        if "error" in reply:
            raise KernlabError(f"QMP {command} failed: {reply['error'].get('desc')}")
        return reply.get("return")


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
