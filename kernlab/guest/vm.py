"""Lab VMs: boot a built kernel on the lab image, wait for SSH, find, stop, clean up.

Each VM has a run directory ``<KERNLAB_STATE>/vms/<name>/`` holding ``vm.json``
(pid, port, keys, kernel, image, accel), the serial console log, QEMU's own log,
the QMP socket and a qcow2 overlay over the image (the base image never changes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from kernlab.core import filelock, paths
from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord, ImageRecord, VmRecord
from kernlab.core.util import atomic_write_json
from kernlab.guest import dump, gdb, health, qemu, remote, snapshot, splats
from kernlab.guest.health import console_tail
from kernlab.kernel import kheaders

CMDLINE = "console=ttyS0 root=/dev/vda rw init=/sbin/kernlab-init panic=-1 quiet"
# Under TCG, ACPI PCI interrupt links and the PS/2 probes cost ~1.5 s of a 3.8 s kernel
# boot; the lab guest needs neither (acpi=off would also lose the second CPU).
FAST_BOOT = "pci=noacpi i8042.noaux i8042.nokbd"
READY_LINE = "KERNLAB-READY"
HEADERS_FAILED = "kernel headers disk not mounted"  # vm/init's line when the mount fails
READY_TIMEOUT = 30.0  # seconds under KVM; scaled for TCG
ANSWER_TIMEOUT = 20.0  # seconds for a running VM's SSH handshake before health names the fault
RESTORE_TIMEOUT = 4.0  # seconds under KVM (scaled for TCG) for a restored guest's SSH
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
PANIC_RE = re.compile(r"(Kernel panic - not syncing:.*|BUG:.*|Oops:.*)")


class Vm:
    """A running guest, backed by its run dir."""

    def __init__(self, run_dir: Path, info: VmRecord) -> None:
        self.run_dir = run_dir
        self.info = info  # vm.json: replaced (records are frozen) as the boot adds to it
        self.name = info.name
        self.ssh_port = info.ssh_port
        self.console_log = info.console_log
        self.conn: Any = None  # the open fabric Connection, reused by remote.connect
        self._proc: Any = None  # the Popen when this process started QEMU

    @property
    def pid(self) -> int:
        return self.info.pid

    def note(self, **fields: Any) -> None:
        """Add ``fields`` to the VM's record (written by ``save``)."""
        self.info = self.info.with_fields(**fields)

    def save(self) -> None:
        """Write the record to vm.json (the one writer; ``find_vm`` the one reader)."""
        atomic_write_json(self.run_dir / "vm.json", self.info.to_json())

    def alive(self) -> bool:
        """QEMU still runs (and the pid is still our QEMU, not a reused pid)."""
        if self._proc is not None and self._proc.poll() is not None:
            return False
        marker = f"process=kernlab-{self.name} "
        return qemu.pid_alive(self.pid) and marker in qemu.cmdline_of(self.pid) + " "

    def stop(self) -> None:
        """Quit QEMU (QMP, then signals), drop the overlay; keep the logs."""
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
        if self.alive():
            health.note_stop(self, _this_command())
            if health.process_stopped(self.pid):  # frozen: let it take QMP quit and SIGTERM
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGCONT)
            with contextlib.suppress(OSError, ValueError, KernlabError):
                qemu.qmp(self.info.qmp_socket, "quit", timeout=3.0)
            qemu.kill(self.pid, grace=5.0)
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=5)
        _forget(self.run_dir)


def _this_command() -> str:
    """This process's command line as the user typed it (``invoke vm.down --name x``)."""
    words = [Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]]
    return " ".join(["invoke", *words[1:]] if words[0] in ("invoke", "__main__.py", "inv") else words)


def vms_dir() -> Path:
    return paths.state_dir() / "vms"


def run_dir_of(name: str) -> Path:
    if not NAME_RE.match(name):
        raise KernlabError(f"bad VM name {name!r}", "use lowercase letters, digits, - and _")
    return vms_dir() / name


_CLAIMS: dict[str, tuple[contextlib.ExitStack, int]] = {}
_CLAIMS_GUARD = threading.Lock()


def vm_lock(name: str) -> Path:
    """The lock a command holds while it uses VM ``name`` (one run per VM at a time)."""
    return filelock.locks_dir(paths.state_dir()) / f"vm-{name}.lock"


