"""Hashing, atomic writes and cached stage directories shared by every stage."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
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
