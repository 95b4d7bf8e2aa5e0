"""The running kernel's headers for the guest: one read-only ext4 disk per kernel build.

bpftrace and bcc compile against the kernel's headers when the kernel has no BTF
(bpftrace) or no CONFIG_IKHEADERS (bcc); 4.15 has neither. Both look in
``/lib/modules/$(uname -r)/build`` (and ``source``, used when both exist) and compile
with ``-I arch/x86/include -I arch/x86/include/generated -I include -I include/uapi
-I include/generated/uapi ... -include include/linux/kconfig.h`` relative to it. An
``O=`` build splits those between the source tree and the objects, so this stage merges
them into one tree shaped like an in-tree build (what a distro's linux-headers package
gives), makes it a read-only ext4 image (``mke2fs -d``: no mounts, no root needed), and
records it. QEMU attaches the image read-only; vm/init mounts it by label at
``/lib/modules/$(uname -r)/build``.

The output is keyed by the build's ``key`` and cached in ``<KERNLAB_WORK>/kheaders/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlab.core import paths, registry
from kernlab.core.errors import KernlabError
from kernlab.core.proc import require_tool, run_logged
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.core.util import atomic_write_json, hash_inputs, read_json, sha256_file, short, staging_dir
from kernlab.kernel import layers

FORMAT = 1  # bump when the tree's layout or the image's making changes
LABEL = "kernlab-kheaders"  # vm/init mounts the disk with this label
IMAGE_NAME = "kheaders.ext4"
RECORD_NAME = "kheaders.json"
GUEST_PATH = "/lib/modules/{release}/build"
MIB = 1 << 20
BLOCK = 1024  # small files: 1 KiB blocks waste least


@dataclass(frozen=True)
class Part:
    """One piece of the merged tree: ``path`` from the source tree or the objects."""

    origin: str  # "tree" (the patched source) or "obj" (the O= directory)
    path: str  # relative path; {arch} is the kernel's source architecture (x86)
    required: bool = True


# The same places an in-tree build has them; bpftrace's and bcc's -I list is covered.
PARTS = (
    Part("tree", "include"),
    Part("tree", "arch/{arch}/include"),
    Part("obj", "include/generated"),
    Part("obj", "arch/{arch}/include/generated"),
    Part("obj", "include/config/auto.conf"),
    Part("obj", "include/config/kernel.release", required=False),
    Part("obj", ".config"),
    Part("tree", "Makefile"),
    Part("tree", "arch/{arch}/Makefile", required=False),
    Part("obj", "Module.symvers", required=False),
)
CHECKS = ("include/linux/kconfig.h", "include/generated/autoconf.h",
          "arch/{arch}/include/generated/asm")  # what the tools cannot do without


def stage_key(build: BuildRecord) -> str:
    """The stage's key: the build's key and this stage's format."""
    return hash_inputs({"kheaders": FORMAT, "build": build.key})


def stage_dir(build: BuildRecord) -> Path:
    return paths.work_dir() / "kheaders" / f"{build.version}-{short(stage_key(build))}"


def source_arch(obj: Path, version: str = "V") -> str:
    """The source architecture (x86 for x86_64) a build generated headers for."""
    found = sorted(p.parent.parent.name for p in obj.glob("arch/*/include/generated"))
    if len(found) != 1:
        raise KernlabError(f"cannot tell the architecture of {obj} (arch/*/include/generated: "
                           f"{', '.join(found) or 'none'})",
                           f"rebuild the kernel: `invoke build-kernel --version {version} --clean`")
    return found[0]


def build_dirs(build: BuildRecord) -> tuple[Path, Path]:
    """(patched source tree, O= objects) of a build record; errors if either is gone."""
    tree, obj = Path(build.tree_named), build.obj
    for what, path in (("source tree", tree), ("object directory", obj)):
        if not build.tree_named or not path.is_dir():
            raise KernlabError(
                f"the {what} {path} of kernel {build.version} is gone, so its "
                "headers cannot be assembled",
                f"rebuild it: `invoke build-kernel --version {build.version} --clean`")
    return tree, obj


# ---------------------------------------------------------------- the merged tree
def assemble(tree: Path, obj: Path, dest: Path, arch: str, version: str = "V") -> int:
    """Merge the parts into ``dest`` (hard links where possible); returns the file count."""
    fix = f"rebuild the kernel: `invoke build-kernel --version {version} --clean`"
    for part in PARTS:
        rel = part.path.format(arch=arch)
        origin = (tree if part.origin == "tree" else obj) / rel
        if not origin.exists():
            if part.required:
                raise KernlabError(f"{origin} is missing (needed for the guest's kernel headers)",
                                   fix)
            continue
        _place(origin, dest / rel)
    for check in CHECKS:
        if not (dest / check.format(arch=arch)).exists():
            raise KernlabError(f"the merged headers in {dest} lack {check.format(arch=arch)}",
                               fix)
    return sum(1 for p in dest.rglob("*") if not p.is_dir())


