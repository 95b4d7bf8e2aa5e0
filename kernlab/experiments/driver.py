"""Runs an experiment's steps inside the guest (copied there; standard library only).

``python3 driver.py plan.json`` clears the trace buffer, starts a bounded
trace_pipe capture (size and time limits, written to ``out/trace.raw``), runs the
steps (background steps wait for their ``ready`` line and are stopped with their
signal after the foreground steps), then writes ``out/steps.json`` and
``out/driver.json``. Everything goes to files as it happens, so a run cut short
still leaves what it collected. The exit status is 0 unless the driver itself broke.

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
import signal
import subprocess
import sys
import threading
import time

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "KILL": signal.SIGKILL}
STOP_GRACE = 30.0
INTERRUPT_GRACE = 1.0  # after SIGTERM (the host's Ctrl-C): a background step's time to stop
DRAIN = 0.5
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
        self.handle = open(self.log, "wb")  # noqa: SIM115 (closed in finish)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["bash", "-c", spec["cmd"]], stdout=self.handle,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True, preexec_fn=_stop_signals_default)
        self.record = {"name": self.name, "cmd": spec["cmd"], "pid": self.proc.pid,
                       "background": spec.get("background", False), "exit": None,
                       "timed_out": False, "stopped": False, "seconds": None, "note": ""}

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            return None

    def finish(self, code: int | None) -> None:
        self.record["exit"] = code
        self.record["seconds"] = round(time.monotonic() - self.started, 3)
        self.handle.close()

    def kill(self, sig: int, grace: float) -> int | None:
        """Send ``sig`` to the step's process group; SIGKILL after ``grace`` seconds."""
        self.signal(sig)
        code = self.wait(grace)
        if code is None:
            self.signal(signal.SIGKILL)
            code = self.wait(5)
        return code

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
            time.sleep(0.1)
        return f"not ready after {timeout:.0f}s (no {pattern!r} in its output)"


def _stop_signals_default() -> None:
    """In a step's process: INT and TERM at their defaults, whatever the driver inherited.

    Steps are stopped with these signals; a shell started with SIGINT ignored (a
    background job's lot) could neither trap it nor die of it, and would be SIGKILLed.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
            step = Step(spec, outdir, env)
            steps.append(step)
            with open(os.path.join(outdir, PGIDS), "a") as pgids:
                pgids.write(f"{step.proc.pid}\n")
            write_steps(outdir, steps)
            if spec.get("background"):
                background.append(step)
                if spec.get("ready"):
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
        time.sleep(DRAIN)
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        grace = INTERRUPT_GRACE if reason == "interrupted" else STOP_GRACE
        for step in reversed(background):
            if step.record["exit"] is not None:
                continue
            code = step.proc.poll()
            if code is None:
                step.record["stopped"] = True
                code = step.kill(SIGNALS[step.spec.get("stop_signal", "INT")], grace)
            step.finish(code)
        for step in steps:
            if step.record["exit"] is None:
                code = step.proc.poll()
                step.finish(step.kill(signal.SIGKILL, 5) if code is None else code)
        write_steps(outdir, steps)
        if reason == "interrupted":  # the host gives us seconds: the records before the slow teardown
            write(os.path.join(outdir, "driver.json"), {**status, "status": "failed", "reason": reason})
        if capture:
            time.sleep(DRAIN if reason != "interrupted" else 0.1)
            status["capture"] = capture.stop()
            save_comms(status["tracefs"], outdir)
            record_comms(status["tracefs"], False)
    status.update(status="failed" if reason else "done", reason=reason,
                  seconds=round(time.monotonic() - started, 3))
    write(os.path.join(outdir, "driver.json"), status)
    return status


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
