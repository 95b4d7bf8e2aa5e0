"""Run external commands with every byte of output in a log file.

A failure raises ``KernlabError`` carrying the last lines of output and the log's
path, so the user never has to re-run a command to see why it failed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter

TAIL_LINES = 25


def require_tool(tool: str, package: str) -> str:
    """Path of ``tool`` or an error naming the package that provides it."""
    found = shutil.which(tool)
    if not found:
        raise KernlabError(
            f"{tool} is not installed",
            f"run `invoke setup` (or `apt-get install {package}`)",
        )
    return found


def run_logged(
    cmd: Sequence[str | os.PathLike[str]],
    log: Path,
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    fix: str = "",
    watch: Callable[[], Exception | None] | None = None,
) -> None:
    """Run ``cmd``, appending its combined output to ``log``.

    ``on_line`` sees each output line (for progress). Raises KernlabError with the
    output's tail and the log path when the command fails or times out. ``watch`` is
    called about once a second: an exception it returns stops the command and is raised.
    """
    argv = [str(c) for c in cmd]
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    full_env = {**os.environ, **(env or {})}
    with open(log, "a", buffering=1) as out:
        out.write(f"\n$ {shlex.join(argv)}\n# cwd={cwd or os.getcwd()} at {time.ctime()}\n")
        proc = subprocess.Popen(
            argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True,
            preexec_fn=die_with_parent,
        )
        fired = threading.Event()
        timer = _kill_after(proc, timeout, fired)
        watched = _watch(proc, watch)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                tail.append(line.rstrip("\n"))
                if on_line:
                    on_line(line.rstrip("\n"))
            code = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if timer:
                timer.cancel()
        timed_out = fired.is_set()
        out.write(f"# exit {code}\n")
    if watched:
        raise watched[0]
    if code != 0:
        cause = (f"{what} timed out after {timeout:.0f}s" if timed_out
                 else f"{what} failed (exit {code})")
        raise KernlabError(
            f"{cause}; full log: {log}",
            fix,
            details="\n".join(tail),
        )


def die_with_parent() -> None:
    """Popen preexec_fn: SIGTERM the child when kernlab dies, even by kill -9.

    A command runs in its own session (a Ctrl-C reaches kernlab, which stops it); without
    this, a killed kernlab would leave e.g. make writing into a build directory that the
    next run (its lock now free) builds into too.
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _watch(proc: subprocess.Popen, watch: Callable[[], Exception | None] | None) -> list[Exception]:
    """Call ``watch`` about once a second while ``proc`` runs; the first exception it returns
    is put in the returned list and the command's process group is stopped."""
    found: list[Exception] = []
    if watch is None:
        return found

    def loop() -> None:
        while proc.poll() is None:
            problem = watch()
            if problem is not None:
                found.append(problem)
                _kill_group(proc)
                return
            time.sleep(1.0)

    threading.Thread(target=loop, daemon=True).start()
    return found


def _kill_after(
    proc: subprocess.Popen, timeout: float | None, fired: threading.Event
) -> threading.Timer | None:
    if not timeout:
        return None

    def expire() -> None:
        fired.set()
        _kill_group(proc)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    return timer


def capture(cmd: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None) -> str:
    """Output of a short, quiet command (versions, queries); '' if it cannot run."""
    try:
        done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                              timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def status_from_make(line: str) -> None:
    """Show kbuild's "  CC      kernel/fork.o" lines as a moving status."""
    stripped = line.strip()
    if stripped[:2] in ("CC", "LD", "AR", "AS") or stripped.startswith(("HOSTCC", "CLANG", "GEN")):
        reporter().status(stripped)
