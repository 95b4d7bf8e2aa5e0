"""The lab guest's root filesystem: mmdebstrap a Debian root, then `mke2fs -d` an ext4 image.

No root mounts, no loop devices. The image is keyed by the hash of its recipe
(``vm/<recipe>.yaml``) and of kernlab's init and fstab (``vm/init``, ``vm/fstab``); a
cached image is reused at once. The guest's SSH host key and the lab's client key are
made here, so the host key is known before the guest ever boots.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernlab.core import filelock, inuse, lock, paths, registry
from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.proc import capture, require_tool, run_logged
from kernlab.core.progress import reporter
from kernlab.core.records import ImageRecord
from kernlab.core.spec import SpecFile
from kernlab.core.util import atomic_write_json, hash_inputs, sha256_file, short, staging_dir
from kernlab.core.validate import plain_name
from kernlab.guest import imagecache

FORMAT = 1  # bump when the way an image is made changes (not only its recipe)
INIT_PATH = "/sbin/kernlab-init"
REQUIRED = ("suite", "mirror", "packages")
GUEST_FILES = ("init", "fstab")  # vm/ files copied into every image (part of its key)
VARIANTS = ("minbase", "apt")
RECIPE_KEYS = ("suite", "mirror", "variant", "size", "hostname", "packages")
MIB = 1 << 20
AUTO_HEADROOM_MIB = 1536  # free space in the guest for in-guest builds and traces

SSHD_CONFIG = """\
# kernlab: key-only root login, one pre-made host key, no DNS, no PAM (fast under TCG)
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
AcceptEnv LANG LC_*
MaxStartups 30
"""


def _image_layers(record: dict[str, Any], root: Path) -> list[registry.Layer]:
    """An image's registry layers: the disk (zstd, sparse again on unpack), its keys, its record."""
    return [
        registry.Layer("rootfs.ext4.zst", f"{registry.VENDOR}.image.rootfs.v1+zstd", "zst", ("rootfs.ext4",)),
        registry.Layer("keys.tar.zst", registry.TAR_ZSTD, "tar", ("keys",)),
        registry.Layer("image.json", f"{registry.VENDOR}.image.record.v1+json", "file", ("image.json",)),
    ]


# the image as an OCI artifact (`invoke push --image`, pulled by key before a build)
IMAGE = registry.Kind("image", "image", "image.json", "recipe", lambda record: Path(record["dir"]),
                      _image_layers)


def recipe_path(recipe: str) -> Path:
    """``vm/<recipe>.yaml``; a recipe is a plain name (it also names the image's folder)."""
    if problem := plain_name(recipe):
        raise KernlabError(f"image recipe {problem}", "give the name of a file in vm/ without .yaml, "
                           "e.g. bookworm")
    return paths.vm_dir() / f"{recipe}.yaml"


def load_recipe(recipe: str) -> dict[str, Any]:
    """Read and check ``vm/<recipe>.yaml``; errors name the file and the field."""
    path = recipe_path(recipe)
    if not path.is_file():
        known = sorted(p.stem for p in paths.vm_dir().glob("*.yaml"))
        raise NotFound(f"no image recipe {path}",
                       f"use one of: {', '.join(known) or '(none)'} or add vm/{recipe}.yaml")
    spec = SpecFile(path, "fix the recipe")
    data = spec.mapping(spec.load(empty={}), allowed=RECIPE_KEYS)
    missing = [k for k in REQUIRED if not data.get(k)]
    if missing:
        raise KernlabError(f"{path} lacks {', '.join(missing)}", "add them to the recipe")
    if data.setdefault("variant", "apt") not in VARIANTS:
        raise KernlabError(f"{path}: variant {data['variant']!r} is not supported",
                           f"use one of {', '.join(VARIANTS)}")
    for i, package in enumerate(spec.typed(data["packages"], list, "packages")):
        spec.typed(package, str, f"packages[{i}]")
    data.setdefault("size", "auto")
    data.setdefault("hostname", "kernlab")
    return data


def _guest_file(name: str) -> Path:
    path = paths.vm_dir() / name
    if not path.is_file():
        raise KernlabError(f"{path} is missing", f"restore vm/{name} from git")
    return path


def image_key(recipe: str) -> str:
    """Hash of everything that goes into the image: recipe, init, fstab, format."""
    files = {name: _guest_file(name).read_text() for name in GUEST_FILES}
    return hash_inputs({"format": FORMAT, "recipe": recipe_path(recipe).read_text(), **files})


def input_files_sha256(recipe: str) -> dict[str, str]:
    """sha256 of each file behind the image key (what kernlab.lock names when it moves)."""
    files = [recipe_path(recipe), *(_guest_file(name) for name in GUEST_FILES)]
    return {f"vm/{path.name}": sha256_file(path) for path in files}


def images_dir() -> Path:
    return paths.state_dir() / "images"


def image_dir(recipe: str, key: str) -> Path:
    return images_dir() / f"{recipe}-{short(key)}"


