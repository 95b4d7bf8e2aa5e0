"""Progress events and the reporters that show them.

Stages never print: they call ``report.step()``, ``report.note()`` and
``report.status()``. The reporter turns these into a live line on a terminal and
into plain timestamped lines in CI (``CI`` set, ``KERNLAB_PLAIN=1`` or no tty).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator


def _plain_wanted() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("KERNLAB_PLAIN")) or not sys.stderr.isatty()


class Reporter:
    """Writes progress to stderr: steps, notes and a throttled status line."""

    def __init__(self, plain: bool | None = None) -> None:
        self.plain = _plain_wanted() if plain is None else plain
        self._lock = threading.Lock()
        self._status_at = 0.0
        self._status_len = 0
        self._depth = 0
        self.quiet = bool(os.environ.get("KERNLAB_QUIET"))

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._status_len and not self.plain:
                sys.stderr.write("\r" + " " * self._status_len + "\r")
                self._status_len = 0
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def note(self, message: str) -> None:
        """A one-line remark the user should see (fallbacks, cache hits)."""
        self._write(f"{'  ' * self._depth}- {message}")

    def warn(self, message: str) -> None:
        self._write(f"{'  ' * self._depth}! {message}")

    def status(self, message: str, every: float = 0.2) -> None:
        """Transient progress (a download percentage, the file being compiled)."""
        if self.quiet:
            return
        now = time.monotonic()
        plain_every = 30.0
        if now - self._status_at < (plain_every if self.plain else every):
            return
        self._status_at = now
        line = f"{'  ' * self._depth}  {message}"
        if self.plain:
            self._write(line)
            return
        width = 120
        line = line[:width]
        with self._lock:
            sys.stderr.write("\r" + line.ljust(self._status_len))
            sys.stderr.flush()
            self._status_len = len(line)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        """A named stage; prints its duration when it ends, or that it failed."""
        self._write(f"{'  ' * self._depth}> {title}")
        started = time.monotonic()
        self._depth += 1
        try:
            yield
        except BaseException as error:
            self._depth -= 1
            how = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            self._write(f"{'  ' * self._depth}x {title} {how} after {_dur(started)}")
            raise
        self._depth -= 1
        self._write(f"{'  ' * self._depth}< {title} ({_dur(started)})")


def _dur(started: float) -> str:
    seconds = time.monotonic() - started
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


REPORT = Reporter()


def reporter() -> Reporter:
    return REPORT