def claim(name: str, wait: bool = True) -> None:
    """Hold VM ``name`` for this process until ``release(name)``: another command that claims
    it meanwhile waits, naming this one (``wait``), or is refused. Counted: a process that
    claims a VM twice (a reproduce's check, then its run) releases it twice."""
    run_dir_of(name)
    with _CLAIMS_GUARD:
        if name in _CLAIMS:
            stack, count = _CLAIMS[name]
            _CLAIMS[name] = (stack, count + 1)
            return
    stack = contextlib.ExitStack()
    stack.enter_context(filelock.exclusive(
        vm_lock(name), f"a command on VM {name}", wait=wait,
        fix=f"wait for it to finish, or use another VM: --vm-name NAME (not {name})"))
    with _CLAIMS_GUARD:
        _CLAIMS[name] = (stack, 1)


def claim_free(base: str) -> str:
    """Claim the first VM name of ``base``, ``base-2`` ... ``base-9`` nothing else holds
    (a matrix's or a lane's VM: never one another command is using); returns it."""
    for name in [base, *(f"{base[:29]}-{n}" for n in range(2, 10))]:
        if claimed(name):  # this process's own (another lane): not free either
            continue
        try:
            claim(name, wait=False)
            return name
        except KernlabError:
            continue
    claim(base)  # all taken: wait for the first, as any second command does
    return base


@contextlib.contextmanager
def free_name(base: str) -> Iterator[str]:
    """For the block: ``base`` when nothing holds it (the command claims it once it uses a
    VM), else the first free ``base-N``, held by this process (``claim_free``)."""
    if in_use_by(base) is None:
        yield base
        return
    name = claim_free(base)
    try:
        yield name
    finally:
        release(name)


def release(name: str) -> None:
    """Let go of a ``claim(name)`` (the last release drops the lock)."""
    with _CLAIMS_GUARD:
        stack, count = _CLAIMS.pop(name, (None, 0))
        if stack is not None and count > 1:
            _CLAIMS[name] = (stack, count - 1)
            return
    if stack is not None:
        stack.close()


def in_use_by(name: str) -> str | None:
    """The other command that holds VM ``name`` now (pid and command line), if any."""
    return None if claimed(name) else filelock.holder(vm_lock(name))


def claimed(name: str) -> bool:
    """Whether this process holds VM ``name``."""
    with _CLAIMS_GUARD:
        return name in _CLAIMS


def _forget(run_dir: Path) -> None:
    """Remove what only a live VM needs; keep console.log and qemu.log for post-mortems."""
    for item in ("vm.json", "overlay.qcow2", "qmp.sock", "qemu.pid"):
        with contextlib.suppress(FileNotFoundError):
            (run_dir / item).unlink()


def find_vm(name: str = "default") -> Vm | None:
    """The running VM called ``name``; None if absent. A VM whose QEMU died is cleaned up."""
    run_dir = run_dir_of(name)
    record_path = run_dir / "vm.json"
    if not record_path.is_file():
        return None
    try:
        vm = Vm(run_dir, VmRecord.load(record_path))
    except (ValueError, KeyError, TypeError):
        _forget(run_dir)
        return None
    if not vm.alive():
        died = health.write_death_note(vm)
        how = f"guest kernel panic: {died.detail}" if died.state == health.PANICKED else died.detail
        reporter().note(f"VM {name} is gone ({how}): cleaned up")
        _forget(run_dir)
        return None
    return vm


def usable_vm(name: str = "default", connect: bool = False) -> Vm:
    """The running VM ``name`` whose SSH answers (``connect``: with its connection open);
    else a one-line error saying what is wrong (not running, its last boot's panic, frozen,
    SSH not answering) and what to do."""
    vm = find_vm(name)
    if vm is None:
        raise not_running(name)
    if connect:
        answering(vm)
    else:
        health.require(vm)
    return vm


def answering(vm: Vm, timeout: float = ANSWER_TIMEOUT) -> None:
    """GuestDown unless ``vm`` runs and SSH works, with its connection left open. Opening it
    is the proof (one SSH handshake, not a banner check and then a handshake); when it
    cannot be opened, kernlab.health names what is wrong."""
    now = health.quick_state(vm)
    if not now.ok:
        raise health.GuestDown(vm, now)
    try:
        remote.connect(vm, timeout=timeout)
    except (OSError, EOFError, paramiko.SSHException):
        health.require(vm)
        remote.connect(vm)


