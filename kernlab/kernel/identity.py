"""Source identity: a name for an unpatched kernel tree that does not depend on the route.

A kernel.org tarball, Debian's linux-source tarball, a local copy and a git tree at the
same content are different files (or commits) holding the same tree. kernlab names the
tree itself: the sha256 of a listing with one line per file, sorted by path,

    ``<kind> <sha256> <path>``

where ``kind`` is ``f`` (regular file), ``x`` (executable: the owner's x bit, as git
keeps it) or ``l`` (symlink, hashed by its target), and paths are relative to the
tree's top directory. Directories, owners, times and other mode bits are left out, as
git leaves them out, so a tarball and ``git archive`` of the same files agree.

Computing it reads the freshly extracted tree once (about 1.3 GB for 6.1, from the
page cache right after extraction). A small memo in the cache maps a source file's
sha256 to its tree identity, so a source is hashed once per cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from kernlab.core import paths
from kernlab.core.util import atomic_write_json, read_json

MARKER = ".kernlab-tree-id"  # in a prepared tree: the identity of the tree it was made from


def _entries(top: Path, prefix: str = "") -> list[tuple[bytes, bytes]]:
    """(path, listing line) for every non-directory under ``top``."""
    out = []
    with os.scandir(top) as scan:
        for entry in scan:
            rel = f"{prefix}{entry.name}"
            if entry.is_symlink():
                digest = hashlib.sha256(os.fsencode(os.readlink(entry.path))).hexdigest()
                out.append((os.fsencode(rel), f"l {digest} ".encode()))
            elif entry.is_dir():
                out += _entries(Path(entry.path), f"{rel}/")
            else:
                with open(entry.path, "rb") as handle:
                    digest = hashlib.file_digest(handle, "sha256").hexdigest()
                kind = "x" if entry.stat().st_mode & 0o100 else "f"
                out.append((os.fsencode(rel), f"{kind} {digest} ".encode()))
    return out


def tree_sha256(top: Path) -> str:
    """The identity of the tree under ``top`` (see the module docstring)."""
    digest = hashlib.sha256()
    for rel, line in sorted(_entries(top)):
        digest.update(line + rel + b"\n")
    return digest.hexdigest()


def _memo() -> Path:
    return paths.cache_dir() / "tree-ids.json"


def remembered(source_sha256: str) -> str | None:
    """The identity of the tree a source file (by its sha256) extracts to, when known."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        return read_json(_memo()).get(source_sha256)
    return None


def remember(source_sha256: str, tree: str) -> None:
    """Note that the source file ``source_sha256`` extracts to the tree ``tree``."""
    table: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        table = read_json(_memo())
    if table.get(source_sha256) != tree:
        table[source_sha256] = tree
        atomic_write_json(_memo(), table)