def find_image(recipe: str = "bookworm") -> ImageRecord:
    """The ImageRecord for the recipe as it is now; NotFound says to build it."""
    load_recipe(recipe)
    record_path = image_dir(recipe, image_key(recipe)) / "image.json"
    if not record_path.is_file():
        raise NotFound(f"no image built for recipe {recipe!r} as it is now",
                       f"run `invoke build-image --recipe {recipe}`")
    return ImageRecord.load(record_path)


def build_image(recipe: str = "bookworm", update_lock: bool = False) -> ImageRecord:
    """Build the image for ``recipe``, or return the cached record at once.

    Either way it is checked against kernlab.lock (recipe files, then package
    versions); ``update_lock`` accepts and records a difference instead.
    """
    spec = load_recipe(recipe)
    key = image_key(recipe)
    lock.check_image_inputs(recipe, key, input_files_sha256(recipe), update_lock)
    record = _cached_or_built(recipe, key, spec)
    lock.check_image_packages(recipe, record.packages, str(record.data.get("dir", "?")), update_lock)
    if update_lock:
        lock.update_image(recipe, lock.image_entry(record.key, record.packages, input_files_sha256(recipe)))
        reporter().note(f"{lock.lock_path()} updated for image {recipe}")
    return record


def _cached_or_built(recipe: str, key: str, spec: dict[str, Any]) -> ImageRecord:
    final = image_dir(recipe, key)
    if (final / "image.json").is_file():
        reporter().note(f"image {final.name} is cached")
        imagecache.keep(final)
        return ImageRecord.load(final / "image.json")
    with filelock.exclusive(_image_lock(final), f"build of image {final.name}"):
        if (final / "image.json").is_file():  # made by another process while we waited
            return ImageRecord.load(final / "image.json")
        taken = imagecache.take(final)
    if taken is not None:
        return ImageRecord.from_json(taken)
    pulled = registry.lookup(IMAGE, recipe, key, final, images_dir() / f".{final.name}.pull.lock")
    if pulled is not None:
        return ImageRecord.from_json(pulled.record)
    _check_host()
    # one build of an image at a time: a second waits (naming the first), then finds it cached
    with filelock.exclusive(_image_lock(final), f"build of image {final.name}"):
        if (final / "image.json").is_file():
            return ImageRecord.load(final / "image.json")
        built = _built(recipe, key, spec, final)
    imagecache.keep(final)
    return built


def _image_lock(final: Path) -> Path:
    return filelock.locks_dir(paths.state_dir()) / f"image-{final.name}.lock"


def _built(recipe: str, key: str, spec: dict[str, Any], final: Path) -> ImageRecord:
    """Build the image into ``final`` (under its lock): staging, then renamed into place."""
    log = images_dir() / f"{final.name}.build.log"  # outside the staging dir: kept on failure
    log.unlink(missing_ok=True)
    with reporter().step(f"build image {final.name}"), staging_dir(final) as stage:
        try:
            record = _build_in(stage, recipe, key, spec, final, log)
        except BaseException:
            _unmount_under(stage)  # never let the cleanup's rmtree walk into /proc or /dev
            raise
    shutil.move(log, final / "build.log")
    return ImageRecord.from_json(record)


def _build_in(stage: Path, recipe: str, key: str, spec: dict[str, Any], final: Path,
              log: Path) -> dict[str, Any]:
    """The build steps, in the staging dir that becomes ``final``."""
    started = time.monotonic()
    root = stage / "root"
    make_keys(stage)
    _debootstrap(spec, root, log)
    customize(root, stage, spec)
    packages = installed_packages(root)
    size = image_size(root, spec["size"])
    _make_ext4(root, stage / "rootfs.ext4", size, log)
    shutil.rmtree(root)
    record = _record(recipe, key, spec | {"size": size}, final, stage, packages,
                     time.monotonic() - started)
    atomic_write_json(stage / "image.json", record)
    return record


