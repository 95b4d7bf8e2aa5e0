"""`invoke probes --live`: boot each kernel and confirm every static verdict by really
registering and removing the probe through tracefs (``kprobe_events``, a trace event's
``enable``). A live result that disagrees with the static verdict is an atlas defect.

One guest command per kernel runs ``GUEST_SCRIPT`` (Python, standard library) with the
probes as JSON; it prints one JSON line per probe (registered or not, errno, the kernel's
last log line on a refusal).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from typing import Any

from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.guest import remote
from kernlab.guest.image import find_image
from kernlab.guest.vm import Vm, claim, release, start_vm
from kernlab.probes.atlas import Row

GUEST_SCRIPT = r"""
import json, os, struct, subprocess, sys
T = next((p for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
          if os.path.exists(p + "/kprobe_events")), None)
if T is None and os.path.isdir("/sys/kernel/debug"):
    subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"])
    T = "/sys/kernel/debug/tracing"

def write(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)

def logs():
    dmesg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.strip().splitlines()
    try:
        with open(T + "/error_log") as f:
            errors = f.read().strip().splitlines()
    except OSError:
        errors = []
    return dmesg, errors

def new_lines(before):
    after = logs()
    fresh = [l for l in after[0][len(before[0]):] + after[1][len(before[1]):] if l.strip()]
    return " | ".join(l.split("] ", 1)[-1].strip() for l in fresh)[:300]

def file_offset(binary, name):  # the file offset of a function in an ELF64 binary (uprobe_events)
    data = open(binary, "rb").read()
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + k * shentsize) for k in range(shnum)]
    for sh in sections:
        if sh[1] not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        strtab = sections[sh[6]]
        for at in range(sh[4], sh[4] + sh[5], 24):
            st_name, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, at)
            end = data.index(b"\0", strtab[4] + st_name)
            if value and data[strtab[4] + st_name:end].decode() == name:
                for k in range(phnum):
                    head = phoff + k * phentsize
                    kind, _, off, vaddr, _, filesz = struct.unpack_from("<IIQQQQ", data, head)
                    if kind == 1 and vaddr <= value < vaddr + filesz:
                        return value - vaddr + off
    raise OSError(2, "no symbol %s in %s" % (name, binary))

for i, item in enumerate(json.loads(sys.argv[1])):
    ok, error, log = False, "", ""
    before = logs()
    try:
        if item["kind"] in ("kprobe", "kretprobe"):
            event = "kl_atlas_%d" % i
            write(T + "/kprobe_events", "%s:%s %s\n" % ("r" if item["kind"] == "kretprobe" else "p",
                                                        event, item["symbol"]))
            ok = True
            write(T + "/kprobe_events", "-:%s\n" % event)
        elif item["kind"] == "tracepoint":
            enable = "%s/events/%s/enable" % (T, item["symbol"].replace(":", "/"))
            if not os.path.exists(enable):
                raise FileNotFoundError(2, "no such trace event", enable)
            write(enable, "1")
            ok = True
            write(enable, "0")
        else:
            binary, func = item["symbol"].rsplit(":", 1)
            event = "kl_atlas_u%d" % i
            write(T + "/uprobe_events", "p:%s %s:0x%x\n" % (event, binary, file_offset(binary, func)))
            ok = True
            write(T + "/uprobe_events", "-:%s\n" % event)
    except (OSError, ValueError, struct.error) as e:
        error = "%s (errno %d)" % (e.strerror, e.errno) if isinstance(e, OSError) else str(e)
        log = new_lines(before)
    print(json.dumps({"index": i, "ok": ok, "error": error, "log": log}), flush=True)
"""


@dataclass
class LiveResult:
    target: str
    kernel: str
    symbol: str  # what was registered
    static: str  # the static verdict, as shown
    registered: bool | None  # None: not checked live
    error: str = ""
    log: str = ""

    @property
    def agrees(self) -> bool:
        return self.registered is None or self.registered == (self.static != "not attachable")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "agrees": self.agrees}


def _symbol(row: Row) -> str:
    """The name to register: the static answer's name, else the target's own."""
    if row.use:
        return row.use
    return row.target.split(":", 1)[1] if row.target.startswith("kretprobe:") else row.target


def _kind(row: Row) -> str:
    return row.target.split(":", 1)[0] if ":" in row.target else "kprobe"


def check_kernel(rows: list[Row], build: BuildRecord, vm_name: str) -> list[LiveResult]:
    """Boot ``build``, register and remove every row's probe, stop the VM."""
    items = [{"kind": _kind(r), "symbol": _symbol(r)} for r in rows]
    claim(vm_name)  # one command per VM: another on this name waits, naming it
    try:
        return _registered(rows, items, start_vm(build, find_image(), vm_name))
    finally:
        release(vm_name)


def _registered(rows: list[Row], items: list[dict], vm: Vm) -> list[LiveResult]:
    """Each row's probe registered and removed in ``vm``, which is stopped afterwards."""
    try:
        conn = remote.connect(vm)
        command = f"python3 -c {shlex.quote(GUEST_SCRIPT)} {shlex.quote(json.dumps(items))}"
        with reporter().step(f"register {len(items)} probes on {rows[0].kernel}"):
            done = remote.run(conn, command, timeout=120)
    finally:
        vm.stop()
    answers = {a["index"]: a for a in (json.loads(line) for line in done.stdout.splitlines()
                                       if line.startswith("{"))}
    results = []
    for index, (row, item) in enumerate(zip(rows, items, strict=True)):
        answer = answers.get(index, {"ok": False, "error": "no answer from the guest"})
        checked = answer.get("error") != "not checked live"
        results.append(LiveResult(row.target, row.kernel, item["symbol"], row.shown,
                                  bool(answer["ok"]) if checked else None,
                                  answer.get("error", ""), answer.get("log", "")))
    return results


def confirm(rows: list[Row], builds: dict[str, BuildRecord], vm_name: str) -> list[LiveResult]:
    """Every row checked in a booted guest, one boot per kernel."""
    results: list[LiveResult] = []
    for kernel, build in builds.items():
        mine = [r for r in rows if r.kernel == kernel]
        if mine:
            results += check_kernel(mine, build, vm_name)
    return results


def live_table(results: list[LiveResult]) -> str:
    """One line per probe: registered or refused (with the kernel's words), and agreement."""
    lines = ["live check (registered and removed through tracefs):"]
    for r in results:
        got = ("not checked" if r.registered is None else "registered" if r.registered
               else f"refused: {r.error}")
        if r.log and not r.registered:
            got += f" [{r.log}]"
        mark = "agrees" if r.agrees else "DEFECT: disagrees with the static verdict"
        lines.append(f"  {r.target} on {r.kernel} ({r.symbol}): {got}; static {r.static}: {mark}")
    return "\n".join(lines)
