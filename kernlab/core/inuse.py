"""Paths in use by a running kernlab command, and the temporary outputs a killed one left.

A command that works in a path another command might delete (a build compiling from a
source tree) or writes a temporary output (a pack's ``.part``, a staging folder) marks it
with ``using()`` for as long as it needs it: a small file under ``<state>/locks/`` holding
a flock (dropped by the kernel however the holder ends) and naming the path and the
holder. `clean` asks ``users()`` before it deletes a path and leaves a used one alone.

``temporary()`` marks a temporary output and removes it when its block fails or is
stopped (Ctrl-C, SIGTERM, SIGHUP: kernlab.core.cli.friendly turns those into
KeyboardInterrupt). Only kill -9 leaves one behind; its mark then outlives the holder,
and ``orphans()`` lists those paths for `invoke clean` to remove.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kernlab.core import filelock, paths
from kernlab.core.errors import KernlabError

PREFIX = "use-"


@dataclass(frozen=True)
class Orphan:
    """A temporary output whose command is gone (killed), and who that command was."""

    path: Path
    holder: str
    mark: Path


def _marks_dir() -> Path:
    return filelock.locks_dir(paths.state_dir())


def _marks() -> list[Path]:
    try:
        return sorted(_marks_dir().glob(f"{PREFIX}*.lock"))
    except (OSError, KernlabError):
        return []


def _digest(path: Path) -> str:
    return hashlib.sha256(str(path.absolute()).encode()).hexdigest()[:16]


@contextlib.contextmanager
def using(path: Path, what: str, temporary: bool = False) -> Iterator[None]:
    """Mark ``path`` as used by this process (for ``what``) inside the block. Without a
    usable state directory the block runs unmarked (nothing could read the mark either)."""
    try:
        made = [d for d in (_marks_dir().parent, _marks_dir()) if not d.exists()]  # removed after
        mark, fd = _new_mark(path)
    except (OSError, KernlabError):
        mark, fd, made = None, -1, []
    if mark is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = {"pid": os.getpid(), "command": filelock.command_line(), "what": what,
                "path": str(path.absolute()), "temporary": temporary}
        os.pwrite(fd, json.dumps(data).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            mark.unlink()
        for folder in [mark.parent, *reversed(made)]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty, as filelock leaves it
        os.close(fd)


def _new_mark(path: Path) -> tuple[Path, int]:
    """A new mark file for ``path`` and its open descriptor (the directory may vanish under
    a lock holder's cleanup between mkdir and open: then again)."""
    for _attempt in range(10):
        folder = _marks_dir()
        folder.mkdir(parents=True, exist_ok=True)
        mark = folder / f"{PREFIX}{_digest(path)}-{os.getpid()}-{id(path):x}.lock"
        try:
            return mark, os.open(mark, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            continue
    raise OSError(f"cannot create a mark in {_marks_dir()}")


@contextlib.contextmanager
def temporary(path: Path, what: str) -> Iterator[Path]:
    """``path``, a temporary output: marked while the block runs, removed if it fails or is
    stopped (the block renames it into place on success)."""
    with using(path, what, temporary=True):
        try:
            yield path
        except BaseException:
            remove(path)
            raise


def remove(path: Path) -> None:
    """Remove ``path`` (file or folder) if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (a killed image build's /proc): never deleted through."""
    prefix = str(path.absolute()).rstrip("/")
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    targets = [line.split()[4].encode().decode("unicode_escape") for line in lines]
    return [t for t in targets if t == prefix or t.startswith(prefix + "/")]


def _read(mark: Path) -> tuple[dict, bool]:
    """The mark's content and whether its holder is alive (a stale mark is unlinked)."""
    try:
        fd = os.open(mark, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}, False
    try:
        try:
            info = json.loads(os.pread(fd, 8192, 0).decode() or "{}")
        except ValueError:
            info = {}
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return info, False
        except BlockingIOError:
            return info, True
    finally:
        os.close(fd)


def _holder(info: dict) -> str:
    return f"pid {info.get('pid', '?')} ({info.get('command', 'kernlab')}: {info.get('what', '?')})"


def users(path: Path) -> list[str]:
    """Who uses ``path`` or a path inside it now (``pid 12 (invoke build-kernel 6.1: ...)``)."""
    inside = str(path.absolute()).rstrip("/") + "/"
    found = []
    for mark in _marks():
        info, alive = _read(mark)
        used = str(info.get("path", ""))
        if alive and (used == inside[:-1] or used.startswith(inside)):
            found.append(_holder(info))
    return found


def _temporary_name(path: Path) -> bool:
    """Whether ``path`` (read from a mark) looks like a temporary output kernlab names:
    absolute, no ``..``, a hidden name (``.NAME.part``, ``.pack-*``, ``.NAME.tmp-*``)."""
    return path.is_absolute() and ".." not in path.parts and path.name.startswith(".")


def orphans() -> list[Orphan]:
    """Temporary outputs whose command was killed (its mark stale) and which are still there."""
    found = []
    for mark in _marks():
        info, alive = _read(mark)
        if alive:
            continue
        path = Path(str(info.get("path", "")))
        if info.get("temporary") and _temporary_name(path) and os.path.lexists(path):
            found.append(Orphan(path, _holder(info), mark))
        else:
            with contextlib.suppress(OSError):
                mark.unlink()  # a non-temporary use, or its output is gone: nothing to list
    return found
