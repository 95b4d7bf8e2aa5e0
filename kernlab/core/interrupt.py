"""Ctrl-C during a run: the first one stops it; the cleanup after it is not cut short.

Inside ``scope()`` a SIGTERM or SIGHUP stops a run as Ctrl-C does (KeyboardInterrupt).
Once the code that caught the first KeyboardInterrupt calls ``hold()``, further Ctrl-C's
only say that kernlab is stopping: the guest's processes, the bundle and the VM are
dealt with in a few bounded seconds, and a second Ctrl-C must not leave QEMU running.

Signals reach the main thread only. A run's worker threads (a suite's lanes) are stopped
with ``stop_threads()``: their next ``check()`` (kernlab.guest.remote polls it while a guest
command runs) raises KeyboardInterrupt there, so they stop the way the main thread does.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_STOP_THREADS = threading.Event()
_THREAD = threading.local()


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C; ``bundle`` (when there is one) holds what was collected."""

    def __init__(self, bundle: Any = None) -> None:
        super().__init__("interrupted")
        self.bundle = bundle


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _noted(_signum: int, _frame: Any) -> None:
    sys.stderr.write("kernlab: stopping: the guest's processes, the bundle, then the VM (a few seconds)\n")


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt inside; the old handlers after."""
    if not _main_thread():
        yield
        return
    _STOP_THREADS.clear()
    old = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        if sig == signal.SIGINT and old[sig] is signal.SIG_IGN:
            continue  # started with Ctrl-C ignored (nohup, a background job): keep it so
        signal.signal(sig, _raise)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def hold() -> None:
    """From now until the enclosing ``scope()`` ends, these signals only print a note."""
    if _main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _noted)


def stop_threads() -> None:
    """Ask the run's worker threads to stop as Ctrl-C stops the main thread."""
    _STOP_THREADS.set()


def clear_stop() -> None:
    """A new set of worker threads starts: an earlier set's stop (a lane that failed on the
    kernel before, its error already reported) must not stop these before they start."""
    _STOP_THREADS.clear()


def stopping() -> bool:
    """Whether ``stop_threads()`` was called in this ``scope()`` (take no more work)."""
    return _STOP_THREADS.is_set()


def check() -> None:
    """In a worker thread: raise KeyboardInterrupt once after ``stop_threads()`` was called;
    later calls pass, so the thread's cleanup (collect, stop) is not cut short, as ``hold``
    keeps the main thread's."""
    if _STOP_THREADS.is_set() and not _main_thread() and not getattr(_THREAD, "stopped", False):
        _THREAD.stopped = True
        raise KeyboardInterrupt("stopped with the rest of the run")