def _unmount_under(path: Path) -> None:
    """Unmount whatever a failed mmdebstrap left mounted below ``path`` (deepest first).

    If something stays mounted, move the directory aside and raise, so the staging
    cleanup cannot delete through the mount.
    """
    prefix = str(path.resolve()) + "/"
    for target in sorted(_mounts_under(prefix), key=len, reverse=True):
        if subprocess.run(["umount", target], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    if left := _mounts_under(prefix):
        kept = path.with_name(path.name + ".mounted")
        os.replace(path, kept)  # out of the staging cleanup's reach
        raise KernlabError(f"mounts left under {kept}: {', '.join(left)}",
                           "unmount them by hand, then delete the directory")


def _mounts_under(prefix: str) -> list[str]:
    return inuse.mounts_under(Path(prefix))


def _check_host() -> None:
    require_tool("mmdebstrap", "mmdebstrap")
    require_tool("mke2fs", "e2fsprogs")
    if os.geteuid() != 0:
        raise KernlabError("build-image needs root (mmdebstrap root mode keeps file owners "
                           "for mke2fs -d)", "run `sudo invoke build-image`")


def make_keys(stage: Path) -> None:
    """Make the guest host key and the lab client key (ed25519, private keys 0600)."""
    keys = stage / "keys"
    keys.mkdir(mode=0o700)
    for name in ("host_ed25519", "client_ed25519"):
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
        _write(keys / name, private, 0o600)
        _write(keys / f"{name}.pub", public + f" kernlab-{name}\n".encode(), 0o644)


def _write(path: Path, data: bytes | str, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (no window with wider permissions)."""
    raw = data.encode() if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(raw)
    os.chmod(path, mode)


def deb_cache(suite: str) -> Path:
    return paths.cache_dir() / "debs" / suite


def _debootstrap(spec: dict[str, Any], root: Path, log: Path) -> None:
    """mmdebstrap the root directory; downloaded .debs are kept in the cache for rebuilds."""
    cache = deb_cache(spec["suite"])
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mmdebstrap", f"--variant={spec['variant']}", "--mode=root", "--format=directory",
        "--include=" + ",".join(spec["packages"]),
        "--aptopt=Acquire::Retries 3", "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/info/*",
        "--skip=essential/unlink",
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
        f"--setup-hook=sync-in {cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {cache}",
        spec["suite"], str(root), spec["mirror"],
    ]
    reporter().note(f"mmdebstrap {spec['suite']} ({len(spec['packages'])} packages), log {log}")
    run_logged(cmd, log, what="mmdebstrap", timeout=3600,
               on_line=lambda line: reporter().status(line[:100]),
               fix=f"check the package names in the recipe and that {spec['mirror']} is reachable")


def customize(root: Path, stage: Path, spec: dict[str, Any]) -> None:
    """Install kernlab's init, sshd settings, keys, hostname and resolver into ``root``."""
    keys = stage / "keys"
    shutil.copyfile(paths.vm_dir() / "init", root / INIT_PATH.lstrip("/"))
    os.chmod(root / INIT_PATH.lstrip("/"), 0o755)
    ssh = root / "etc/ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    _write(ssh / "ssh_host_ed25519_key", (keys / "host_ed25519").read_bytes(), 0o600)
    _write(ssh / "ssh_host_ed25519_key.pub", (keys / "host_ed25519.pub").read_bytes(), 0o644)
    (ssh / "sshd_config.d").mkdir(exist_ok=True)
    _write(ssh / "sshd_config.d/kernlab.conf", SSHD_CONFIG, 0o644)
    dot_ssh = root / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    _write(dot_ssh / "authorized_keys", (keys / "client_ed25519.pub").read_bytes(), 0o600)
    _write(root / "etc/hostname", spec["hostname"] + "\n", 0o644)
    _write(root / "etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {spec['hostname']}\n", 0o644)
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    _write(resolv, "nameserver 10.0.2.3\n", 0o644)
    _write(root / "etc/fstab", (paths.vm_dir() / "fstab").read_text(), 0o644)


def installed_packages(root: Path) -> list[str]:
    """``name=version`` of every package installed in ``root`` (dpkg-query on its admin dir)."""
    out = capture(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                   "-f=${db:Status-Abbrev}${Package}=${Version}\n"])
    found = sorted(line[3:].strip() for line in out.splitlines() if line.startswith("ii"))
    if not found:
        raise KernlabError(f"dpkg-query found no packages in {root}",
                           "check the mmdebstrap log in the image staging dir")
    return found


def image_size(root: Path, wanted: str) -> str:
    """``wanted`` as given, or for ``auto`` the root's size plus room to work (MiB)."""
    if wanted != "auto":
        return wanted
    used = sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))
    mib = int(used * 1.15 / MIB) + AUTO_HEADROOM_MIB
    return f"{-(-mib // 256) * 256}M"


def _make_ext4(root: Path, image: Path, size: str, log: Path) -> None:
    run_logged(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "kernlab-root", "-d", root,
                image, size], log, what="mke2fs", timeout=600,
               fix=f"the recipe's size ({size}) may be too small for its packages")


def _record(recipe: str, key: str, spec: dict[str, Any], final: Path, stage: Path,
            packages: list[str], seconds: float) -> dict[str, Any]:
    """The ImageRecord, with paths as they will be after the staging dir is renamed."""
    keys = stage / "keys"
    return {
        "recipe": recipe,
        "key": key,
        "dir": str(final),
        "suite": spec["suite"],
        "image": {"path": str(final / "rootfs.ext4"),
                  "sha256": sha256_file(stage / "rootfs.ext4"), "format": "raw",
                  "size": spec["size"]},
        "init": INIT_PATH,
        "host_key_pub": (keys / "host_ed25519.pub").read_text().strip(),
        "client_key": str(final / "keys/client_ed25519"),
        "packages": packages,
        "build_log": str(final / "build.log"),  # moved there once the build succeeds
        "build_seconds": round(seconds, 1),
        "mmdebstrap": capture(["mmdebstrap", "--version"]),
    }