def forget_death(name: str) -> dict[str, Any] | None:
    """Drop VM ``name``'s death note (`vm.down` of a VM that stopped by itself); returns it."""
    note = health.death_note(run_dir_of(name))
    (run_dir_of(name) / health.DEATH_NOTE).unlink(missing_ok=True)
    return note


def not_running(name: str) -> KernlabError:
    """No VM ``name`` runs: say so, with how its last boot ended if kernlab saw that."""
    note = health.death_note(run_dir_of(name))
    if note is None:
        return NotFound(f"no running VM {name}", f"start one: `invoke vm.up --kernel VERSION --name {name}`")
    up = f"`invoke vm.up --kernel {note.get('kernel', 'VERSION')} --name {name}`"
    if note["state"] == health.PANICKED:
        return NotFound(f"VM {name} is not running: guest kernel panic: {note.get('detail')} "
                        f"(console: {note.get('console_log')})", f"boot it again: {up}")
    return NotFound(f"VM {name} is not running: {note.get('detail')}", f"boot it again: {up}")


def survey(name: str = "") -> list[tuple[str, health.Health, Vm | None]]:
    """(name, state, VM or None) of each VM (or of ``name``): running ones as `health.state`
    finds them, those that stopped by themselves as their death note says."""
    if name:
        names = [name]
    else:
        names = sorted(d.name for d in vms_dir().glob("*") if d.is_dir() and NAME_RE.match(d.name))
    rows = []
    for each in names:
        vm = find_vm(each)
        if vm is not None:
            rows.append((each, health.state(vm), vm))
        elif note := health.death_note(run_dir_of(each)):
            rows.append((each, health.Health(note["state"], str(note.get("detail", ""))), None))
    return rows


def kernel_splats(name: str, state: health.Health, vm: Vm | None) -> list[splats.Splat]:
    """Kernel splats (kernlab.guest.splats) in VM ``name``'s serial console and, when it
    answers over SSH, its whole kernel log (dmesg): what `vm.status` shows."""
    console = vm.console_log if vm is not None else run_dir_of(name) / "console.log"
    text = console.read_text(errors="replace") if console.is_file() else ""
    dmesg = ""
    if vm is not None and state.state == health.RUNNING:  # not while gdb holds it
        with contextlib.suppress(KernlabError, OSError, EOFError, paramiko.SSHException):
            dmesg = remote.run(remote.connect(vm, timeout=ANSWER_TIMEOUT), "dmesg", timeout=20,
                               check=False).stdout
    return splats.unique(splats.find_splats(dmesg) + splats.find_splats(text))


def _splat_text(found: list[splats.Splat]) -> str:
    if not found:
        return "kernel splats: none"
    return f"kernel splats: {splats.summary(found)} (first: {found[0].line})"


def status_text(rows: list[tuple[str, health.Health, Vm | None]],
                found: dict[str, list[splats.Splat]] | None = None) -> str:
    """`invoke vm.status`: one line per VM of ``survey()``, and its kernel splats (``found``)."""
    if not rows:
        return "no VMs running"
    found = found or {}
    lines = []
    for each, state, vm in rows:
        tail = f"; {_splat_text(found[each])}" if each in found else ""
        if vm is None:
            lines.append(f"{each}: {state.shown()}; QEMU is gone (`invoke vm.down --name {each}` forgets it)"
                         + tail)
            continue
        info = vm.info
        lines.append(f"{each}: {state.shown()}, pid {vm.pid}, ssh 127.0.0.1:{vm.ssh_port}, {info.accel}, "
                     f"kernel {info.kernelrelease}, image {info.image_key[:12]}, "
                     f"console {vm.console_log}{tail}")
    return "\n".join(lines)


def status_json(rows: list[tuple[str, health.Health, Vm | None]],
                found: dict[str, list[splats.Splat]] | None = None) -> list[dict[str, Any]]:
    """`invoke vm.status --json`: each VM's record (or its name) with its state and splats."""
    found = found or {}
    return [{**(vm.info.to_json() if vm else {"name": each}), "state": state.state,
             "state_detail": state.detail,
             "splats": [{"class": s.kind, "line": s.line} for s in found.get(each, [])]}
            for each, state, vm in rows]


def list_vms() -> list[Vm]:
    if not vms_dir().is_dir():
        return []
    found = (find_vm(d.name) for d in sorted(vms_dir().iterdir()) if NAME_RE.match(d.name))
    return [vm for vm in found if vm]


