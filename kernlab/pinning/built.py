"""`invoke lock`: kernlab.lock entries written from the builds and images that exist."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from kernlab.core import lock
from kernlab.core.errors import KernlabError
from kernlab.guest.image import find_image, input_files_sha256
from kernlab.kernel.debsource import kernel_entry_pinned
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
    for kernel in versions:  # a version or a build id; the entry is the build's version's
        record = find_build(kernel, "--version")
        data["kernels"][record.version] = kernel_entry_pinned(record)
        locked.append(f"kernel {record.version} ({record.id})")
    for recipe in recipes:
        data["images"][recipe] = _image_entry(recipe)
        locked.append(f"image {recipe}")
    return lock.write_lock(data), locked


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
