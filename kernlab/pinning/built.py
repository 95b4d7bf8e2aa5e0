"""`invoke lock`: kernlab.lock entries written from the builds and images that exist, and
the registry digest of each one pulled or pushed here (``artifacts``)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from kernlab.core import lock, registry
from kernlab.core.errors import KernlabError
from kernlab.guest.image import IMAGE, find_image, input_files_sha256
from kernlab.kernel import layers
from kernlab.kernel.debsource import kernel_entry_pinned
from kernlab.kernel.kheaders import find_headers
from kernlab.kernel.selection import built_versions, find_build


def lock_built(versions: list[str], recipes: list[str]) -> tuple[Path, list[str]]:
    """Write lock entries from the existing build and image records; returns what was locked.

    No versions: the build each built catalog version uses; no recipes: bookworm if built.
    """
    versions = versions or built_versions()
    recipes = recipes or _built_recipes(["bookworm"])
    if not versions and not recipes:
        raise KernlabError("nothing to lock: no kernel and no image is built",
                           "build first (`invoke build-kernel --version 6.1`, `invoke build-image`), "
                           "then run `invoke lock`")
    data = lock.read_lock()
    locked = []
    pins = data.setdefault("artifacts", {})
    for kernel in versions:  # a version or a build id; the entry is the build's version's
        record = find_build(kernel, "--version")
        data["kernels"][record.version] = kernel_entry_pinned(record)
        locked.append(f"kernel {record.version} ({record.id})")
        pins.update(_pins(layers.KERNEL, record))
        if headers := find_headers(record):
            pins.update(_pins(layers.HEADERS, headers))
    for recipe in recipes:
        data["images"][recipe] = _image_entry(recipe)
        locked.append(f"image {recipe}")
        pins.update(_pins(IMAGE, find_image(recipe)))
    if not pins:
        del data["artifacts"]
    return lock.write_lock(data), locked


def _pins(kind: registry.Kind, record: registry.Record) -> dict[str, str]:
    """``{kernel:6.1-<key>: digest}`` for an artifact pulled or pushed here (else nothing):
    a pinned key is pulled only at that digest."""
    record = registry.as_json(record)
    digest = registry.digest_of(kind, record)
    return {kind.lock_name(str(record[kind.name_field]), str(record["key"])): digest} if digest else {}


def _built_recipes(recipes: list[str]) -> list[str]:
    """Those of ``recipes`` whose image is built as the recipe is now."""
    built = []
    for recipe in recipes:
        with contextlib.suppress(KernlabError):
            find_image(recipe)
            built.append(recipe)
    return built


def _image_entry(recipe: str) -> dict[str, Any]:
    """The lock entry of the built image ``recipe`` and the vm/ files as they are now."""
    image = find_image(recipe)
    return lock.image_entry(image.key, image.packages, input_files_sha256(recipe))