def mismatch(vm: Vm, build: BuildRecord, image: ImageRecord) -> str:
    """What the running ``vm`` lacks to run ``build`` on ``image`` ('' if nothing): the kernel,
    the image, or the build's kernel headers disk."""
    if vm.info.kernel_key != build.key:
        return "kernel"
    if vm.info.image_key != image.key:
        return "image"
    return "" if _has_headers(vm, build) else "kernel headers disk"


def _has_headers(vm: Vm, build: BuildRecord) -> bool:
    """The VM has this build's headers disk, or booted without one that still cannot be made.

    A VM booted by a kernlab without the headers stage has no record of it: restarted.
    """
    booted = vm.info.kheaders
    if not booted:
        return False
    if booted.get("key"):
        return booted["key"] == kheaders.stage_key(build)
    return kheaders.find_headers(build) is None


def headers_for(build: BuildRecord) -> dict[str, Any]:
    """The kernel headers disk for ``build``: its summary, or why there is none (a warning)."""
    try:
        return kheaders.summary(kheaders.ensure_headers(build))
    except KernlabError as error:
        reporter().warn(f"the guest gets no kernel headers: {error.one_line()}")
        return {"key": None, "missing": error.one_line()}


def start_vm(build: BuildRecord, image: ImageRecord, name: str = "default", *, append: str = "",
             memory: str = "2G", cpus: int = 2, port: int | None = None,
             timeout: float | None = None, wait: bool = True, cold: bool = False,
             defer_settle: bool = False, gdb_port: int | None = None) -> Vm:
    """Boot ``build``'s kernel on ``image`` and wait until a command runs over SSH.

    The guest is restored from its snapshot when there is one (kernlab.guest.snapshot),
    else booted cold and saved as one first; ``cold`` boots cold and leaves snapshots
    alone (so does ``wait=False``). A restored guest's clock and seed are set by its first
    SSH command: ``true`` here, or (``defer_settle``, for a caller that runs a command next)
    that command, which saves a round trip. ``append`` adds kernel parameters (a later
    ``init=``/``root=`` wins); ``timeout`` overrides the accel-scaled readiness timeout.
    Any failure or Ctrl-C stops QEMU. ``gdb_port``: QEMU's gdbstub listens on
    127.0.0.1:gdb_port (kernlab.guest.gdb); such a boot is cold (``nokaslr`` on a KASLR kernel).
    """
    build, image = BuildRecord.from_json(build), ImageRecord.from_json(image)
    kernel = _kernel_path(build)
    if gdb_port:
        cold, append = True, f"{append} {gdb.boot_args(build)}".strip()
    with _start_lock(name):
        if find_vm(name):
            raise KernlabError(f"VM {name} is already running",
                               f"run `invoke vm.down --name {name}`")
        return _start(build, image, name, kernel, append=append, memory=memory, cpus=cpus,
                      port=port, timeout=timeout, wait=wait, cold=cold, defer_settle=defer_settle,
                      gdb_port=gdb_port)


@contextlib.contextmanager
def _start_lock(name: str) -> Iterator[None]:
    """Only one process at a time may (re)create VM ``name``'s run dir."""
    vms_dir().mkdir(parents=True, exist_ok=True)
    with open(vms_dir() / f".{name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KernlabError(f"VM {name} is being started by another process",
                               "wait for it, or use another --name") from None
        yield


@dataclass
class _Boot:
    """One start's fixed parts: what to boot, where, and how long to wait."""

    spec: qemu.QemuSpec
    run_dir: Path
    build: BuildRecord
    image: ImageRecord
    headers: dict
    port: int | None
    limit: float
    snapshot_inputs: dict[str, Any]
    defer_settle: bool

    @property
    def log(self) -> Path:
        return self.run_dir / "qemu.log"

    @property
    def snapshot_key(self) -> str:
        return snapshot.key_of(self.snapshot_inputs)


