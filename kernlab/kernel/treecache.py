"""This machine's patched source trees, shared by its work areas: a second checkout, a test's
area, a `--hosts` host or `--rebuild-check` on this machine takes the tree an earlier one
extracted and patched (40 s for 6.1's .deb) as a hard-linked copy (about 2 s).

A finished tree is kept under ``$KERNLAB_CACHE/trees/<version>-<tree key>`` (the key is the
hash of the source's sha256 and the patches, as the work area's ``src/`` names it). Builds
read a tree and never write into it (``make O=``; samples/bpf builds in its own hard-linked
copy, as before): a tree edited in place by hand is edited everywhere it is linked, so
such an edit belongs in a patch (README, "Kernels"). ``KERNLAB_TREE_CACHE=0`` turns the
sharing off.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from kernlab.core import machinecache
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.util import staging_dir

DONE = ".kernlab-tree-done"  # kernlab.kernel.build's marker of a finished tree
ENV = "KERNLAB_TREE_CACHE"


def enabled() -> bool:
    return machinecache.enabled(ENV)


def kept_dir(name: str) -> Path:
    """Where the tree called ``name`` (``<version>-<short tree key>``) is kept for this machine."""
    return machinecache.kept_dir("trees", name)


def take(final: Path) -> bool:
    """Make ``final`` a hard-linked copy of the kept tree of its name; False when none is kept
    (or sharing is off), and the caller extracts and patches it."""
    kept = kept_dir(final.name)
    if not enabled() or not (kept / DONE).is_file() or not _one_filesystem(kept, final.parent):
        return False
    try:
        with machinecache.kept_lock("trees", final.name), \
                reporter().step(f"tree {final.name} from this machine's cache ({kept})"), \
                staging_dir(final) as stage:
            _link_copy(kept, stage)
    except KernlabError as error:
        reporter().warn(f"{error.one_line()}: extracting the tree instead")
        return False
    return True


def keep(final: Path) -> None:
    """Keep the finished tree ``final`` for this machine's other work areas (once; a no-op when
    kept already or sharing is off). A failure only warns: the tree in ``final`` is fine."""
    kept = kept_dir(final.name)
    if not enabled() or (kept / DONE).is_file() or not (final / DONE).is_file():
        return
    kept.parent.mkdir(parents=True, exist_ok=True)
    if not _one_filesystem(kept.parent, final):
        return  # hard links cannot cross; a copy would cost what extracting does
    try:
        with machinecache.kept_lock("trees", final.name), staging_dir(kept) as stage:
            if (kept / DONE).is_file():  # kept by another work area meanwhile
                return
            _link_copy(final, stage)
    except (OSError, KernlabError) as error:
        reporter().warn(f"tree {final.name} not kept for this machine's other work areas: {error}")



def _one_filesystem(a: Path, b: Path) -> bool:
    """Whether the nearest existing folders of ``a`` and ``b`` are on one filesystem."""
    def device(path: Path) -> int:
        while not path.exists():
            path = path.parent
        return path.stat().st_dev
    return device(a) == device(b)


def _link_copy(source: Path, dest: Path) -> None:
    """``dest`` (an empty directory) gets ``source``'s contents as hard links (``cp -al``)."""
    done = subprocess.run(["cp", "-al", f"{source}/.", str(dest)], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise KernlabError(f"hard-linking {source} into {dest} failed: {done.stderr.strip()[:300]}",
                           f"check the disk under {dest.parent} (both must be on one filesystem), "
                           f"or set {ENV}=0")
