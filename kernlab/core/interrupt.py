"""Ctrl-C during a run: the first one stops it; the cleanup after it is not cut short.

Inside ``scope()`` a SIGTERM or SIGHUP stops a run as Ctrl-C does (KeyboardInterrupt).
Once the code that caught the first KeyboardInterrupt calls ``hold()``, further Ctrl-C's
only say that kernlab is stopping: the guest's processes, the bundle and the VM are
dealt with in a few bounded seconds, and a second Ctrl-C must not leave QEMU running.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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
