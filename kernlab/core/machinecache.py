"""What this machine's work areas share through ``$KERNLAB_CACHE`` beyond downloads and ccache:
finished images (kernlab.guest.imagecache) and patched trees (kernlab.kernel.treecache). Each
kind has a folder, a lock per entry and a variable that turns it off."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

from kernlab.core import filelock, paths


def enabled(env: str) -> bool:
    """Whether sharing is on: the variable ``env`` unset, or anything but 0/no/off/false."""
    return os.environ.get(env, "1").strip() not in ("0", "no", "off", "false")


def kept_dir(kind: str, name: str) -> Path:
    """Where the ``kind`` (``images``, ``trees``) entry ``name`` is kept for this machine."""
    return paths.cache_dir() / kind / name


def kept_lock(kind: str, name: str) -> AbstractContextManager[None]:
    """One process at a time places or keeps the ``kind`` entry ``name``."""
    return filelock.exclusive(filelock.locks_dir(paths.cache_dir()) / f"{kind}-{name}.lock",
                              f"this machine's copy of {kind} {name}")