def _start(build: BuildRecord, image: ImageRecord, name: str, kernel: Path, *, append: str,
           memory: str, cpus: int, port: int | None, timeout: float | None, wait: bool,
           cold: bool, defer_settle: bool, gdb_port: int | None = None) -> Vm:
    """start_vm's work, under the VM's start lock: a snapshot restore, else a cold boot."""
    accel = qemu.choose_accel(kernel)
    headers = headers_for(build)
    run_dir = run_dir_of(name)
    _fresh_run_dir(run_dir)
    spec = qemu.QemuSpec(
        kernel=kernel, disk=run_dir / "overlay.qcow2", console_log=run_dir / "console.log",
        qmp_socket=run_dir / "qmp.sock", pidfile=run_dir / "qemu.pid",
        cmdline=f"{CMDLINE} {FAST_BOOT} {append}".strip(), accel=accel, memory=memory, cpus=cpus,
        name=f"kernlab-{name}", kheaders=Path(headers["path"]) if headers.get("path") else None,
        gdb_port=gdb_port)
    boot = _Boot(spec, run_dir, build, image, headers, port,
                 timeout if timeout is not None else READY_TIMEOUT * accel.scale,
                 snapshot.inputs(spec.argv(0), run_dir, name, _snapshot_facts(spec, build, image,
                                                                               headers)),
                 defer_settle)
    use_snapshots = wait and not cold
    with reporter().step(f"boot {build.data.get('kernelrelease', kernel.name)} as VM {name} "
                         f"({accel.name})"), _stop_on_interrupt():
        if use_snapshots:
            snap, why = snapshot.find(boot.snapshot_key)
            if why:
                reporter().note(f"{why}; booting cold")
            if snap is not None and (vm := _restore_or_none(boot, snap)) is not None:
                return vm
        return _cold(boot, wait=wait, save=use_snapshots)


def _snapshot_facts(spec: qemu.QemuSpec, build: BuildRecord, image: ImageRecord,
                    headers: dict) -> dict[str, Any]:
    """What a snapshot depends on besides the command line: the files' contents, QEMU."""
    return {"bzImage_sha256": build.output_sha256("bzImage") or str(spec.kernel),
            "kernel_key": build.key, "image_key": image.key, "image_sha256": image.disk_sha256,
            "image_path": str(image.disk), "headers_key": headers.get("key"),
            "qemu": qemu.qemu_version()}


@contextlib.contextmanager
def _stop_on_error(run_dir: Path, box: list[Vm]) -> Iterator[None]:
    """On any failure or Ctrl-C: stop the VM in ``box`` (or the QEMU its pidfile names)."""
    try:
        yield
    except BaseException:
        if box:
            box[0].stop()
        elif (run_dir / "qemu.pid").is_file():
            with contextlib.suppress(ValueError, OSError):
                qemu.kill(int((run_dir / "qemu.pid").read_text()))
        _forget(run_dir)
        raise


def _launch(boot: _Boot, box: list[Vm], extra: list[str], how: str) -> tuple[Vm, float]:
    """Start QEMU (``extra`` arguments appended), write the VM's record and SSH files."""
    started = time.monotonic()
    proc, ssh_port = qemu.launch(lambda port: boot.spec.argv(port) + extra, boot.spec.qmp_socket,
                                 boot.log, boot.port)
    record = _record(boot.run_dir.name, boot.run_dir, boot.spec, proc.pid, ssh_port, boot.build,
                     boot.image, boot.headers)
    record["argv"] += extra
    record["boot"] = how
    vm = Vm(boot.run_dir, VmRecord.from_json(record))
    vm._proc = proc
    box.append(vm)
    remote.write_ssh_files(vm, boot.image)
    vm.save()
    return vm, started


def _cold(boot: _Boot, *, wait: bool, save: bool) -> Vm:
    """Boot cold; with ``save``, save the guest at init's readiness line and restore it."""
    box: list[Vm] = []
    with _stop_on_error(boot.run_dir, box):
        qemu.make_overlay(boot.image.disk, boot.spec.disk, boot.log)
        vm, started = _launch(boot, box, [], "cold")
        if not wait:
            return vm
        line = _wait_console(vm, started + boot.limit, boot.limit)
        vm.note(console_ready_seconds=round(time.monotonic() - started, 2),
                guest_uptime_at_ready=_uptime(line))
        if not save:
            _wait_ssh(vm, started, boot.limit)
            return vm
        snap = _save_or_none(vm, boot)
    if snap is not None and (restored := _restore_or_none(boot, snap)) is not None:
        return restored
    _forget(boot.run_dir)
    return _cold(boot, wait=True, save=False)


