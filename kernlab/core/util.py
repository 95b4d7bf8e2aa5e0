"""Hashing, atomic writes and cached stage directories shared by every stage.

Hashing reads regular files only: a FIFO would block the read for ever, a device
(/dev/zero) never ends, a socket cannot be opened; they are refused with one line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kernlab.core import inuse
from kernlab.core.errors import KernlabError


def special_kind(mode: int) -> str:
    """What a non-regular file is, in words (for ``is a FIFO, not a regular file``)."""
    for test, words in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device")):
        if test(mode):
            return words
    return "not a regular file"


def not_regular(path: Path) -> KernlabError:
    """The one-line refusal of a special file where kernlab reads file contents."""
    return KernlabError(f"{path} is {special_kind(os.stat(path).st_mode)}, not a regular file",
                        "remove it (or replace it with a regular file): kernlab reads and hashes "
                        "the files of its inputs")


def why_not_a_file(path: Path) -> str:
    """Why ``path`` is not a readable regular file, in words: ``does not exist`` or
    ``is a FIFO (named pipe), not a regular file`` (for errors on a user's file flag)."""
    if not path.exists():
        return "does not exist"
    return f"is {special_kind(os.stat(path).st_mode)}, not a regular file"


def special_files(root: Path) -> list[Path]:
    """FIFOs, sockets and devices under ``root`` (symlinks are not followed), sorted."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                found.append(path)
    return sorted(found)


def refuse_special_files(root: Path) -> None:
    """Stop, naming the first special file under ``root`` (before anything reads it)."""
    if found := special_files(root):
        raise not_regular(found[0])


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular file's bytes; a FIFO, socket or device is refused at once."""
    digest = hashlib.sha256()
    if not stat.S_ISREG(os.stat(path).st_mode):  # a socket cannot even be opened
        raise not_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise not_regular(path)
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def hash_inputs(inputs: Any) -> str:
    """Stable hash of a JSON-serialisable description of a stage's inputs."""
    return sha256_text(json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str))


def hash_tree(path: Path) -> str:
    """Hash of a directory's relative file names and contents (symlinks by target)."""
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if not p.is_dir() or p.is_symlink()):
        rel = item.relative_to(path).as_posix()
        digest.update(rel.encode() + b"\0")
        if item.is_symlink():
            digest.update(b"link:" + os.readlink(item).encode())
        else:
            digest.update(sha256_file(item).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so readers see either the old or the new content, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    """A record (kernlab.core.records) as its JSON object; anything else as its str."""
    to_json = getattr(value, "to_json", None)
    return to_json() if callable(to_json) else str(value)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``final``; on success it is renamed into place.

    On failure the staging directory is removed, so ``final`` either does not exist
    or is complete: a cached stage output is never half-made.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    with inuse.using(tmp, f"staging of {final.name}", temporary=True):
        try:
            yield tmp
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def short(digest: str, n: int = 12) -> str:
    return digest[:n]


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


@contextlib.contextmanager
def scoped_environ(set_to: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """``os.environ`` with ``set_to`` set and ``unset`` removed, restored afterwards."""
    saved = {name: os.environ.get(name) for name in (*set_to, *unset)}
    os.environ.update(set_to)
    for name in unset:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
