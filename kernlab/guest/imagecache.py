"""This machine's images, shared by its work areas: a second checkout, a worktree, a test's
area or a `--hosts` host on this machine takes the image an earlier one built instead of
running mmdebstrap again (about 1.5 minutes).

An image is kept under ``$KERNLAB_CACHE/images/<recipe>-<key>`` (beside the downloads and
ccache) once it is built or first found in a state dir. A state dir without it gets the
kept disk hard-linked (the raw disk is never written: guests write to a qcow2 overlay),
or copied sparse across filesystems, and the disk's sha256 checked against the image's
record before the record is placed. A kept image whose disk does not match is left where
it is (named in a warning) and the image is built as before. ``KERNLAB_IMAGE_CACHE=0``
turns the sharing off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from kernlab.core import machinecache, registry
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.util import atomic_write_json, read_json, sha256_file, staging_dir

DISK = "rootfs.ext4"
RECORD = "image.json"
ENV = "KERNLAB_IMAGE_CACHE"


def enabled() -> bool:
    return machinecache.enabled(ENV)


def kept_dir(name: str) -> Path:
    """Where the image called ``name`` (``<recipe>-<short key>``) is kept for this machine."""
    return machinecache.kept_dir("images", name)


def take(final: Path) -> dict[str, Any] | None:
    """Place the kept image of ``final``'s name into ``final``: its record (paths rebased),
    or None when none is kept, sharing is off or the kept disk fails its sha256."""
    kept = kept_dir(final.name)
    if not enabled() or not (kept / RECORD).is_file():
        return None
    record = read_json(kept / RECORD)
    try:
        with machinecache.kept_lock("images", final.name), \
                reporter().step(f"image {final.name} from this machine's cache ({kept})"), \
                staging_dir(final) as stage:
            _link_or_copy(kept / DISK, stage / DISK)
            got = sha256_file(stage / DISK)
            if got != record["image"]["sha256"]:
                raise _Mismatch(got)
            shutil.copytree(kept / "keys", stage / "keys")  # modes kept: private keys stay 0600
            if (kept / "build.log").is_file():
                shutil.copyfile(kept / "build.log", stage / "build.log")
            placed = registry.rebase(record, record["dir"], str(final))
            atomic_write_json(stage / RECORD, placed)
    except _Mismatch as mismatch:
        reporter().warn(f"{kept / DISK} has sha256 {mismatch}, its record says "
                        f"{record['image']['sha256']}: not used (delete {kept} to drop it)")
        return None
    return placed


def keep(final: Path) -> None:
    """Keep the image in ``final`` for this machine's other work areas (once; a no-op when it
    is kept already or sharing is off). The disk is hard-linked where it can be."""
    kept = kept_dir(final.name)
    if not enabled() or (kept / RECORD).is_file() or not (final / RECORD).is_file():
        return
    kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        with machinecache.kept_lock("images", final.name), staging_dir(kept) as stage:
            if (kept / RECORD).is_file():  # kept by another work area meanwhile
                return
            _link_or_copy(final / DISK, stage / DISK)
            shutil.copytree(final / "keys", stage / "keys")
            if (final / "build.log").is_file():
                shutil.copyfile(final / "build.log", stage / "build.log")
            shutil.copyfile(final / RECORD, stage / RECORD)  # last: a kept image is complete
            stage.chmod(0o700)
    except (OSError, KernlabError) as error:  # the image in final is fine: only sharing failed
        reporter().warn(f"image {final.name} not kept for this machine's other work areas: {error}")



class _Mismatch(Exception):
    """A kept disk whose sha256 is not its record's."""


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link ``source`` to ``dest``; across filesystems, a sparse copy."""
    try:
        os.link(source, dest)
        return
    except OSError:
        pass
    done = subprocess.run(["cp", "--sparse=always", "--preserve=mode,timestamps", str(source), str(dest)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise KernlabError(f"copying {source} to {dest} failed: {done.stderr.strip()}",
                           f"free disk space under {dest.parent}, or set {ENV}=0")
