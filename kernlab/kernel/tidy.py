"""What `invoke clean` may remove from the kernel work area, and removing it.

A kernel build is 1 to 2.6 GB and its patched source tree another 0.9 to 1.5 GB; each
change of a patch, fragment or compiler makes new ones beside the old. Kept: for each
version, the build a command would use (`selection.builds_of`), the builds running VMs
booted (``in_use``), and whatever their records name (source tree, headers disk).
Removable: every other build, source tree and headers disk, the leftovers of failed
or killed builds, and the temporary outputs of any command killed with kill -9 (a
pack's ``.part``, an image's staging folder: kernlab.core.inuse.orphans). A build or
tree another process is making is skipped, by its lock, and a tree a build in progress
compiles from, by its mark (kernlab.core.inuse.users).
Results bundles, the download cache and images are never touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kernlab.core import filelock, inuse, paths
from kernlab.core.errors import KernlabError
from kernlab.core.util import human_bytes
from kernlab.kernel import kheaders
from kernlab.kernel.build import build_lock
from kernlab.kernel.selection import BuildRef, build_root, builds_of, complete_builds


@dataclass(frozen=True)
class Removable:
    """One directory `clean` would remove, why, and the bytes only it holds."""

    path: Path
    why: str
    bytes: int


def unshared_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` that no hard link elsewhere keeps alive."""
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if info.st_nlink == 1:
                total += info.st_blocks * 512
    return total


def kept_builds(every: list[BuildRef], in_use: set[str]) -> list[BuildRef]:
    """Of ``every`` build, each version's build in use and those whose key is in ``in_use``."""
    chosen = {builds_of(version, every)[0].id for version in {b.version for b in every}}
    return [b for b in every if b.id in chosen or b.record.key in in_use]


def plan_cleanup(in_use: set[str]) -> list[Removable]:
    """What `clean` removes, given the build keys running VMs use."""
    every = complete_builds()
    kept = kept_builds(every, in_use)
    kept_dirs = {build_root() / b.id for b in kept}
    trees = {Path(b.record.tree_named) for b in kept}
    disks = {kheaders.stage_dir(b.record) for b in kept}
    complete = {b.id for b in every}
    found = [Removable(o.path, f"left by a killed command, {o.holder}", unshared_bytes(o.path))
             for o in inuse.orphans()]
    for folder in _subdirs(build_root()):
        if folder not in kept_dirs:
            why = "not the build in use" if folder.name in complete else "an unfinished build"
            found.append(Removable(folder, why, unshared_bytes(folder)))
    for folder in _subdirs(paths.work_dir() / "src"):
        if folder not in trees:
            why = ("a tree a patch did not apply to (kept to refresh it)" if folder.name.endswith(".failed")
                   else "a source tree no kept build uses")
            found.append(Removable(folder, why, unshared_bytes(folder)))
    for folder in _subdirs(paths.work_dir() / "new-kernel"):
        if not folder.name.startswith("."):  # .VERSION.tmp-*: being made
            found.append(Removable(folder, "new-kernel's tree (kept to port patches in)",
                                   unshared_bytes(folder)))
    for folder in _subdirs(paths.work_dir() / "kheaders"):
        if folder not in disks and not folder.name.startswith("."):  # .NAME.tmp-*: being made
            found.append(Removable(folder, "a headers disk of no kept build", unshared_bytes(folder)))
    return found


def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []


def busy_items(items: list[Removable]) -> list[tuple[Removable, str]]:
    """The items a running command makes (a build in progress) or uses (the source tree that
    build compiles from), and by whom."""
    busy = []
    for item in items:
        if maker := filelock.holder(_lock_of(item.path)):
            busy.append((item, f"being made by {maker}"))
        elif users := inuse.users(item.path):
            busy.append((item, f"in use by {', '.join(users)}"))
    return busy


def remove(items: list[Removable]) -> list[tuple[Removable, str]]:
    """Remove each item under its lock unless a running command uses it; returns those
    skipped and why (in progress or in use elsewhere)."""
    skipped = []
    for item in items:
        try:
            with filelock.exclusive(_lock_of(item.path), f"{item.path.name}", wait=False):
                if users := inuse.users(item.path):
                    skipped.append((item, f"in use by {', '.join(users)}"))
                    continue
                if mounts := inuse.mounts_under(item.path):
                    skipped.append((item, f"{mounts[0]} is mounted inside; unmount it first"))
                    continue
                inuse.remove(item.path)
        except KernlabError as busy:
            skipped.append((item, busy.cause))
    return skipped


def _lock_of(path: Path) -> Path:
    """The lock a build (or the making of a source tree) holds while it writes ``path``
    (a staging directory ``.NAME.tmp-XXXX`` goes with NAME's lock)."""
    name = path.name.lstrip(".").split(".tmp-")[0]
    if path.parent == paths.work_dir() / "src":
        return filelock.locks_dir(paths.work_dir()) / f"src-{name}.lock"
    return build_lock(path.with_name(name))


def plan_text(items: list[Removable], removing: bool) -> str:
    """One line per item and a total: what goes (``removing``) or would go."""
    if not items:
        return "nothing to remove: only the builds in use, their trees and headers disks are here"
    lines = [f"{human_bytes(item.bytes):>10}  {item.path}  ({item.why})" for item in items]
    total = human_bytes(sum(item.bytes for item in items))
    verb = "removing" if removing else "would remove"
    tail = "" if removing else "; `invoke clean --yes` removes them"
    return "\n".join([*lines, f"{verb} {counted(items)}, {total}{tail}"])


def counted(items: list[Removable]) -> str:
    """``2 directories and 1 file``: a killed pack leaves files (``.part``) beside folders."""
    folders = sum(1 for item in items if item.path.is_dir())
    files = len(items) - folders
    words = [f"{folders} {'directory' if folders == 1 else 'directories'}" if folders else "",
             f"{files} {'file' if files == 1 else 'files'}" if files else ""]
    return " and ".join(word for word in words if word)


def clean(in_use: set[str], yes: bool) -> str:
    """`invoke clean`: the plan's text; with ``yes`` the items are removed. What a running
    command uses is named as kept, what turned out busy while removing as skipped."""
    items = plan_cleanup(in_use)
    busy = busy_items(items)
    free = [item for item in items if item not in {b for b, _ in busy}]
    text = plan_text(free, removing=yes)  # before removing: what each item is
    skipped = remove(free) if yes else []
    return "\n".join([text,
                      *(f"kept {item.path}: {why}" for item, why in busy),
                      *(f"skipped {item.path}: {why}" for item, why in skipped)])
