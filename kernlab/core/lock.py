"""`kernlab.lock`: the pinned inputs of every kernel and image, committed by the user.

Per kernel: source sha256, patch and fragment hashes, compiler and binutils versions.
Per image: recipe hash and the exact package versions mmdebstrap installed.
A build whose inputs differ from the lock names what differs and stops, unless told
``--update-lock``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kernlab.core import paths
from kernlab.core.errors import BuildInputError, KernlabError
from kernlab.core.util import atomic_write_json, read_json

LOCK_FORMAT = 1


def lock_path() -> Path:
    override = os.environ.get("KERNLAB_LOCK")
    return Path(override).resolve() if override else paths.root() / "kernlab.lock"


def read_lock() -> dict[str, Any]:
    path = lock_path()
    if not path.is_file():
        return {"format": LOCK_FORMAT, "kernels": {}, "images": {}}
    try:
        data = read_json(path)
    except ValueError as error:
        raise KernlabError(f"{path} is not valid JSON ({error})",
                           "restore it from git or rewrite it with `invoke lock`") from None
    data.setdefault("kernels", {})
    data.setdefault("images", {})
    return data


def write_lock(data: dict[str, Any]) -> Path:
    data["format"] = LOCK_FORMAT
    atomic_write_json(lock_path(), data)
    return lock_path()


def add_patch(versions: list[str], name: str, sha256: str) -> list[str]:
    """Pin a patch just added to a series in the lock entries of ``versions`` that exist;
    the versions updated (their other inputs, the source above all, stay as pinned)."""
    data = read_lock()
    updated = [v for v in versions if v in data["kernels"]]
    for version in updated:
        data["kernels"][version].setdefault("patches", {})[name] = sha256
    if updated:
        write_lock(data)
    return updated


def kernel_entry(source_sha256: str, patches: list[dict], fragments: list[tuple[str, str]],
                 compiler: str, binutils: str, debian: dict[str, Any] | None = None) -> dict[str, Any]:
    """The lockable inputs of one kernel build (the source checksum pins the release).

    ``debian`` (package, version, deb_sha256) pins a Debian linux-source package: the
    archive moves on, the lock keeps the .deb that was used.
    """
    entry = {
        "source_sha256": source_sha256,
        "patches": {p["name"]: p["sha256"] for p in patches},
        "fragments": dict(fragments),
        "compiler": compiler,
        "binutils": binutils,
    }
    if debian:
        entry["debian"] = {k: debian[k] for k in ("package", "version", "deb_sha256")}
    return entry


def image_entry(key: str, packages: dict[str, str], files: dict[str, str]) -> dict[str, Any]:
    """The lockable inputs of an image: its recipe key, each vm/ file's hash (``files``, to
    name the one that changes later) and the installed package versions."""
    return {"recipe_sha256": key, "files": files, "packages": packages}


def differences(locked: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human lines naming what changed between a lock entry and the current inputs."""
    lines = []
    for field in sorted(set(locked) | set(current)):
        old, new = locked.get(field), current.get(field)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for name in sorted(set(old) | set(new)):
                if name not in new:
                    lines.append(f"{field}: {name} removed (locked {str(old[name])[:16]})")
                elif name not in old:
                    lines.append(f"{field}: {name} added ({str(new[name])[:16]})")
                elif old[name] != new[name]:
                    was, now = str(old[name])[:16], str(new[name])[:16]
                    lines.append(f"{field}: {name} changed from {was} to {now}")
        else:
            lines.append(f"{field}: changed from {old!r} to {new!r}")
    return lines


def check_kernel(version: str, current: dict[str, Any], update: bool, without: tuple[str, ...] = ()) -> None:
    """Stop when ``current`` inputs differ from the lock (unless ``update``); patches named in
    ``without`` (left out on purpose, `--no-patch`) are not expected."""
    locked = read_lock()["kernels"].get(version)
    if locked is None or update:
        return
    if without:
        kept = {n: s for n, s in locked.get("patches", {}).items() if n not in without}
        locked = {**locked, "patches": kept}
    changed = differences(locked, current)
    if changed:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise BuildInputError(
            f"inputs of kernel {version} differ from {lock_path()}: {changed[0]}{more}",
            "restore the locked inputs, or pass --update-lock to accept and record the change",
            flags=("--update-lock",), other_fix="restore the locked inputs",
            details="\n".join(changed))


def check_image_inputs(recipe: str, key: str, files: dict[str, str], update: bool) -> None:
    """Stop before building when the image's recipe, init or fstab differ from the lock."""
    locked = read_lock()["images"].get(recipe)
    if locked is None or update or locked.get("recipe_sha256") == key:
        return
    changed = differences({"files": locked.get("files", {})}, {"files": files}) if locked.get("files") else []
    changed = changed or [f"image key changed from {str(locked.get('recipe_sha256'))[:16]} to {key[:16]}"]
    _refuse(f"inputs of image {recipe} differ from {lock_path()}", changed,
            f"restore vm/{recipe}.yaml, vm/init and vm/fstab, or accept the change with "
            f"`invoke build-image --recipe {recipe} --update-lock`")


def check_image_packages(recipe: str, packages: dict[str, str], where: str, update: bool) -> None:
    """Stop when the image's installed package versions differ from the lock.

    Debian's archive moves on (security updates), so the same recipe can install other
    versions than the locked ones: the image is kept, but not used until accepted.
    """
    locked = read_lock()["images"].get(recipe)
    if locked is None or update:
        return
    changed = differences({"packages": locked.get("packages", {})}, {"packages": packages})
    if changed:
        fix = (f"accept the new versions with `invoke build-image --recipe {recipe} --update-lock`, "
               "or point the recipe's mirror at the locked archive snapshot (snapshot.debian.org)")
        _refuse(f"image {recipe} ({where}) installs other packages than {lock_path()}",
                changed, fix)


def _refuse(what: str, changed: list[str], fix: str) -> None:
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    raise KernlabError(f"{what}: {changed[0]}{more}", fix, details="\n".join(changed))


def update_image(recipe: str, entry: dict[str, Any]) -> None:
    lock = read_lock()
    lock["images"][recipe] = entry
    write_lock(lock)


def update_kernel(version: str, entry: dict[str, Any]) -> None:
    lock = read_lock()
    lock["kernels"][version] = entry
    write_lock(lock)
