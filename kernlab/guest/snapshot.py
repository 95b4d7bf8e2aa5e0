"""Snapshot boot: a lab guest booted once, saved, and restored in a fraction of a second.

The first cold boot of a (kernel, image, VM settings) combination stops the guest as soon
as init says KERNLAB-READY (sshd listening, no SSH connection made yet) and saves it to
``<state>/snapshots/<key16>/``: ``ram.state`` (RAM and device state: QMP ``migrate`` to
``exec:cat``) and ``disk.qcow2`` (the run's qcow2 overlay, frozen read-only). A later boot
gets a fresh qcow2 overlay over ``disk.qcow2`` (so every run starts from the same clean
disk), starts QEMU with ``-incoming exec:cat ram.state`` and ``cont``-inues the guest.

The key hashes the QEMU command line (per-run paths, the VM name and the SSH port left
out: they do not reach the guest), the bzImage's and image's sha256, the headers disk's key
and QEMU's version: any change makes another key, so a stale snapshot is never used. A
snapshot whose record or files do not match, or that QEMU cannot load, is deleted and the
boot falls back to a cold one with a note.

After a restore the guest's wall clock is where it was at the save (QEMU's virtual clock
stops while the VM is stopped), so the first SSH command is prefixed with
``remote.settle_command()``, which sets it from the host (``date -s @<host time>``) and
writes 32 host random bytes into ``/dev/urandom`` (mixed into the input pool; the kernel's
next reseed, within about a second of guest uptime after boot, takes them in; the first
SSH handshake's guest randomness still comes from the saved state: two restores were
seen to give different ``/proc/sys/kernel/random/uuid`` all the same). The SSH connection
is always a fresh one, to a new host port (QEMU's user network forward is host side); the
guest's host key is the image's, known in advance.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlab.core import inuse, paths
from kernlab.core.errors import KernlabError
from kernlab.core.proc import require_tool, run_logged
from kernlab.core.util import atomic_write_json, hash_inputs, read_json
from kernlab.guest import qemu

FORMAT = 1  # bump when what a snapshot holds or how it is restored changes
KEEP = 6  # snapshots kept; the least recently used go first
SAVE_TIMEOUT = 60.0
LOAD_TIMEOUT = 60.0
RECORD = "snapshot.json"


class SnapshotFailed(KernlabError):
    """A snapshot could not be saved or restored (the caller boots cold instead)."""


@dataclass
class Snapshot:
    """A saved guest: its directory and record."""

    dir: Path
    record: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.record["key"])

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def state(self) -> Path:
        return self.dir / "ram.state"


def snapshots_dir() -> Path:
    return paths.state_dir() / "snapshots"


def dir_for(key: str) -> Path:
    return snapshots_dir() / key[:16]


def inputs(argv: list[str], run_dir: Path, name: str, facts: dict[str, Any]) -> dict[str, Any]:
    """What a snapshot depends on: the command line with the per-run parts taken out
    (run dir, VM name, SSH port) and ``facts`` (bzImage, image, headers, QEMU version)."""
    template = [arg.replace(str(run_dir), "<run>").replace(f"kernlab-{name}", "kernlab-<name>")
                for arg in argv]
    template = [_without_port(arg) for arg in template]
    return {"format": FORMAT, "argv": template, **facts}


def _without_port(arg: str) -> str:
    if "hostfwd=tcp:127.0.0.1:" not in arg:
        return arg
    head, _, tail = arg.partition("hostfwd=tcp:127.0.0.1:")
    return f"{head}hostfwd=tcp:127.0.0.1:<port>{tail[tail.index('-'):]}"


def key_of(inputs_: dict[str, Any]) -> str:
    return hash_inputs(inputs_)


def find(key: str) -> tuple[Snapshot | None, str]:
    """(the snapshot for ``key``, '') or (None, why not: '' when there is none).

    A snapshot whose record or files do not match is deleted here.
    """
    where = dir_for(key)
    if not where.is_dir():
        return None, ""
    try:
        snap = Snapshot(where, read_json(where / RECORD))
        problem = _mismatch(snap, key)
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"its record is unreadable ({error})"
    if problem:
        discard(where)
        return None, f"snapshot {where} {problem}: deleted"
    with contextlib.suppress(OSError):
        os.utime(where / RECORD)  # most recently used
    return snap, ""


def _mismatch(snap: Snapshot, key: str) -> str:
    if snap.record.get("format") != FORMAT or snap.key != key:
        return "was made for other inputs"
    for path, size in ((snap.disk, snap.record["disk_bytes"]), (snap.state, snap.record["state_bytes"])):
        if not path.is_file() or path.stat().st_size != size:
            return f"has a missing or changed {path.name}"
    return ""


def discard(where: Path) -> None:
    """Delete a snapshot directory (renamed away first, so no one finds it half gone)."""
    gone = where.with_name(f".{where.name}.gone-{os.getpid()}-{secrets.token_hex(3)}")
    with contextlib.suppress(OSError):
        os.replace(where, gone)
        shutil.rmtree(gone, ignore_errors=True)


# ---------------------------------------------------------------- saving
def save(qmp_socket: Path, pid: int, overlay: Path, key: str, inputs_: dict[str, Any],
         console: Path) -> Snapshot:
    """Stop the guest, write its RAM and device state, quit QEMU and freeze ``overlay``;
    the boot's ``console`` log is kept beside them.

    QEMU (``pid``) is gone afterwards, whether the save worked or not.
    """
    started = time.monotonic()
    final = dir_for(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    with inuse.using(tmp, f"snapshot {final.name}", temporary=True):
        try:
            record = _save_into(tmp, qmp_socket, pid, overlay, key, inputs_, console)
            record["save_seconds"] = round(time.monotonic() - started, 2)
            atomic_write_json(tmp / RECORD, record)
            os.rename(tmp, final)  # fails if another process saved this key first: theirs is kept
        except BaseException as error:
            shutil.rmtree(tmp, ignore_errors=True)
            qemu.kill(pid)
            if isinstance(error, OSError) and (found := find(key)[0]) is not None:
                return found  # another process saved this key first
            if not isinstance(error, (OSError, ValueError, KernlabError)):
                raise
            raise SnapshotFailed(f"saving the booted guest failed: {error}") from None
    _prune(keep=final)
    return Snapshot(final, record)


def _save_into(tmp: Path, qmp_socket: Path, pid: int, overlay: Path, key: str,
               inputs_: dict[str, Any], console: Path) -> dict[str, Any]:
    """The save's steps into the directory ``tmp``; the snapshot's record."""
    state = tmp / "ram.state"
    qemu.qmp(qmp_socket, "stop")
    qemu.qmp(qmp_socket, "migrate", uri=f"exec:cat > {shlex.quote(str(state))}")
    _wait_migrated(qmp_socket)
    _quit(qmp_socket, pid)
    os.replace(overlay, tmp / "disk.qcow2")
    shutil.copyfile(console, tmp / "console.log")
    for item in (state, tmp / "disk.qcow2"):
        item.chmod(0o444)
    return {"key": key, "format": FORMAT, "inputs": inputs_, "created_at": time.time(),
            "disk_bytes": (tmp / "disk.qcow2").stat().st_size, "state_bytes": state.stat().st_size}


def _wait_migrated(qmp_socket: Path) -> None:
    deadline = time.monotonic() + SAVE_TIMEOUT
    while time.monotonic() < deadline:
        info = qemu.qmp(qmp_socket, "query-migrate") or {}
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise SnapshotFailed(f"QEMU's migrate {status}: {info.get('error-desc', '')}")
        time.sleep(0.02)
    raise SnapshotFailed(f"QEMU's migrate did not finish in {SAVE_TIMEOUT:.0f}s")


def _quit(qmp_socket: Path, pid: int) -> None:
    """QMP quit, and wait until QEMU has exited (its disk is closed)."""
    with contextlib.suppress(OSError, ValueError, KernlabError):
        qemu.qmp(qmp_socket, "quit", timeout=3.0)
    deadline = time.monotonic() + 5.0
    while qemu.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    qemu.kill(pid)


def _prune(keep: Path) -> None:
    """Keep the KEEP most recently used snapshots (``keep`` always)."""
    found = [d for d in snapshots_dir().iterdir() if d.is_dir() and not d.name.startswith(".")]
    found.sort(key=lambda d: _used_at(d), reverse=True)
    for old in [d for d in found if d != keep][KEEP - 1:]:
        discard(old)


def _used_at(where: Path) -> float:
    with contextlib.suppress(OSError):
        return (where / RECORD).stat().st_mtime
    return 0.0


# ---------------------------------------------------------------- restoring
def make_layer(snap: Snapshot, overlay: Path, log: Path) -> None:
    """The run's own qcow2 overlay over the frozen disk (which is never written)."""
    qemu_img = require_tool("qemu-img", "qemu-utils")
    run_logged([qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", snap.disk, overlay],
               log, what="qemu-img create")


def start_console(snap: Snapshot, console_log: Path) -> None:
    """Begin the restored guest's console log (QEMU appends to it) with the saved boot's."""
    try:
        shutil.copyfile(snap.dir / "console.log", console_log)
    except OSError:
        console_log.write_bytes(b"")


def incoming_args(snap: Snapshot) -> list[str]:
    return ["-incoming", f"exec:cat {shlex.quote(str(snap.state))}"]


def resume(proc: subprocess.Popen, qmp_socket: Path, log: Path) -> None:
    """Wait until QEMU has loaded the saved state, then let the guest run."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        if proc.poll() is not None:
            said = qemu.qemu_error_line(log.read_text(errors="replace")[-4000:]) if log.exists() else ""
            raise SnapshotFailed(f"QEMU could not load the snapshot: {said or f'exit {proc.returncode}'}")
        with contextlib.suppress(OSError, ValueError, KernlabError), qemu.Qmp(qmp_socket, 2.0) as monitor:
            while proc.poll() is None and time.monotonic() < deadline:
                status = (monitor.execute("query-status") or {}).get("status")
                if status == "paused":
                    monitor.execute("cont")
                    return
                if status == "running":
                    return
                time.sleep(0.01)
        if time.monotonic() > deadline:
            raise SnapshotFailed(f"QEMU did not load the snapshot within {LOAD_TIMEOUT:.0f}s")
        time.sleep(0.01)
