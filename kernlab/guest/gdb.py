"""gdb on a guest kernel: QEMU's gdbstub (``vm.up --gdb``) and gdb started on the build.

A VM booted with a gdb port has ``-gdb tcp:127.0.0.1:PORT`` (never another address) and
``nokaslr`` when the kernel has KASLR (the lab kernels are not relocatable; one that is
would otherwise move away from vmlinux's addresses). ``gdb_argv`` starts gdb on the build's vmlinux with
the build's debug prefixes (``/kernlab/src``, ``/kernlab/obj``, set by the build's
``-fdebug-prefix-map``) mapped back with ``set substitute-path``, the kernel's own gdb
scripts (``vmlinux-gdb.py``: lx-symbols, lx-dmesg, lx-ps) loaded when the build made them
(CONFIG_GDB_SCRIPTS), and ``target remote`` to the stub.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

from kernlab.core import interrupt
from kernlab.core.errors import KernlabError
from kernlab.core.proc import require_tool
from kernlab.core.progress import reporter
from kernlab.guest import health, qemu

BOOT_ARGS = "nokaslr"  # for a kernel with KASLR (CONFIG_RANDOMIZE_BASE)
SRC_PREFIX, OBJ_PREFIX = "/kernlab/src", "/kernlab/obj"  # kernlab.kernel.build's debug prefix map


def boot_args(build: Any) -> str:
    """Kernel parameters for a boot under gdb: ``nokaslr`` when the kernel has KASLR (an
    unknown parameter would reach init as an argument, so not otherwise)."""
    config = build.existing_output("config")
    text = config.read_text(errors="replace") if config is not None else ""
    return BOOT_ARGS if "CONFIG_RANDOMIZE_BASE=y" in text.splitlines() else ""


def has_dwarf(vmlinux: Path) -> bool:
    """vmlinux carries DWARF (a .debug_info section): gdb can show sources, types, arguments."""
    with open(vmlinux, "rb") as handle:
        return ELFFile(handle).get_section_by_name(".debug_info") is not None


def setup_commands(vmlinux: Path, port: int) -> list[str]:
    """gdb commands before the user's: source paths, the kernel's scripts, the stub."""
    obj = vmlinux.parent
    source = (obj / "source").resolve() if (obj / "source").exists() else obj
    commands = [f"set substitute-path {SRC_PREFIX} {source}", f"set substitute-path {OBJ_PREFIX} {obj}",
                f"directory {source}"]
    scripts = obj / "vmlinux-gdb.py"
    if scripts.is_file():
        commands += [f"add-auto-load-safe-path {obj}", f"source {scripts}"]
    return [*commands, f"target remote 127.0.0.1:{port}"]


def gdb_argv(info: dict[str, Any], vmlinux: Path | None, batch: Path | None = None) -> list[str]:
    """The gdb command line for a VM record ``info`` (booted with ``--gdb``)."""
    port = info.get("gdb_port")
    name = info.get("name", "default")
    if not port:
        raise KernlabError(f"VM {name} was booted without a gdb stub",
                           f"boot it with one: `invoke vm.down --name {name}` then "
                           f"`invoke vm.up --kernel VERSION --name {name} --gdb`")
    if vmlinux is None or not vmlinux.is_file():
        raise KernlabError(f"VM {name}'s kernel has no vmlinux here",
                           "rebuild it: `invoke build-kernel --version VERSION`")
    gdb = require_tool("gdb", "gdb")
    argv = [gdb, "-q", "-nx", str(vmlinux)]
    for command in setup_commands(vmlinux, int(port)):
        argv += ["-ex", command]
    return argv + (["-batch", "-x", str(batch)] if batch else [])


def missing(vmlinux: Path) -> str:
    """What gdb lacks on this build ('' when nothing): DWARF, the kernel's gdb scripts."""
    lacks = []
    if not has_dwarf(vmlinux):
        lacks.append("no DWARF in vmlinux (CONFIG_DEBUG_INFO is off): gdb has symbols only, no "
                     "source lines, types or arguments")
    if not (vmlinux.parent / "vmlinux-gdb.py").is_file():
        lacks.append("no vmlinux-gdb.py (CONFIG_GDB_SCRIPTS is off): no lx-symbols, lx-dmesg, lx-ps")
    return "; ".join(lacks)


def stub_port(vm: Any) -> int:
    """The port of ``vm``'s gdbstub; a VM booted without one is refused, naming the fix."""
    port = vm.info.data.get("gdb_port")
    if not port:
        raise KernlabError(f"VM {vm.name} already runs, without a gdb stub",
                           f"stop it (`invoke vm.down --name {vm.name}`) so that --gdb boots it "
                           "with one, or give another --vm-name")
    return int(port)


def wait_for_debugger(vm: Any, poll: float = 0.2) -> None:
    """Until a debugger has attached to ``vm``'s gdbstub and let the guest run on
    (`run-experiment --gdb`: the workload starts then, its breakpoints set). QEMU pauses the
    guest when a debugger attaches; running with one attached, twice in a row, is the sign."""
    port = stub_port(vm)
    reporter().note(f"waiting for a debugger on 127.0.0.1:{port} before the workload: "
                    f"`invoke vm.gdb --name {vm.name}` in another terminal, set breakpoints, then "
                    "`continue` (Ctrl-C stops the run)")
    started, going = time.monotonic(), 0
    while going < 2:
        if not vm.alive():
            raise health.GuestDown(vm, health.exited(vm))
        interrupt.check()
        going = going + 1 if qemu.gdb_attached(port) and health.qmp_status(vm) == "running" else 0
        time.sleep(poll)
    reporter().note(f"debugger attached after {time.monotonic() - started:.1f}s: running the workload")
