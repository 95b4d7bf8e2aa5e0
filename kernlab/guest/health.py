"""Is a lab VM usable, and if not, why: frozen, panicked, SSH not answering, or gone.

Every answer comes from the host side within seconds, whatever the guest does:

- QEMU's process: gone (its exit), or stopped (state ``T`` in /proc: SIGSTOP, a debugger);
- QMP ``query-status``: the guest paused (``stop``) or panicked (``guest-panicked``); paused
  with a debugger on its gdbstub (``vm.up --gdb``, ``run-experiment --gdb``) it is stopped
  in the debugger, which is no fault: its silence then is not either;
- the serial console log: the ``Kernel panic - not syncing: ...`` line (with the lab
  command line's ``panic=-1`` and QEMU's ``-no-reboot``, QEMU exits right after it);
- the SSH port: the guest's sshd must send its banner within ``BANNER_TIMEOUT``;
  with sshd dead, QEMU's forwarder closes the connection at once.

``state(vm)`` puts these together (`vm.status`, and before `vm.ssh`, `vm.verify` and a
run use a VM); ``Watch`` re-checks the cheap ones about once a second while a guest
command runs, so a VM that freezes or panics mid-command ends it within seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kernlab.core.errors import KernlabError
from kernlab.core.util import atomic_write_json, read_json
from kernlab.guest import qemu

RUNNING, FROZEN, PANICKED, SSH_DOWN, GONE = "running", "frozen", "panicked", "ssh not answering", "stopped"
DEBUGGER = "stopped in the debugger"  # paused by gdb on the VM's stub: ok, and silent meanwhile
DEBUG_STATUSES = ("debug", "paused")  # QMP: at a breakpoint or step; on the debugger's attach
PANIC_LINE = re.compile(r"Kernel panic - not syncing:.*")
BANNER_TIMEOUT = 6.0  # a live sshd answers in well under a second, even under TCG
QMP_TIMEOUT = 2.0
WATCH_EVERY = 1.0  # seconds between a running command's checks
PING_AFTER = 5.0  # a silent command's SSH connection is pinged after this many seconds
PING_TIMEOUT = 8.0
DEATH_NOTE = "last-exit.json"


class Vm(Protocol):
    """What the checks need of a guest (``kernlab.guest.vm.Vm`` is one)."""

    name: str
    ssh_port: int
    console_log: Path
    run_dir: Path
    record: dict[str, Any]

    @property
    def pid(self) -> int: ...

    def alive(self) -> bool: ...


@dataclass
class Health:
    """What is wrong with a VM (``state``), in a phrase (``detail``); ok when running."""

    state: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in (RUNNING, DEBUGGER)

    def shown(self) -> str:
        """``frozen (QEMU pid 12 is stopped)``: for `vm.status`."""
        return f"{self.state} ({self.detail})" if self.detail else self.state


class GuestDown(KernlabError):
    """A VM that cannot run commands any more: frozen, panicked, gone or SSH not answering."""

    def __init__(self, vm: Vm, health: Health) -> None:
        self.health = health
        self.vm = vm
        tail = console_tail(vm) if health.state in (PANICKED, GONE) else ""  # how the guest ended
        super().__init__(cause_of(vm, health), fix_for(vm, health), details=tail)

    def in_bundle(self) -> str:
        """A run's reason: the fault, pointing at the bundle's copy of the console log."""
        return cause_of(self.vm, self.health, "console.log in the bundle")


def cause_of(vm: Vm, health: Health, console: str = "") -> str:
    """The error's cause: which fault, the panic line when there is one, and the console log
    (``console``: where it is, by default the VM's own)."""
    where = f"VM {vm.name}"
    console = console or f"console: {vm.console_log}"
    if health.state == PANICKED:
        return f"guest kernel panic: {health.detail} ({where}; {console})"
    if health.state == FROZEN:
        return f"{where} is frozen: {health.detail}"
    if health.state == SSH_DOWN:
        return f"{where}: SSH is not answering ({health.detail}); {console}"
    return f"{where} is not running: {health.detail}; {console}"


def fix_for(vm: Vm, health: Health) -> str:
    """What to do: resume a stopped QEMU, or stop and boot the VM again."""
    up = f"`invoke vm.up --kernel {vm.info.build_id} --name {vm.name}`"
    if health.state in (PANICKED, GONE):
        return f"boot it again: {up}"
    if health.state == FROZEN and "stopped" in health.detail:
        return f"resume it with `kill -CONT {vm.pid}`, or stop it: `invoke vm.down --name {vm.name}`"
    return f"stop it: `invoke vm.down --name {vm.name}`, then {up}"


# ---------------------------------------------------------------- the checks
def process_stopped(pid: int) -> bool:
    """True if ``pid`` is stopped (SIGSTOP, SIGTSTP, a tracer): it runs no guest code."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] in ("T", "t")


def panic_line(console_log: Path, offset: int = 0) -> str | None:
    """The first ``Kernel panic - not syncing: ...`` line in the console log (after ``offset``)."""
    try:
        with open(console_log, "rb") as con:
            con.seek(offset)
            text = con.read().decode(errors="replace")
    except OSError:
        return None
    match = PANIC_LINE.search(text)
    return match.group(0).strip() if match else None


def qmp_status(vm: Vm, timeout: float = QMP_TIMEOUT) -> str | None:
    """QMP's ``query-status`` status (``running``, ``paused``, ``guest-panicked``...); None: no answer."""
    with contextlib.suppress(OSError, ValueError, KernlabError):
        reply = qemu.qmp(vm.info.qmp_socket, "query-status", timeout=timeout)
        return str(reply.get("status")) if isinstance(reply, dict) else None
    return None


def ssh_banner(vm: Vm, timeout: float = BANNER_TIMEOUT) -> str | None:
    """None if the guest's sshd sends its banner within ``timeout``; else what happened."""
    started = time.monotonic()
    try:
        with socket.create_connection((vm.info.host, vm.ssh_port),
                                      timeout=timeout) as sock:
            sock.settimeout(max(0.1, timeout - (time.monotonic() - started)))
            data = sock.recv(64)
    except TimeoutError:
        return f"no SSH banner from 127.0.0.1:{vm.ssh_port} within {timeout:.0f}s"
    except OSError as error:
        return f"127.0.0.1:{vm.ssh_port}: {error.strerror or error}"
    if data.startswith(b"SSH-"):
        return None
    if not data:
        return (f"127.0.0.1:{vm.ssh_port} closed the connection before the SSH banner: "
                "the guest runs, but no sshd answers on its port 22")
    return f"127.0.0.1:{vm.ssh_port} answered {data[:20]!r}, not an SSH banner"


def exited(vm: Vm) -> Health:
    """Why QEMU is gone: the guest's panic line, or QEMU's own last words."""
    line = panic_line(vm.console_log)
    if line:
        return Health(PANICKED, line)
    if ended := how_it_ended(vm):
        return Health(GONE, f"{ended}; QEMU (pid {vm.pid}) exited")
    if by := stopped_by(vm):
        return Health(GONE, f"stopped by another command while in use: `{by['command']}` (pid "
                            f"{by['pid']}) quit its QEMU (pid {vm.pid})")
    said = ""
    with contextlib.suppress(OSError):
        text = vm.info.qemu_log.read_text(errors="replace")
        last = text.rfind("\n$ ")  # this QEMU's words: after the command line that started it
        lines = [x for x in text[last + 1 if last >= 0 else 0:].splitlines()
                 if x.strip() and not x.startswith(("$ ", "# "))]
        said = f": {lines[-1].strip()}" if lines else ""
    return Health(GONE, f"QEMU (pid {vm.pid}) exited{said}")


def how_it_ended(vm: Vm) -> str | None:
    """The guest's own shutdown or reboot, from its console's last lines; None if neither."""
    tail = console_tail_text(vm.console_log)
    for words, what in (("reboot: Power down", "the guest powered off"),
                        ("reboot: Restarting system", "the guest rebooted (QEMU runs with -no-reboot)")):
        if words in tail:
            return f"{what} ({words})"
    return None


STOPPED_BY = "stopped-by.json"


def note_stop(vm: Vm, command: str) -> None:
    """Before a kernlab command quits ``vm``'s QEMU: who did, so a run using it says so."""
    with contextlib.suppress(OSError):
        atomic_write_json(vm.run_dir / STOPPED_BY, {"qemu_pid": vm.pid, "command": command,
                                                    "pid": os.getpid(), "at": time.time()})


def stopped_by(vm: Vm) -> dict[str, Any] | None:
    """The command that quit this QEMU (``note_stop``), if one did; None otherwise."""
    try:
        note = read_json(vm.run_dir / STOPPED_BY)
    except (OSError, ValueError):
        return None
    if isinstance(note, dict) and note.get("qemu_pid") == vm.pid and "command" in note:
        return note
    return None


def quick_state(vm: Vm, console_offset: int = 0, qmp: bool = True) -> Health:
    """Everything but SSH: process, QMP, console (each a few milliseconds, QMP up to 2 s)."""
    if not vm.alive():
        return exited(vm)
    if process_stopped(vm.pid):
        return Health(FROZEN, f"QEMU (pid {vm.pid}) is stopped (SIGSTOP or a debugger), so the guest "
                              "does not run")
    line = panic_line(vm.console_log, console_offset)
    if line:
        return Health(PANICKED, line)
    if qmp:
        status = qmp_status(vm)
        if status == "guest-panicked":
            return Health(PANICKED, "QEMU reports guest-panicked")
        if status == "shutdown":  # a run's own VM pauses there (kernlab.guest.dump.hold_after_shutdown)
            return Health(GONE, f"{how_it_ended(vm) or 'the guest shut down'}; QEMU (pid {vm.pid}) "
                                "holds it paused")
        if status in DEBUG_STATUSES and (port := in_debugger(vm)):
            return Health(DEBUGGER, f"gdb on 127.0.0.1:{port}")
        if status is not None and status != "running":
            return Health(FROZEN, f"QEMU reports the guest {status} (QMP query-status)")
    return Health(RUNNING)


def in_debugger(vm: Vm) -> int | None:
    """The VM's gdbstub port when a debugger is attached to it (None: no stub or no debugger)."""
    port = vm.info.data.get("gdb_port")
    return int(port) if port and qemu.gdb_attached(int(port)) else None


def state(vm: Vm, ssh: bool = True) -> Health:
    """The VM's state for `vm.status` and before use; at most about 8 s (QMP, then the banner)."""
    health = quick_state(vm)
    if health.state == RUNNING and ssh and (problem := ssh_banner(vm)):
        again = quick_state(vm, qmp=False)  # it may have died while we waited for the banner
        return again if not again.ok else Health(SSH_DOWN, problem)
    return health


def require(vm: Vm) -> None:
    """Raise GuestDown unless ``vm`` runs and its SSH answers."""
    health = state(vm)
    if not health.ok:
        raise GuestDown(vm, health)


# ---------------------------------------------------------------- while a command runs
class Watch:
    """Checks a VM about once a second while a guest command runs over ``transport``.

    ``check()`` returns a GuestDown when the VM froze, panicked or died, or when its SSH
    connection has been silent for a while and a ping (a channel open) gets no answer.
    """

    def __init__(self, vm: Vm, transport: Any) -> None:
        self.vm = vm
        self.transport = transport
        self.offset = console_size(vm)
        self.next_check = 0.0
        self.next_qmp = time.monotonic() + 2.0
        self.debugging = False  # QMP's last word: stopped in the debugger (no SSH ping then)

    def check(self, silent_for: float) -> GuestDown | None:
        now = time.monotonic()
        if now < self.next_check:
            return None
        self.next_check = now + WATCH_EVERY
        use_qmp = now >= self.next_qmp
        if use_qmp:
            self.next_qmp = now + 3.0
        health = quick_state(self.vm, self.offset, qmp=use_qmp)
        if use_qmp:
            self.debugging = health.state == DEBUGGER
        if health.state == RUNNING and not self.debugging and silent_for > PING_AFTER and not self._ping():
            health = quick_state(self.vm, self.offset, qmp=False)
            if health.ok and (problem := ssh_banner(self.vm)):  # slow, or really gone?
                health = Health(SSH_DOWN, f"the SSH connection got no answer within {PING_TIMEOUT:.0f}s "
                                          f"and {problem}")
        return None if health.ok else GuestDown(self.vm, health)

    def _ping(self) -> bool:
        """True if the guest's sshd opens (and we close) a channel within PING_TIMEOUT."""
        try:
            channel = self.transport.open_session(timeout=PING_TIMEOUT)
        except Exception:  # paramiko raises SSHException or EOFError; either means no answer
            return False
        channel.close()
        self.next_check = time.monotonic() + PING_AFTER
        return True

    def explain(self) -> GuestDown | None:
        """After the connection dropped: the VM's fault, if it has one (SSH included)."""
        health = state(self.vm)
        return None if health.ok else GuestDown(self.vm, health)


def console_tail(vm: Vm, lines: int = 30) -> str:
    """The console log's last ``lines`` lines ('' if unreadable)."""
    try:
        text = vm.console_log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def console_tail_text(console_log: Path, size: int = 4096) -> str:
    """The last ``size`` bytes of a console log ('' if unreadable)."""
    try:
        with open(console_log, "rb") as con:
            con.seek(max(0, con.seek(0, 2) - size))
            return con.read().decode(errors="replace")
    except OSError:
        return ""


def console_size(vm: Vm) -> int:
    try:
        return vm.console_log.stat().st_size
    except OSError:
        return 0


# ---------------------------------------------------------------- after QEMU is gone
def write_death_note(vm: Vm) -> Health:
    """Record why VM ``vm`` (its QEMU gone) stopped, in its run dir; returns that."""
    health = exited(vm)
    with contextlib.suppress(OSError):
        atomic_write_json(vm.run_dir / DEATH_NOTE, {"state": health.state, "detail": health.detail,
                                                    "kernel": vm.info.build_id, "at": time.time(),
                                                    "console_log": str(vm.console_log)})
    return health


def death_note(run_dir: Path) -> dict[str, Any] | None:
    """What ``write_death_note`` recorded for the VM in ``run_dir`` (None: nothing)."""
    try:
        note = read_json(run_dir / DEATH_NOTE)
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and "state" in note else None