def _save_or_none(vm: Vm, boot: _Boot) -> snapshot.Snapshot | None:
    """Save the just-booted guest as the snapshot for its inputs (QEMU is gone after it)."""
    try:
        snap = snapshot.save(boot.spec.qmp_socket, vm.pid, boot.spec.disk, boot.snapshot_key,
                             boot.snapshot_inputs, console=vm.console_log)
    except snapshot.SnapshotFailed as error:
        reporter().note(f"{error.cause}; booting cold without a snapshot (log: {boot.log})")
        vm.stop()
        return None
    vm.stop()
    reporter().note(f"saved the booted guest as snapshot {snap.dir.name} "
                    f"({snap.record['save_seconds']}s); later boots restore it")
    return snap


def _restore_or_none(boot: _Boot, snap: snapshot.Snapshot) -> Vm | None:
    """The guest restored from ``snap`` and answering over SSH; None (snapshot deleted, a
    note said why) when that fails."""
    box: list[Vm] = []
    try:
        with _stop_on_error(boot.run_dir, box):
            return _restore(boot, snap, box)
    except KernlabError as error:
        reporter().note(f"restoring snapshot {snap.dir.name} failed ({error.cause}): deleted it; "
                        f"booting cold (log: {boot.log})")
        snapshot.discard(snap.dir)
        return None


def _restore(boot: _Boot, snap: snapshot.Snapshot, box: list[Vm]) -> Vm:
    snapshot.make_layer(snap, boot.spec.disk, boot.log)
    snapshot.start_console(snap, boot.spec.console_log)
    vm, started = _launch(boot, box, snapshot.incoming_args(snap), "snapshot")
    snapshot.resume(vm._proc, boot.spec.qmp_socket, boot.log)
    vm.note(restore_seconds=round(time.monotonic() - started, 2),
            snapshot={"key": snap.key, "dir": str(snap.dir)},
            **{remote.SETTLE: "pending"})  # the first command sets the clock and the seed
    limit = min(boot.limit, RESTORE_TIMEOUT * boot.spec.accel.scale)
    _wait_ssh(vm, started, limit, command=not boot.defer_settle)
    return vm


def _kernel_path(build: BuildRecord) -> Path:
    try:
        kernel = build.bzimage
    except (KeyError, TypeError):
        raise KernlabError("the build record has no outputs.bzImage.path",
                           f"rebuild: `invoke build-kernel --version {build.data.get('version')}`"
                           ) from None
    if not kernel.is_file():
        raise NotFound(f"kernel image {kernel} is missing",
                       f"run `invoke build-kernel --version {build.version}`")
    return kernel


