"""Crash dumps of a running guest: QEMU's ``dump-guest-memory`` over QMP.

``dump_vm`` writes ``<run dir>/dumps/vmcore-<UTC time>.<elf|kdump>`` and beside it
``<same>.json``: the kernel build it belongs to, that build's ``vmlinux`` (with its sha256)
and the commands that open it with Debian's ``crash`` and with drgn. The vmcore stays with
the VM's run dir (builds are shared, read-only stage outputs); the record is what puts
it next to its vmlinux. The guest pauses while QEMU writes the dump, then runs on.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from pathlib import Path
from typing import Any

from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.util import atomic_write_json, sha256_file
from kernlab.guest import qemu, vmcoreinfo

FORMATS = {"elf": "elf", "kdump-zlib": "kdump", "kdump-lzo": "kdump", "kdump-snappy": "kdump"}
DUMP_TIMEOUT = 600.0  # seconds for QEMU to write a 2 GB guest under TCG on a loaded host


def dump_path(run_dir: Path, fmt: str) -> Path:
    return run_dir / "dumps" / f"vmcore-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.{FORMATS[fmt]}"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise KernlabError(f"unknown dump format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    return fmt


def write_dump(qmp_socket: Path, out: Path, fmt: str = "elf") -> Path:
    """QEMU's ``dump-guest-memory`` of the guest behind ``qmp_socket`` into ``out`` (removed
    again if QEMU fails)."""
    check_format(fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with reporter().step(f"dump guest memory ({fmt}) to {out}"):
            # ELF with paging: the segments carry the kernel's virtual addresses too (drgn
            # reads swapper_pg_dir through them); kdump formats cannot have it.
            qemu.qmp(qmp_socket, "dump-guest-memory", timeout=DUMP_TIMEOUT, paging=fmt == "elf",
                     protocol=f"file:{partial}", format=fmt)
        partial.rename(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return out


def crash_flags(vmlinux: Path) -> list[str]:
    """crash's flags for this build: ``--no_kmem_cache`` on a SLOB kernel (the lab kernels'
    tinyconfig base), whose caches crash 8 cannot read (it stops: "invalid structure member
    offset: kmem_cache_s_num"); its ``ps`` then lists the idle tasks only, and
    ``list task_struct.tasks -s task_struct.pid,comm -h init_task`` walks the task list."""
    config = vmlinux.with_name(".config")
    slob = config.is_file() and "CONFIG_SLOB=y" in config.read_text(errors="replace").splitlines()
    return ["--no_kmem_cache"] if slob else []


def open_commands(vmcore: Path, vmlinux: Path) -> dict[str, str]:
    """How to open ``vmcore``: with crash and with drgn."""
    core, linux = shlex.quote(str(vmcore)), shlex.quote(str(vmlinux))
    return {"crash": shlex.join(["crash", *crash_flags(vmlinux)]) + f" {linux} {core}",
            "drgn": f"drgn -c {core} -s {linux}"}


def describe(vmcore: Path, kernel: dict[str, Any], vmlinux: Path | None, fmt: str) -> dict[str, Any]:
    """The dump's record: its file, format, kernel, vmlinux and how to open it."""
    record: dict[str, Any] = {"vmcore": str(vmcore), "format": fmt, "size": vmcore.stat().st_size,
                              "kernel": kernel,
                              "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if vmlinux is not None and vmlinux.is_file():
        record["vmlinux"] = {"path": str(vmlinux), "sha256": sha256_file(vmlinux)}
        record["open"] = open_commands(vmcore, vmlinux)
    return record


def _vmcoreinfo(out: Path, kernel: dict[str, Any], vmlinux: Path | None, fmt: str) -> str:
    """Where the dump's VMCOREINFO note comes from: the guest, kernlab (an ELF dump of a
    kernel that publishes none: kernlab.guest.vmcoreinfo), or nowhere (drgn cannot open it)."""
    if fmt != "elf":
        return "from the guest, if its kernel publishes one (-device vmcoreinfo)"
    if vmcoreinfo.has_vmcoreinfo(out):
        return "from the guest"
    system_map = vmlinux.with_name("System.map") if vmlinux is not None else None
    if system_map is None or not system_map.is_file() or not kernel.get("kernelrelease"):
        return "none: no System.map to make one from (drgn will refuse the dump; crash opens it)"
    vmcoreinfo.add_note(out, vmcoreinfo.text_for(str(kernel["kernelrelease"]), system_map))
    return f"added by kernlab from {system_map} (the kernel publishes none)"


def hold_after_shutdown(qmp_socket: Path) -> bool:
    """Have QEMU pause, not exit, when its guest shuts down or reboots (a panic does: the lab
    command line's ``panic=-1`` reboots, ``-no-reboot`` makes that a shutdown), so the dead
    guest's memory is still there to dump. QMP ``set-action``: False on a QEMU before 6.0."""
    try:
        qemu.qmp(qmp_socket, "set-action", shutdown="pause")
    except (OSError, ValueError, KernlabError):
        return False
    return True


def dump_guest(qmp_socket: Path, out: Path, kernel: dict[str, Any], vmlinux: Path | None,
               fmt: str = "elf") -> dict[str, Any]:
    """Write the dump and its record (``<out>.json``); returns the record."""
    write_dump(qmp_socket, out, fmt)
    record = describe(out, kernel, vmlinux, fmt)
    record["vmcoreinfo"] = _vmcoreinfo(out, kernel, vmlinux, fmt)
    atomic_write_json(out.with_name(out.name + ".json"), record)
    return record
