"""Progress as events: the stages emit them, one front-end shows them.

Stages never print. They call ``reporter().step(title)`` (a context manager),
``.note()``, ``.warn()`` and ``.status()``, which emit the frozen events below; the
events are the whole contract between the stages and what the user sees. A front-end
consumes them: ``Terminal`` (a live status line that the next line overwrites) when
stderr is a terminal, ``Plain`` (timestamped lines, nothing overwritten) in CI
(``CI`` set), with ``KERNLAB_PLAIN=1`` or without a tty. ``KERNLAB_QUIET=1`` shows
nothing. The reporter is shared by every thread (matrix cells, ``--hosts``): each
thread has its own step depth, and the front-end writes whole lines under one lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TextIO


# ---------------------------------------------------------------- the events
@dataclass(frozen=True)
class StepStarted:
    title: str
    depth: int


@dataclass(frozen=True)
class StepDone:
    title: str
    depth: int
    seconds: float


@dataclass(frozen=True)
class StepFailed:
    title: str
    depth: int
    seconds: float
    interrupted: bool  # Ctrl-C (KeyboardInterrupt), not an error


@dataclass(frozen=True)
class Note:
    """A one-line remark the user should see (fallbacks, cache hits)."""

    text: str
    depth: int


@dataclass(frozen=True)
class Warn:
    """Something the user should fix or know is degraded (the run goes on)."""

    text: str
    depth: int


@dataclass(frozen=True)
class Status:
    """Transient progress (a download percentage, the file being compiled)."""

    text: str
    depth: int


Event = StepStarted | StepDone | StepFailed | Note | Warn | Status


# ---------------------------------------------------------------- front-ends
def line_of(event: Event) -> str:
    """The event as the one line both front-ends show (without a timestamp)."""
    indent = "  " * event.depth
    match event:
        case StepStarted(title=title):
            return f"{indent}> {title}"
        case StepDone(title=title, seconds=seconds):
            return f"{indent}< {title} ({duration(seconds)})"
        case StepFailed(title=title, seconds=seconds, interrupted=interrupted):
            return f"{indent}x {title} {'interrupted' if interrupted else 'failed'} after {duration(seconds)}"
        case Note(text=text):
            return f"{indent}- {text}"
        case Warn(text=text):
            return f"{indent}! {text}"
        case Status(text=text):
            return f"{indent}  {text}"
    raise TypeError(f"not a progress event: {event!r}")


def duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 120 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class FrontEnd(Protocol):
    def show(self, event: Event) -> None: ...


class Plain:
    """Timestamped lines, one per event; a status at most every ``status_every`` seconds."""

    status_every = 30.0

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._status_at = 0.0

    def show(self, event: Event) -> None:
        if isinstance(event, Status):
            now = time.monotonic()
            if now - self._status_at < self.status_every:
                return
            self._status_at = now
        with self._lock:
            out = self.stream or sys.stderr
            out.write(f"{time.strftime('%H:%M:%S')} {line_of(event)}\n")
            out.flush()


class Terminal:
    """Lines as they come, and a live status line (throttled) that the next line replaces."""

    status_every = 0.2
    width = 120

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()
        self._status_at = 0.0
        self._status_len = 0

    def show(self, event: Event) -> None:
        out = self.stream or sys.stderr
        with self._lock:
            if isinstance(event, Status):
                now = time.monotonic()
                if now - self._status_at < self.status_every:
                    return
                self._status_at = now
                line = line_of(event)[:self.width]
                out.write("\r" + line.ljust(self._status_len))
                self._status_len = len(line)
            else:
                if self._status_len:
                    out.write("\r" + " " * self._status_len + "\r")
                    self._status_len = 0
                out.write(line_of(event) + "\n")
            out.flush()


class Silent:
    def show(self, event: Event) -> None:
        pass


def plain_wanted() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("KERNLAB_PLAIN")) or not sys.stderr.isatty()


def default_front_end() -> FrontEnd:
    if os.environ.get("KERNLAB_QUIET"):
        return Silent()
    return Plain() if plain_wanted() else Terminal()


STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def without_stamp(line: str) -> str:
    """A plain line without its timestamp (to read another kernlab's progress, e.g. a host's)."""
    return STAMP.sub("", line, count=1)


# ---------------------------------------------------------------- the emitting side
class Reporter:
    """What stages call: each call emits one event to the front-end."""

    def __init__(self, front_end: FrontEnd | None = None) -> None:
        self.front_end = front_end or default_front_end()
        self._local = threading.local()

    @property
    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @_depth.setter
    def _depth(self, value: int) -> None:
        self._local.depth = value

    @property
    def depth(self) -> int:
        """This thread's step depth (a worker thread starts where its caller is)."""
        return self._depth

    def _tagged(self, text: str) -> str:
        tag = getattr(self._local, "tag", "")
        return f"[{tag}] {text}" if tag else text

    @contextlib.contextmanager
    def tagged(self, tag: str, depth: int) -> Iterator[None]:
        """In a worker thread: its lines start with ``[tag]``, at ``depth`` (a suite's lanes)."""
        self._local.tag, self._depth = tag, depth
        try:
            yield
        finally:
            self._local.tag = ""

    def emit(self, event: Event) -> None:
        self.front_end.show(event)

    def note(self, message: str) -> None:
        """A one-line remark the user should see (fallbacks, cache hits)."""
        self.emit(Note(self._tagged(message), self._depth))

    def warn(self, message: str) -> None:
        self.emit(Warn(self._tagged(message), self._depth))

    def status(self, message: str) -> None:
        """Transient progress (a download percentage, the file being compiled)."""
        self.emit(Status(self._tagged(message), self._depth))

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        """A named stage; its end says how long it took, or that it failed."""
        title = self._tagged(title)
        depth = self._depth
        self.emit(StepStarted(title, depth))
        started = time.monotonic()
        self._depth = depth + 1
        try:
            yield
        except BaseException as error:
            self._depth = depth
            self.emit(StepFailed(title, depth, time.monotonic() - started,
                                 isinstance(error, KeyboardInterrupt)))
            raise
        self._depth = depth
        self.emit(StepDone(title, depth, time.monotonic() - started))


REPORT = Reporter()


def reporter() -> Reporter:
    """The process's one reporter (shared by every thread)."""
    return REPORT