def _fresh_run_dir(run_dir: Path) -> None:
    """An empty run dir, keeping the previous console log as console.prev.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "console.log").exists():
        shutil.move(run_dir / "console.log", run_dir / "console.prev.log")
    for item in run_dir.iterdir():
        if item.name not in ("console.prev.log",):
            if item.is_dir():
                shutil.rmtree(item)
            else:
                item.unlink()


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt while booting, so QEMU is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _record(name: str, run_dir: Path, spec: qemu.QemuSpec, pid: int, port: int,
            build: BuildRecord, image: ImageRecord, headers: dict) -> dict[str, Any]:
    return {
        "name": name,
        "pid": pid,
        "host": "127.0.0.1",
        "ssh_port": port,
        "user": "root",
        "client_key": str(image.client_key),
        "known_hosts": str(run_dir / "known_hosts"),
        "ssh_config": str(run_dir / "ssh_config"),
        "console_log": str(spec.console_log),
        "qemu_log": str(run_dir / "qemu.log"),
        "qmp_socket": str(spec.qmp_socket),
        "overlay": str(spec.disk),
        "accel": spec.accel.name,
        "accel_reason": spec.accel.reason,
        "timeout_scale": spec.accel.scale,
        "cmdline": spec.cmdline,
        "memory": spec.memory,
        "cpus": spec.cpus,
        "argv": spec.argv(port),
        "qemu_version": qemu.qemu_version(),
        "kernel": {"version": build.version, "key": build.key, "kernelrelease": build.kernelrelease,
                   "release": build.data.get("release"), "symbols": build.data.get("symbols"),
                   "bzImage": str(spec.kernel), "vmlinux": _vmlinux_of(build)},
        "image": {"recipe": image.recipe, "key": image.key, "path": str(image.disk)},
        "kheaders": headers,
        "gdb_port": spec.gdb_port,
        "started_at": time.time(),
    }


def _vmlinux_of(build: BuildRecord) -> str | None:
    path = build.existing_output("vmlinux")
    return str(path) if path else None


def vmlinux_of(vm: Vm) -> Path | None:
    """The running kernel's vmlinux (ELF with symbols and, where built with them, DWARF):
    the VM record's, else the one beside its bzImage in the build's object dir."""
    kernel = vm.info.data.get("kernel") or {}
    if kernel.get("vmlinux"):
        return Path(kernel["vmlinux"])
    bzimage = Path(kernel.get("bzImage") or "")
    guess = bzimage.parents[3] / "vmlinux" if len(bzimage.parents) > 3 else None
    return guess if guess is not None and guess.is_file() else None


def dump_vm(name: str, out: str = "", fmt: str = "elf") -> dict[str, Any]:
    """`invoke vm.dump`: a vmcore of VM ``name`` (kernlab.guest.dump), its record returned."""
    dump.check_format(fmt)
    vm = find_vm(name)
    if vm is None:
        raise not_running(name)
    target = Path(out).resolve() if out else dump.dump_path(vm.run_dir, fmt)
    if target.exists():
        raise KernlabError(f"{target} exists", "give another --out, or remove it")
    return dump_of(vm, target, fmt)


def dump_of(vm: Vm, target: Path, fmt: str) -> dict[str, Any]:
    """A vmcore of ``vm`` at ``target`` with its record beside it (kernlab.guest.dump)."""
    return dump.dump_guest(vm.info.qmp_socket, target, dict(vm.info.data.get("kernel") or {}),
                           vmlinux_of(vm), fmt)


def _wait_ssh(vm: Vm, started: float, limit: float, command: bool = True) -> None:
    """Wait until ``true`` succeeds over SSH (``command`` False: until the SSH handshake is
    done); record the time."""
    remote.wait_ready(vm, started + limit, on_dead=lambda: _died(vm), command=command)
    vm.note(ready_seconds=round(time.monotonic() - started, 2))
    vm.save()
    how = f"restored from snapshot {vm.info.snapshot['dir']}" if vm.info.snapshot \
        else "cold boot"
    reporter().note(f"SSH ready on 127.0.0.1:{vm.ssh_port} after {vm.info.ready_seconds}s"
                    f" ({how}; console: {vm.console_log})")


def _wait_console(vm: Vm, deadline: float, limit: float) -> str:
    """The readiness line from the console; errors if QEMU dies or time runs out."""
    offset = 0
    pending = b""
    while True:
        with contextlib.suppress(FileNotFoundError), open(vm.console_log, "rb") as con:
            con.seek(offset)
            chunk = con.read()
            offset += len(chunk)
            pending += chunk
        for raw in pending.splitlines():
            text = raw.decode(errors="replace")
            if text.startswith(READY_LINE):
                return text
            if "sshd failed to start" in text:
                raise _not_ready(vm, f"sshd did not start in VM {vm.name}")
            if HEADERS_FAILED in text:
                reporter().warn(f"VM {vm.name}: {text.strip()} (console: {vm.console_log})")
        pending = pending[pending.rfind(b"\n") + 1:]
        if not vm.alive():
            raise _died(vm)
        if time.monotonic() > deadline:
            raise _not_ready(vm, f"VM {vm.name} was not ready within {limit:.0f}s")
        time.sleep(0.05)


def _uptime(line: str) -> float | None:
    match = re.search(r"uptime=([\d.]+)", line)
    return float(match.group(1)) if match else None


def _died(vm: Vm) -> KernlabError:
    """The error for a guest whose QEMU exited: the panic line if there is one."""
    tail = console_tail(vm, 40)
    panic = PANIC_RE.search(vm.console_log.read_text(errors="replace")
                            if vm.console_log.exists() else "")
    what = f"guest kernel panicked: {panic.group(1).strip()}" if panic else "QEMU exited"
    return KernlabError(f"VM {vm.name} stopped during boot ({what}); console: {vm.console_log}",
                        "check the kernel command line, root= and init=, and the kernel config",
                        details=tail)


def _not_ready(vm: Vm, cause: str) -> KernlabError:
    kernel = vm.info.build_id
    return KernlabError(f"{cause}; console log: {vm.console_log}",
                        "read the console log (did init start sshd?); on a slow host boot it "
                        f"with a longer wait first: `invoke vm.up --kernel {kernel} --name {vm.name} "
                        "--timeout SECONDS`", details=console_tail(vm))