def _place(origin: Path, target: Path) -> None:
    """Copy a file or a directory (merging into what is there), symlinks kept as links."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if origin.is_dir() and not origin.is_symlink():
        shutil.copytree(origin, target, symlinks=True, dirs_exist_ok=True, copy_function=_link)
    else:
        _link(origin, target)


def _link(origin: str | Path, target: str | Path) -> None:
    """Hard link (no data copied), or a copy across file systems; symlinks as links."""
    if os.path.islink(origin):
        os.symlink(os.readlink(origin), target)
        return
    try:
        os.link(origin, target)
    except OSError:
        shutil.copy2(origin, target)


# ---------------------------------------------------------------- the disk image
def image_size(root: Path) -> tuple[int, int]:
    """(bytes, inodes) for an ext4 image holding ``root`` with a little room."""
    used = 0
    entries = 0
    for item in root.rglob("*"):
        entries += 1
        size = item.lstat().st_size if not item.is_dir() else BLOCK
        used += -(-size // BLOCK) * BLOCK
    inodes = entries + entries // 20 + 128  # mke2fs rounds per block group
    size = int(used * 1.2) + inodes * 256 + 8 * MIB
    return -(-size // MIB) * MIB, inodes


def make_image(root: Path, image: Path, log: Path) -> None:
    """A journal-less ext4 image of ``root`` labelled for vm/init (mke2fs -d)."""
    size, inodes = image_size(root)
    run_logged(["mke2fs", "-q", "-F", "-t", "ext4", "-b", str(BLOCK), "-N", str(inodes),
                "-m", "0", "-O", "^has_journal", "-L", LABEL, "-d", root, image,
                f"{size // 1024}k"],
               log, what="mke2fs (kernel headers image)", timeout=600,
               fix="see the log; check free space under the kheaders directory")


# ---------------------------------------------------------------- the stage
def find_headers(build: BuildRecord) -> dict[str, Any] | None:
    """The cached record for ``build``'s headers, or None."""
    record = stage_dir(build) / RECORD_NAME
    if not record.is_file():
        return None
    data = read_json(record)
    return data if Path(data["image"]["path"]).is_file() else None


def ensure_headers(build: BuildRecord) -> dict[str, Any]:
    """The headers record for ``build``: cached at once, else made (a few seconds)."""
    if not build.data.get("key"):
        raise KernlabError("the build record has no key (made by an older kernlab?)",
                           f"rebuild: `invoke build-kernel --version {build.version}`")
    if cached := find_headers(build):
        return cached
    final = stage_dir(build)
    with _stage_lock(final):
        if cached := find_headers(build):  # made by another process meanwhile
            return cached
        pulled = registry.lookup(layers.HEADERS, build.version, stage_key(build), final,
                                 final.parent / f".{final.name}.pull.lock")
        return pulled.record if pulled is not None else _make(build, final)


@contextlib.contextmanager
def _stage_lock(final: Path) -> Iterator[None]:
    """One process at a time makes a given stage output (others wait, then reuse it)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _make(build: BuildRecord, final: Path) -> dict[str, Any]:
    """Assemble, make the image, write the record; the output appears whole or not at all."""
    require_tool("mke2fs", "e2fsprogs")
    tree, obj = build_dirs(build)
    arch = source_arch(obj, build.version)
    log = final.parent / f"{final.name}.log"  # outside the staging dir: kept on failure
    log.unlink(missing_ok=True)
    started = time.monotonic()
    with reporter().step(f"kernel headers for {build.kernelrelease}"), \
            staging_dir(final) as stage:
        files = assemble(tree, obj, stage / "tree", arch, build.version)
        assembled = time.monotonic() - started
        make_image(stage / "tree", stage / IMAGE_NAME, log)
        shutil.rmtree(stage / "tree")
        record = _record(build, final, stage, arch, files,
                         {"assemble": round(assembled, 2),
                          "total": round(time.monotonic() - started, 2)})
        atomic_write_json(stage / RECORD_NAME, record)
    shutil.move(log, final / "make.log")
    reporter().note(f"kernel headers: {record['files']} files, image "
                    f"{record['image']['size'] // MIB} MiB in {record['seconds']['total']}s "
                    f"({final})")
    return record


def _record(build: BuildRecord, final: Path, stage: Path, arch: str, files: int,
            seconds: dict[str, float]) -> dict[str, Any]:
    """The side record naming the image (paths as they are once the stage is in place)."""
    image = stage / IMAGE_NAME
    return {
        "key": stage_key(build),
        "format": FORMAT,
        "build_key": build.key,
        "version": build.version,
        "kernelrelease": build.kernelrelease,
        "arch": arch,
        "parts": [p.path.format(arch=arch) for p in PARTS],
        "files": files,
        "image": {"path": str(final / IMAGE_NAME), "sha256": sha256_file(image),
                  "size": image.stat().st_size, "label": LABEL, "format": "raw"},
        "guest_path": GUEST_PATH.format(release=build.kernelrelease),
        "log": str(final / "make.log"),
        "seconds": seconds,
    }


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What VM records and run manifests name: key, image path, sha256 and guest path."""
    return {"key": record["key"], "build_key": record["build_key"],
            "path": record["image"]["path"], "sha256": record["image"]["sha256"],
            "guest_path": record["guest_path"],
            **({"digest": digest} if (digest := registry.pulled_digest(record)) else {})}
