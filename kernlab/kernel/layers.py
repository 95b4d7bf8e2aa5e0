"""The kernel stage's outputs as registry artifacts: kernel builds and their headers disks.

Each names its layers by the paths its stage writes (kernel/build.py, kernel/kheaders.py;
images: guest/image.py). A kernel's layers hold what using the build needs (bzImage, System.map,
.config, headers_install output, samples/bpf programs and their BPF objects, modules,
the record) and vmlinux apart, pulled only when a command reads its DWARF; no object
files, no source tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kernlab.core.registry import TAR_ZSTD, VENDOR, Kind, Layer

ARCH = "x86"  # the catalog's kernels are x86_64 (arch/x86/boot/bzImage)
BZIMAGE = f"obj/arch/{ARCH}/boot/bzImage"
SAMPLES = "samples-tree/samples/bpf"
BPF_OBJECT_SUFFIXES = ("_kern.o", ".bpf.o")


def _samples(root: Path) -> tuple[str, ...]:
    """samples/bpf's programs and BPF objects (not its host object files or sources)."""
    directory = root / SAMPLES
    if not directory.is_dir():
        return ()
    kept = []
    for item in sorted(directory.iterdir()):
        if not item.is_file() or item.is_symlink():
            continue
        program = os.access(item, os.X_OK) and item.suffix not in (".sh", ".py", ".o")
        if program or item.name.endswith(BPF_OBJECT_SUFFIXES):
            kept.append(f"{SAMPLES}/{item.name}")
    return tuple(kept)


def _modules(root: Path) -> tuple[str, ...]:
    obj = root / "obj"
    found = sorted(str(p.relative_to(root)) for p in obj.rglob("*.ko")) if obj.is_dir() else []
    found += [f"obj/{name}" for name in ("modules.order", "Module.symvers") if (obj / name).is_file()]
    return tuple(found)


def _kernel_layers(record: dict[str, Any], root: Path) -> list[Layer]:
    kind = f"{VENDOR}.kernel"
    pushing = bool(record)
    return [
        Layer("bzImage", f"{kind}.bzimage.v1", "file", (BZIMAGE,)),
        Layer("System.map", f"{kind}.system-map.v1", "file", ("obj/System.map",)),
        Layer("config", f"{kind}.config.v1", "file", ("obj/.config",)),
        Layer("headers.tar.zst", TAR_ZSTD, "tar", ("obj/usr/include",)),
        Layer("samples-bpf.tar.zst", TAR_ZSTD, "tar", _samples(root) if pushing else (), required=False),
        Layer("modules.tar.zst", TAR_ZSTD, "tar", _modules(root) if pushing else (), required=False),
        Layer("build.json", f"{kind}.record.v1+json", "file", ("build.json",)),
        Layer("vmlinux.zst", f"{kind}.vmlinux.v1+zstd", "zst", ("obj/vmlinux",), lazy=True),
    ]


def _kernel_placed(record: dict[str, Any]) -> dict[str, Any]:
    """A pulled build has no source tree here (its headers come as the headers disk)."""
    return {**record, "tree": ""}


KERNEL = Kind("kernel", "kernel build", "build.json", "version",
              lambda record: Path(record["build_dir"]), _kernel_layers, _kernel_placed)


def _headers_layers(record: dict[str, Any], root: Path) -> list[Layer]:
    return [
        Layer("kheaders.ext4.zst", f"{VENDOR}.kheaders.disk.v1+zstd", "zst", ("kheaders.ext4",)),
        Layer("kheaders.json", f"{VENDOR}.kheaders.record.v1+json", "file", ("kheaders.json",)),
    ]


HEADERS = Kind("kheaders", "headers disk", "kheaders.json", "version",
               lambda record: Path(record["image"]["path"]).parent, _headers_layers)
