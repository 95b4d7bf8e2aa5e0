"""Runs an experiment's steps inside the guest (copied there; standard library only).

``python3 driver.py plan.json`` clears the trace buffer, starts a bounded
trace_pipe capture (size and time limits, written to ``out/trace.raw``), runs the
steps (background steps wait for their ``ready`` line and are stopped with their
signal after the foreground steps), then writes ``out/steps.json`` and
``out/driver.json``. Everything goes to files as it happens, so a run cut short
still leaves what it collected. The exit status is 0 unless the driver itself broke.

A ``bpftrace`` step (a plan step with a ``bpftrace`` entry) runs ``bpftrace -B line -f
json``: its JSON lines become text in the step's log (printf output as printed, maps as
bpftrace prints them) and its maps go to ``out/bpftrace/<name>.json``. In the background
it is ready only once every probe is attached: bpftrace prints "Attaching N probes..."
and runs BEGIN *before* it attaches the probes (slow under TCG), so the driver puts a
sentinel kprobe first in the program (bpftrace attaches kprobes last, in reverse order, so
the first one declared is the very last attached) on a function getppid(2) calls, filtered
to the driver's pid, calls getppid until the sentinel prints, and only then goes on.

SIGTERM (what the host sends when its user presses Ctrl-C) stops the run: the running
step is killed, background steps get their stop signal and a second, the reason is
"interrupted". Each step runs in its own process group, listed in ``out/pgids``, so
the host can kill what is left if the driver itself cannot finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}
STOP_GRACE = 30.0
# bpftrace prints its maps, then detaches its probes: on 4.15 under TCG with other guests
# beside it, that took over 30 s once (a CI run; SIGKILL then lost the maps). So a bpftrace
# step is not given a fixed time after SIGINT: it is watched (``StopWatch``) and waited for
# while it makes progress (output, maps, busy CPU, its probes leaving kprobe_events), up to
# BPFTRACE_STOP_GRACE; once nothing moves for BPFTRACE_STALL seconds it gets SIGINT again
# (4.15's bpftrace sometimes ignores the first), and after another stall SIGKILL, which the
# step's record says (``killed``) and the bundle reports first.
BPFTRACE_STOP_GRACE = 180.0
BPFTRACE_STALL = 15.0
INTERRUPT_GRACE = 1.0  # after SIGTERM (the host's Ctrl-C): a background step's time to stop
DRAIN = 0.5  # after the last step: background steps' own output (bpftrace polls its buffers)
CAPTURE_DRAIN = 0.1  # after they stopped: events still on their way into the ring buffer
PGIDS = "pgids"  # out/pgids: one step process group a line, for the host to kill if we cannot


def ensure_tracefs() -> str:
    """The tracefs directory, mounting tracefs and debugfs where missing."""
    if not os.path.exists("/sys/kernel/debug/tracing"):
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"],
                       stderr=subprocess.DEVNULL, check=False)
    if not os.path.exists("/sys/kernel/tracing/trace"):
        subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                       stderr=subprocess.DEVNULL, check=False)
    for base in TRACEFS:
        if os.path.exists(os.path.join(base, "trace_pipe")):
            return base
    raise SystemExit("kernlab driver: no tracefs (is CONFIG_FTRACE set?)")


class Capture:
    """Copy trace_pipe to ``out/trace.raw`` in a thread, up to a size and a time limit."""

    def __init__(self, pipe: str, out: str, max_bytes: int, max_seconds: float) -> None:
        self.pipe, self.out = pipe, out
        self.max_bytes = max_bytes
        self.deadline = time.monotonic() + max_seconds
        self.size = 0
        self.why = ""
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._copy, daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        fd = os.open(self.pipe, os.O_RDONLY | os.O_NONBLOCK)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        try:
            with open(self.out, "wb", buffering=0) as out:
                while not self.why:
                    self._pump(fd, poller, out)
        finally:
            os.close(fd)

    def _pump(self, fd: int, poller: select.poll, out) -> None:
        if self.size >= self.max_bytes:
            self.why = "size limit"
            return
        if time.monotonic() > self.deadline:
            self.why = "time limit"
            return
        ready = poller.poll(100)
        try:
            data = os.read(fd, min(65536, self.max_bytes - self.size)) if ready else b""
        except BlockingIOError:
            data = b""
        if data:
            out.write(data)
            self.size += len(data)
        elif self.stopping.is_set():
            self.why = "driver"  # stopped and drained
        elif ready:
            time.sleep(0.05)  # a FIFO stand-in without a writer reports EOF

    def stop(self) -> dict:
        self.stopping.set()
        self.thread.join(timeout=10)
        if not self.why:
            self.why = "driver"
        return {"bytes": self.size, "truncated": self.why == "size limit",
                "stopped_by": self.why}


def record_comms(base: str, on: bool) -> None:
    """Make the tracer remember task names (trace lines show ``<...>`` otherwise).

    Enabling any event arms comm recording; sched_switch with a filter that never
    matches adds nothing to the trace.
    """
    event = os.path.join(base, "events", "sched", "sched_switch")
    if not os.path.isdir(event):
        return
    with contextlib.suppress(OSError):
        with open(os.path.join(event, "filter"), "w") as handle:
            handle.write("common_pid < 0" if on else "0")
        with open(os.path.join(event, "enable"), "w") as handle:
            handle.write("1" if on else "0")


def save_comms(base: str, outdir: str) -> None:
    """pid -> comm as the tracer knows it, for filtering ``<...>`` lines on the host."""
    with contextlib.suppress(OSError), open(os.path.join(base, "saved_cmdlines"), "rb") as src, \
                open(os.path.join(outdir, "saved_cmdlines"), "wb") as dst:
        dst.write(src.read())


class Step:
    """One shell command with its output in ``out/steps/<name>.log``."""

    def __init__(self, spec: dict, outdir: str, env: dict) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.log = os.path.join(outdir, "steps", self.name + ".log")
        open(self.log, "wb").close()  # appended to: a bpftrace step's output has two writers
        self.handle = open(self.log, "ab")  # noqa: SIM115 (closed in finish)
        self.started = time.monotonic()
        self.bpftrace: Bpftrace | None = None
        if spec.get("bpftrace"):
            self._start_bpftrace(spec, outdir, env)
        else:
            self.proc = subprocess.Popen(["bash", "-c", spec["cmd"]], stdout=self.handle,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True,
                                         preexec_fn=_stop_signals_default)
        self.record = {"name": self.name, "cmd": spec["cmd"], "pid": self.proc.pid,
                       "background": spec.get("background", False), "exit": None,
                       "timed_out": False, "stopped": False, "killed": "", "seconds": None,
                       "note": ""}

    def _start_bpftrace(self, spec: dict, outdir: str, env: dict) -> None:
        """bpftrace -B line -f json on the program (with the sentinel when in the background)."""
        conf = spec["bpftrace"]
        folder = os.path.join(outdir, "bpftrace")
        os.makedirs(folder, exist_ok=True)
        program = conf["program"]
        if spec.get("background"):
            program = with_sentinel(program, SENTINEL_SYMBOL, os.getpid())
        script = os.path.join(folder, self.name + ".bt")
        with open(script, "w") as handle:
            handle.write(program)
        argv = ["bpftrace", "-B", "line", "-f", "json"]
        if conf.get("command"):
            command, note = absolute_command(conf["command"], env.get("PATH", os.defpath))
            argv += ["-c", command]
            self.handle.write(note.encode())
            self.handle.flush()
        self.proc = subprocess.Popen([*argv, script], stdout=subprocess.PIPE, stderr=self.handle,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=_stop_signals_default)
        self.bpftrace = Bpftrace(self.proc, self.log, os.path.join(folder, self.name + ".json"),
                                 sentinel=bool(spec.get("background")))

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            return None

    def finish(self, code: int | None) -> None:
        if self.bpftrace is not None:
            self.bpftrace.finish()
        self.record["exit"] = code
        self.record["seconds"] = round(time.monotonic() - self.started, 3)
        self.handle.close()

    def kill(self, sig: int, grace: float) -> int | None:
        """Send ``sig`` to the step's process group; SIGKILL after ``grace`` seconds."""
        self.signal(sig)
        code = self.wait(grace)
        if code is None:
            self.signal(signal.SIGKILL)
            name = signal.Signals(sig).name
            self.record["killed"] = f"did not stop within {grace:.0f}s of {name}; SIGKILLed"
            code = self.wait(5)
        return code

    def stop_watched(self, tracefs: str, limit: float, stall: float) -> int | None:
        """SIGINT a bpftrace step and wait while it makes progress (``StopWatch``): INT again
        after a stall, SIGKILL after a second one or ``limit`` seconds; the record says why."""
        watch = StopWatch(self, tracefs)
        self.signal(signal.SIGINT)
        resent = False
        while True:
            code = self.wait(0.5)
            if code is not None:
                return code
            still = watch.still_for()
            if still >= stall and not resent:
                resent = True
                self.signal(signal.SIGINT)
                watch.moved("SIGINT sent again")
            elif still >= stall or watch.elapsed() >= limit:
                self.record["killed"] = watch.verdict(still >= stall, stall)
                self.signal(signal.SIGKILL)
                return self.wait(5)

    def wait_ready(self, pattern: str, timeout: float) -> str:
        """'' once ``pattern`` shows in the log; else why not."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log, "rb") as handle:
                if regex.search(handle.read().decode(errors="replace")):
                    return ""
            if self.proc.poll() is not None:
                return f"exited {self.proc.returncode} before printing {pattern!r}"
            time.sleep(0.02)
        return f"not ready after {timeout:.0f}s (no {pattern!r} in its output)"


def absolute_command(command: str, path: str) -> tuple[str, str]:
    """``command`` with a bare program name replaced by its path on ``path``, and a note for
    the log: bpftrace -c refuses a bare name that ``PATH`` finds twice (``/bin/dd`` and
    ``/usr/bin/dd`` on a merged-/usr Debian: "must refer to a unique binary")."""
    words = command.split(" ")
    if not words[0] or "/" in words[0]:
        return command, ""
    found = shutil.which(words[0], path=path)
    if found is None:
        return command, ""
    return " ".join([found, *words[1:]]), f"kernlab: command {words[0]} is {found}\n"


class StopWatch:
    """Whether a stopping step still makes progress: its output (bpftrace's log and maps),
    its CPU time (detaching probes is work in the kernel) and the probes kernlab can see in
    tracefs (``kprobe_events``/``uprobe_events`` shrink as 4.15's bpftrace detaches)."""

    BUSY = 0.1  # share of a CPU that counts as work (an idle poll loop uses far less)

    def __init__(self, step: Step, tracefs: str) -> None:
        self.step, self.tracefs = step, tracefs
        self.started = self.last = time.monotonic()
        self.seen = self._sample()
        self.cpu = (self.started, _cpu_ticks(step.proc.pid))
        self.notes: list[str] = []

    def _sample(self) -> tuple:
        events = 0
        for name in ("kprobe_events", "uprobe_events"):
            with contextlib.suppress(OSError), open(os.path.join(self.tracefs, name), "rb") as handle:
                events += handle.read().count(b"\n")
        maps = len(self.step.bpftrace.record["maps"]) if self.step.bpftrace else 0
        return (_size(self.step.log), maps, events)

    def _busy(self) -> bool:
        """Whether it used at least BUSY of a CPU since the last look (detaching is kernel work)."""
        now, ticks = time.monotonic(), _cpu_ticks(self.step.proc.pid)
        since, before = self.cpu
        if now - since < 1.0:
            return False
        self.cpu = (now, ticks)
        return (ticks - before) / CLOCK_TICKS >= self.BUSY * (now - since)

    def moved(self, note: str = "") -> None:
        self.last = time.monotonic()
        if note:
            self.notes.append(f"{note} after {self.elapsed():.0f}s")

    def still_for(self) -> float:
        """Seconds since anything moved (0 now if something did)."""
        now = self._sample()
        if now != self.seen or self._busy():
            self.seen = now
            self.moved()
        return time.monotonic() - self.last

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def verdict(self, stalled: bool, stall: float) -> str:
        """Why the step is SIGKILLed, for its record and the bundle."""
        _log, maps, events = self.seen
        shown = f"maps printed: {maps}" if maps else "no maps printed"
        how = f"no progress for {stall:.0f}s" if stalled else "still busy at the limit"
        return (f"did not stop on SIGINT ({how}: {shown}, {events} probe(s) still in tracefs"
                + "".join(f"; {n}" for n in self.notes) + f"); SIGKILLed after {self.elapsed():.0f}s")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[-1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return 0


SENTINEL = "kernlab-probes-attached"
# getppid(2) reaches it on every kernel from 4.15 to 6.1, and ftrace can trace it (the
# __x64_sys_* wrappers are not in 6.1's available_filter_functions: bpftrace warns on them).
SENTINEL_SYMBOL = "__task_pid_nr_ns"
PROBE_START = re.compile(
    r"^[ \t]*(BEGIN|END|(kprobe|kretprobe|uprobe|uretprobe|tracepoint|usdt|profile|interval|"
    r"software|hardware|watchpoint|asyncwatchpoint|kfunc|kretfunc|iter|rawtracepoint|"
    r"k|kr|u|ur|t|U|p|i|s|h|w|f|fr|rt):)", re.M)


def with_sentinel(program: str, symbol: str, pid: int) -> str:
    """``program`` with the sentinel probe before its first probe (after includes and
    struct definitions, which bpftrace wants first)."""
    sentinel = (f'kprobe:{symbol} /pid == {pid}/ {{ printf("{SENTINEL}\\n"); }}\n')
    match = PROBE_START.search(program)
    at = match.start() if match else len(program)
    return program[:at] + sentinel + program[at:]


def human(number: int) -> str:
    """bpftrace's bucket bounds: 4096 -> 4K, 1048576 -> 1M."""
    for power, suffix in ((4, "T"), (3, "G"), (2, "M"), (1, "K")):
        unit = 1024 ** power
        if number and number % unit == 0:
            return f"{number // unit}{suffix}"
    return str(number)


def hist_lines(name: str, buckets: list) -> list[str]:
    """A ``hist``/``lhist`` in bpftrace's text form (what kernlab's renderer reads)."""
    lines = [f"{name}:"]
    top = max((b.get("count", 0) for b in buckets), default=0) or 1
    for bucket in buckets:
        low, high = bucket.get("min"), bucket.get("max")
        if low is None:
            label = f"(..., {human(high + 1)})"
        elif low == high:
            label = f"[{human(low)}]"
        elif high is None:
            label = f"[{human(low)}, ...)"
        else:
            label = f"[{human(low)}, {human(high + 1)})"
        count = bucket.get("count", 0)
        bar = "@" * (52 * count // top)
        lines.append(f"{label:<20}{count:>8} |{bar:<52}|")
    return [*lines, ""]


def json_to_text(event: dict) -> str:
    """One bpftrace ``-f json`` event as the text bpftrace would have printed."""
    kind, data = event.get("type"), event.get("data")
    if kind == "attached_probes":
        return f"Attaching {data.get('probes')} probes...\n"
    if kind == "lost_events":
        return f"Lost {data} events\n"
    if kind in ("map", "stats", "hist") and isinstance(data, dict):
        lines: list[str] = []
        for name, value in data.items():
            keyed = (isinstance(value, dict) and kind != "stats") or \
                (kind == "stats" and isinstance(value, dict) and "count" not in value)
            items = value.items() if keyed else [("", value)]
            for key, each in items:
                label = f"{name}[{key}]" if keyed else name
                if kind == "hist":
                    lines += hist_lines(label, each)
                elif isinstance(each, dict):
                    lines.append(f"{label}: " + ", ".join(f"{k} {v}" for k, v in each.items()))
                else:
                    lines.append(f"{label}: {each}")
        return "\n".join(lines) + "\n"
    return data if isinstance(data, str) else json.dumps(data) + "\n"


class Bpftrace:
    """Turns a bpftrace step's JSON stdout into its log's text and a record of its maps."""

    def __init__(self, proc: subprocess.Popen, log: str, out: str, sentinel: bool) -> None:
        self.proc, self.log, self.out, self.sentinel = proc, log, out, sentinel
        self.attached = threading.Event()  # "Attaching N probes..." seen
        self.ready = threading.Event()  # the sentinel printed: every probe is attached
        self.record: dict = {"probes": None, "maps": {}, "lost_events": 0, "other": []}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.log, "ab", buffering=0) as log:
            for raw in self.proc.stdout:
                log.write(self._text(raw.decode(errors="replace")).encode())

    def _text(self, line: str) -> str:
        try:
            event = json.loads(line)
        except ValueError:
            return line if line.strip() else ""
        if not isinstance(event, dict):
            return line
        kind, data = event.get("type"), event.get("data")
        if kind == "printf" and isinstance(data, str) and SENTINEL in data:
            if not self.ready.is_set():
                self.ready.set()
                return f"kernlab: all {self.record['probes']} probes attached\n"
            return ""
        if kind == "attached_probes" and isinstance(data, dict):
            self.record["probes"] = int(data.get("probes", 0)) - self.sentinel
            self.attached.set()
            return f"Attaching {self.record['probes']} probes...\n"
        if kind in ("map", "hist", "stats") and isinstance(data, dict):
            self.record["maps"].update({name: {"type": kind, "value": value}
                                        for name, value in data.items()})
        elif kind == "lost_events":
            self.record["lost_events"] += int(data or 0)
        elif kind not in ("printf", "time"):
            self.record["other"].append(event)
        return json_to_text(event)

    def wait_attached(self, timeout: float) -> str:
        """'' once every probe is attached (the sentinel fired); else why not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.wait(0.05):
                return ""
            if self.attached.is_set():
                os.getppid()  # fires the sentinel once it is attached
            if self.proc.poll() is not None:
                self.thread.join(timeout=2)
                if self.ready.is_set():
                    return ""
                return f"bpftrace exited {self.proc.returncode} before its probes were attached"
        return f"bpftrace's probes were not all attached after {timeout:.0f}s"

    def finish(self) -> None:
        self.thread.join(timeout=10)
        write(self.out, self.record)


def _stop_signals_default() -> None:
    """In a step's process: INT and TERM at their defaults, whatever the driver inherited.

    Steps are stopped with these signals; a shell started with SIGINT ignored (a
    background job's lot) could neither trap it nor die of it, and would be SIGKILLed.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # not held_signals' mask


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def held_signals():
    """Hold the stop signals (delivered when the block ends) while a step starts and is
    recorded: a stop between its start and its record would leave it unknown, unstopped."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def run_foreground(step: Step, deadline: float) -> str:
    limit = min(step.spec.get("timeout", 60), deadline - time.monotonic())
    code = step.wait(limit)
    if code is None:
        step.record["timed_out"] = True
        code = step.kill(signal.SIGTERM, 5)
        step.finish(code)
        return f"step {step.name} timed out after {limit:.0f}s"
    step.finish(code)
    return ""


def run_plan(plan: dict) -> dict:
    outdir = plan["outdir"]
    os.makedirs(os.path.join(outdir, "steps"), exist_ok=True)
    started = time.monotonic()
    deadline = started + plan.get("timeout", 600)
    env = {**os.environ, **plan.get("env", {}), "PYTHONUNBUFFERED": "1"}
    status = {"status": "running", "reason": "", "tracefs": "", "capture": None}
    write(os.path.join(outdir, "driver.json"), status)
    capture = None
    trace = plan.get("trace") or {}
    if trace.get("enabled", True):
        base = trace.get("dir") or ensure_tracefs()  # "dir": a stand-in, for tests
        status["tracefs"] = base
        record_comms(base, True)
        with open(os.path.join(base, "trace"), "w"):
            pass  # opening with O_TRUNC clears the ring buffer
        capture = Capture(os.path.join(base, "trace_pipe"), os.path.join(outdir, "trace.raw"),
                          trace.get("max_bytes", 8 << 20), trace.get("max_seconds", 600))
    elif not trace.get("dir"):
        ensure_tracefs()
    steps: list[Step] = []
    background: list[Step] = []
    reason = ""
    try:
        for spec in plan["steps"]:
            if time.monotonic() > deadline:
                reason = f"run timed out after {plan.get('timeout', 600):.0f}s"
                break
            with held_signals():  # a Ctrl-C now finds the step recorded, never half-started
                step = Step(spec, outdir, env)
                steps.append(step)
                with open(os.path.join(outdir, PGIDS), "a") as pgids:
                    pgids.write(f"{step.proc.pid}\n")
                write_steps(outdir, steps)
            if spec.get("background"):
                background.append(step)
                if step.bpftrace is not None:
                    why = step.bpftrace.wait_attached(min(spec.get("ready_timeout", 180),
                                                          deadline - time.monotonic()))
                    if why:
                        step.record["note"] = why
                        reason = f"background step {step.name}: {why}"
                        break
                elif spec.get("ready"):
                    why = step.wait_ready(spec["ready"], min(spec.get("ready_timeout", 180),
                                                             deadline - time.monotonic()))
                    if why:
                        step.record["note"] = why
                        reason = f"background step {step.name} {why}"
                        break
                continue
            reason = run_foreground(step, deadline)
            if reason:
                break
        time.sleep(plan.get("drain", DRAIN))
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        for step in reversed(background):
            if step.record["exit"] is not None:
                continue
            code = step.proc.poll()
            if code is None:
                step.record["stopped"] = True
                if step.bpftrace is not None and reason != "interrupted":
                    tracefs = status["tracefs"] or next((b for b in TRACEFS if os.path.isdir(b)), "")
                    code = step.stop_watched(tracefs, BPFTRACE_STOP_GRACE, BPFTRACE_STALL)
                else:
                    code = step.kill(SIGNALS[step.spec.get("stop_signal", "INT")],
                                     stop_grace(step, reason == "interrupted"))
            step.finish(code)
        for step in steps:
            if step.record["exit"] is None:
                code = step.proc.poll()
                step.finish(step.kill(signal.SIGKILL, 5) if code is None else code)
        write_steps(outdir, steps)
        if reason == "interrupted":  # the host gives us seconds: the records before the slow teardown
            write(os.path.join(outdir, "driver.json"), {**status, "status": "failed", "reason": reason})
        if capture:
            time.sleep(CAPTURE_DRAIN)  # Capture.stop then reads the ring buffer until it is empty
            status["capture"] = capture.stop()
            save_comms(status["tracefs"], outdir)
            record_comms(status["tracefs"], False)
    status.update(status="failed" if reason else "done", reason=reason,
                  seconds=round(time.monotonic() - started, 3))
    write(os.path.join(outdir, "driver.json"), status)
    return status


def stop_grace(step: Step, interrupted: bool) -> float:
    """Seconds a background step gets after its stop signal, before SIGKILL (a bpftrace step
    not interrupted is watched instead: ``Step.stop_watched``)."""
    return INTERRUPT_GRACE if interrupted else STOP_GRACE


def write(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


def write_steps(outdir: str, steps: list[Step]) -> None:
    write(os.path.join(outdir, "steps.json"), {"steps": [s.record for s in steps]})


def main(argv: list[str]) -> int:
    with open(argv[1]) as handle:
        plan = json.load(handle)
    os.chdir(plan["workdir"])
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # the host's Ctrl-C: stop the steps
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    status = run_plan(plan)
    print(json.dumps(status))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
