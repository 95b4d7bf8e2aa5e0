"""Locks between kernlab processes: flock(2) on a lock file.

The kernel drops a flock when its holder exits, however it exits (Ctrl-C, kill -9,
a crash), so a lock is never stale and nothing has to be cleaned up before the next
run. The holder writes who it is into the lock file (pid, command, since when); a
second process that finds the lock taken names that holder, then waits for it or
refuses. The holder removes the file as it lets go; a waiter that then finds it has
locked a removed file starts over on the path's new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter


def command_line() -> str:
    """This process's command line as a user would have typed it (``invoke build-kernel ...``)."""
    argv = list(sys.argv) or ["python"]
    argv[0] = Path(argv[0]).name
    if argv[0] in ("__main__.py", "-m") or argv[0].startswith("python"):
        argv[0] = "invoke"
    return " ".join(argv)[:200]


def holder_of(fd: int) -> str:
    """Who holds the lock behind ``fd``, from what the holder wrote: ``pid 12 (invoke ...)``."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        since = time.strftime("%H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {int(info['pid'])} ({info['command']}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another kernlab process"


def _claim(fd: int, what: str) -> None:
    """Write this process's identity into the lock file it now holds."""
    data = json.dumps({"pid": os.getpid(), "command": command_line(), "what": what,
                       "since": time.time()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


@contextlib.contextmanager
def exclusive(path: Path, what: str, *, wait: bool = True, fix: str = "") -> Iterator[None]:
    """Hold the lock ``path`` for ``what`` (``download of linux-6.1.tar.xz``) inside the block.

    Taken by another process: say whose it is and wait (``wait``), or refuse with a
    one-line error whose fix is ``fix``. Ctrl-C while waiting ends the wait. The holder
    removes the file (and an empty locks directory) when it is done; one left by a killed
    holder is simply taken by the next process.
    """
    fd = _acquire(path, what, wait, fix)
    try:
        _claim(fd, what)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still ours: whoever waits on this inode sees it gone and retries
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty
        os.close(fd)  # drops the lock


def _acquire(path: Path, what: str, wait: bool, fix: str) -> int:
    """An open descriptor of ``path`` holding its flock (the file still at ``path``)."""
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:  # the directory went with another holder's release
            continue
        try:
            _lock(fd, what, wait, fix)
            if _same_file(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # locked a file its holder removed meanwhile: take the new one


def _lock(fd: int, what: str, wait: bool, fix: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = holder_of(fd)
    if not wait:
        raise KernlabError(f"{what} is in progress in {holder}",
                           fix or "wait for it to finish, or stop that process")
    reporter().note(f"{what} is in progress in {holder}: waiting for it (Ctrl-C stops waiting)")
    started = time.monotonic()
    fcntl.flock(fd, fcntl.LOCK_EX)
    reporter().note(f"{what}: the other process is done after {time.monotonic() - started:.1f}s")


def holder(path: Path) -> str | None:
    """Who holds the lock ``path`` now (as ``holder_of`` says it); None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # free (the close below lets go at once)
    except BlockingIOError:
        return holder_of(fd)
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def locks_dir(base: Path) -> Path:
    """The directory of lock files under ``base`` (a work area or the cache)."""
    return base / "locks"
