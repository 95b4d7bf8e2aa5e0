"""Debian's linux-source-X.Y as a pinned source: the .deb itself, by sha256, in kernlab's cache.

kernlab fetches the package with ``apt-get download`` (apt checks the file against the
archive's signed index), verifies it, keeps it as ``<cache>/downloads/<sha256>-<name>.deb``
and streams the kernel tarball straight out of it: nothing is installed and /usr/src is
not used. kernlab.lock records the package version and the .deb's sha256; with a pin:

- the pinned .deb in the cache is used as it is (no apt, no network);
- else the pinned version is downloaded if the archive still offers it (same sha256);
- else the archive has moved on (drift): the build stops, naming both versions.

apt runs with kernlab's environment, so ``APT_CONFIG`` selects another apt configuration
(the tests serve a local repository through a private one).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from kernlab.core import filelock, inuse, lock, paths
from kernlab.core.errors import KernlabError
from kernlab.core.hostdeps import update_apt_lists
from kernlab.core.proc import capture, require_tool, run_logged
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.core.util import atomic_write_json, read_json, sha256_file, why_not_a_file

TARBALL = re.compile(r"^usr/src/linux-source-[^/]+\.tar\.(xz|gz|bz2|zst)$")
POLICY_VERSION = re.compile(r"^\s+(?:\*\*\*\s+)?(\S+)\s+-?\d+\s*$")


class PinError(KernlabError):
    """kernlab.lock pins this source and it cannot be honoured: no other source may stand in."""


@dataclass(frozen=True)
class DebPin:
    """The exact package a kernel's source comes from, as kernlab.lock records it."""

    package: str
    version: str
    deb_sha256: str

    @classmethod
    def from_lock(cls, entry: dict[str, Any] | None) -> DebPin | None:
        deb = (entry or {}).get("debian")
        return cls(deb["package"], deb["version"], deb["deb_sha256"]) if deb else None

    def to_json(self) -> dict[str, str]:
        return {"package": self.package, "version": self.version, "deb_sha256": self.deb_sha256}


@dataclass(frozen=True)
class DebSource:
    """A verified .deb in the cache and the kernel tarball inside it."""

    deb: Path
    pin: DebPin
    member: str
    tarball_sha256: str
    verified: bool  # apt checked it against the archive's signed index, or it is the locked file


# ---------------------------------------------------------------- apt queries
def apt_versions(package: str) -> tuple[str, list[str]]:
    """(candidate, every version apt knows) from ``apt-cache policy``; ('', []) if unknown."""
    out = capture(["apt-cache", "policy", package])
    candidate = ""
    versions = []
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            candidate = line.split(":", 1)[1].strip()
        elif match := POLICY_VERSION.match(line):
            versions.append(match.group(1))
    return ("" if candidate == "(none)" else candidate), versions


def apt_sha256(package: str, version: str) -> str:
    """The sha256 the archive's index records for ``package`` at ``version`` ('' if unknown)."""
    for line in capture(["apt-cache", "show", f"{package}={version}"]).splitlines():
        if line.startswith("SHA256:"):
            return line.split(":", 1)[1].strip()
    return ""


def _refresh_lists(package: str, suite: str | None, log: Path) -> None:
    """apt does not know ``package``: add its suite and run apt-get update (needs root)."""
    if os.geteuid() != 0:
        raise KernlabError(f"apt knows no package {package}",
                           f"run `sudo apt-get update` (with Debian {suite or 'its suite'} in your apt "
                           "sources), or pass --deb PATH to a copy of the .deb")
    update_apt_lists(suite, log)


def _download(package: str, version: str, log: Path) -> tuple[Path, str]:
    """``apt-get download package=version`` into the cache; (verified file, its sha256)."""
    require_tool("apt-get", "apt")
    downloads = paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    expected = apt_sha256(package, version)
    if expected and (hit := cached_deb(expected)):
        return hit, expected
    name = f"{package}_{version}"
    with filelock.exclusive(filelock.locks_dir(paths.cache_dir()) / f"download-{name}.deb.lock",
                            f"download of {name}.deb"):
        if expected and (hit := cached_deb(expected)):  # fetched by the process we waited for
            return hit, expected
        for stale in downloads.glob(f".apt-{name}-*"):  # left by a killed download of it
            shutil.rmtree(stale, ignore_errors=True)
        return _apt_download(package, version, expected, log)


def _apt_download(package: str, version: str, expected: str, log: Path) -> tuple[Path, str]:
    """_download's work, under the package version's download lock."""
    downloads = paths.downloads_dir()
    staging = Path(tempfile.mkdtemp(prefix=f".apt-{package}_{version}-", dir=downloads))
    try:
        with inuse.using(staging, f"apt-get download {package}", temporary=True), \
                reporter().step(f"apt-get download {package}={version}"):
            run_logged(["apt-get", "download", f"{package}={version}"], log, cwd=staging,
                       what=f"apt-get download {package}={version}",
                       fix="check your apt sources and network (or pass --deb PATH)")
        files = list(staging.glob("*.deb"))
        if len(files) != 1:
            raise KernlabError(f"apt-get download {package}={version} left {len(files)} .deb files",
                               f"read {log}")
        actual = sha256_file(files[0])
        if expected and actual != expected:
            raise KernlabError(f"{files[0].name} has sha256 {actual}, the archive's index says {expected}",
                               "run `apt-get update` and retry; the download was deleted")
        final = downloads / f"{actual}-{files[0].name}"
        os.replace(files[0], final)
        return final, actual
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- the .deb file
def cached_deb(sha256: str) -> Path | None:
    """The cached .deb with this sha256, if kernlab has it."""
    return next(iter(sorted(paths.downloads_dir().glob(f"{sha256}-*.deb"))), None)


def find_cached(package: str, version: str) -> Path | None:
    """A cached .deb of ``package`` at ``version`` (by its file name), if any."""
    name = f"{package}_{version.replace(':', '%3a')}_"
    return next(iter(sorted(paths.downloads_dir().glob(f"*-{name}*.deb"))), None)


def deb_fields(deb: Path) -> tuple[str, str]:
    """(Package, Version) from a .deb's control file."""
    require_tool("dpkg-deb", "dpkg")
    out = capture(["dpkg-deb", "--show", "--showformat=${Package}\\t${Version}", str(deb)])
    package, _, version = out.partition("\t")
    if not package or not version:
        raise KernlabError(f"{deb} is not a Debian package (dpkg-deb cannot read it)",
                           "pass the linux-source-X.Y .deb that apt-get download fetches")
    return package, version


def store(deb: Path) -> tuple[Path, str]:
    """Copy a user's .deb into the cache (temporary name, verified, renamed); (path, sha256)."""
    sha = sha256_file(deb)
    if hit := cached_deb(sha):
        return hit, sha
    downloads = paths.downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / f"{sha}-{deb.name}"
    with inuse.temporary(final.with_name(f".{final.name}.part"), f"copying {deb.name}") as part:
        shutil.copyfile(deb, part)
        if sha256_file(part) != sha:
            raise KernlabError(f"copying {deb} into {downloads} changed it", "check the disk and retry")
        os.replace(part, final)
    return final, sha


@contextlib.contextmanager
def open_tarball(deb: Path, member: str | None = None) -> Iterator[tuple[str, IO[bytes]]]:
    """Stream the kernel tarball (``member`` or the one under usr/src/) out of ``deb``."""
    require_tool("dpkg-deb", "dpkg")
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as outer:
            for item in outer:
                name = str(PurePosixPath(item.name.removeprefix("./")))
                if item.isfile() and (name == member if member else TARBALL.match(name)):
                    handle = outer.extractfile(item)
                    assert handle is not None
                    yield name, handle
                    return
        raise KernlabError(f"{deb} holds no kernel tarball under usr/src/",
                           "pass a linux-source-X.Y package")
    finally:
        proc.kill()
        proc.wait()


def tarball_of(deb: Path, deb_sha256: str) -> tuple[str, str]:
    """(member, sha256) of the kernel tarball inside ``deb``, remembered by the .deb's sha256."""
    memo = paths.cache_dir() / "deb-tarballs.json"
    table: dict[str, list[str]] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        table = read_json(memo)
    if deb_sha256 not in table:
        with open_tarball(deb) as (name, handle):
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        table[deb_sha256] = [name, digest]
        atomic_write_json(memo, table)
    member, sha = table[deb_sha256]
    return member, sha


# ---------------------------------------------------------------- the decision
def fetch(package: str, suite: str | None, kernel: str, pin: DebPin | None, *, update: bool,
          given: Path | None, log: Path) -> DebSource:
    """The .deb to build ``kernel`` from, honouring kernlab.lock's ``pin`` unless ``update``."""
    verified = True
    if given is not None:
        deb, sha = _given(given, package, pin if not update else None, kernel)
        verified = bool(pin) and not update
        if not verified:
            reporter().warn(f"{given.name} is the user's file, pinned by nothing yet: the record says "
                            "unverified (`invoke lock` pins it)")
    elif pin is not None and not update:
        deb, sha = _pinned(package, suite, kernel, pin, log)
    else:
        deb, sha = _latest(package, suite, log)
    got_package, version = deb_fields(deb)
    if got_package != package:
        raise KernlabError(f"{deb} is {got_package}, not {package}", f"pass a {package} .deb")
    member, tarball_sha = tarball_of(deb, sha)
    return DebSource(deb, DebPin(package, version, sha), member, tarball_sha, verified)


def _given(path: Path, package: str, pin: DebPin | None, kernel: str) -> tuple[Path, str]:
    if not path.is_file():
        raise KernlabError(f"--deb {path} {why_not_a_file(path)}", "pass the path of a linux-source .deb")
    sha = sha256_file(path)
    if pin and sha != pin.deb_sha256:
        raise PinError(
            f"{path} has sha256 {sha}; kernlab.lock pins {pin.package} {pin.version} with {pin.deb_sha256}",
            f"pass the pinned .deb, or accept this one with `invoke build-kernel --version {kernel} "
            f"--deb {path} --update-lock`")
    return store(path)


def _pinned(package: str, suite: str | None, kernel: str, pin: DebPin, log: Path) -> tuple[Path, str]:
    candidate, versions = apt_versions(package)
    if hit := cached_deb(pin.deb_sha256):
        if candidate and candidate != pin.version:
            reporter().note(f"the archive offers {package} {candidate}; kernlab.lock keeps {pin.version} "
                            f"(cached); `--update-lock` moves to {candidate}")
        return hit, pin.deb_sha256
    if not versions:
        _refresh_lists(package, suite, log)
        candidate, versions = apt_versions(package)
    if hit := _from_apt_cache(package, pin):
        return store(hit)
    if pin.version not in versions:
        raise drift(package, kernel, pin, candidate)
    deb, sha = _download(package, pin.version, log)
    if sha != pin.deb_sha256:
        raise PinError(
            f"the archive's {package} {pin.version} has sha256 {sha}, kernlab.lock pins {pin.deb_sha256}",
            f"check your apt sources; `invoke build-kernel --version {kernel} --update-lock` accepts it")
    return deb, sha


def _from_apt_cache(package: str, pin: DebPin) -> Path | None:
    """apt's own download of the pinned .deb (its archives folder), when it is the pinned file."""
    found = _apt_archives_copy(package, pin.version)
    return found if found is not None and sha256_file(found) == pin.deb_sha256 else None


def drift(package: str, kernel: str, pin: DebPin, candidate: str) -> PinError:
    """The archive no longer offers the pinned version and the cache does not hold it."""
    offered = f"offers {package} {candidate}" if candidate else f"offers no {package}"
    return PinError(
        f"source drift: kernlab.lock pins {package} {pin.version} (.deb sha256 {pin.deb_sha256[:16]}) "
        f"but the archive {offered}, and the pinned .deb is not in {paths.downloads_dir()}",
        f"accept {candidate or 'the archive'}'s version with `invoke build-kernel --version {kernel} "
        f"--update-lock`, or use the pinned one: `invoke build-kernel --version {kernel} "
        f"--deb PATH/{package}_{pin.version}_all.deb` (from the machine that built it or a pack)")


def _latest(package: str, suite: str | None, log: Path) -> tuple[Path, str]:
    candidate, _ = apt_versions(package)
    if not candidate:
        _refresh_lists(package, suite, log)
        candidate, _ = apt_versions(package)
    if not candidate:
        raise KernlabError(f"apt offers no {package} (suite {suite or '?'})",
                           "check your apt sources, or pass --deb PATH to a copy of the .deb")
    return _download(package, candidate, log)


def pin_of_record(source: dict[str, Any], log: Path) -> DebPin:
    """The pin of a build record's Debian source, for records made before kernlab kept .debs.

    Such a record names the package version and the tarball's sha256: the .deb of that
    version (kernlab's cache, apt's archives folder, or the archive) must hold that very
    tarball; it is then kept in the cache by sha256, as a new build would keep it.
    """
    if pin := DebPin.from_lock(source):
        return pin
    package, _, version = str(source.get("origin", "")).partition("=")
    if source.get("kind") != "debian" or not version:
        raise KernlabError(f"the build's source {source.get('origin')} is not a Debian package",
                           "lock it as a tarball source")
    deb = find_cached(package, version) or _apt_archives_copy(package, version)
    if deb is None:
        deb, _ = _download(package, version, log)
    deb, sha = store(deb)
    member_sha = tarball_of(deb, sha)[1]
    if member_sha != source["sha256"]:
        raise KernlabError(
            f"{deb.name} holds a tarball with sha256 {member_sha}, the build used {source['sha256']}",
            "rebuild the kernel (`invoke build-kernel --version V`), then lock it")
    return DebPin(package, version, sha)


def kernel_entry_of(build: BuildRecord) -> dict[str, Any]:
    """The lock entry of the inputs ``build`` was made from (as its record names them)."""
    return lock.kernel_entry(
        build.source["sha256"], build.patches,
        [(Path(f["path"]).name, f["sha256"]) for f in build.fragments],
        build.compiler, build.binutils, debian=build.source.get("debian"))


def kernel_entry_pinned(build: BuildRecord) -> dict[str, Any]:
    """A build's lock entry; a Debian source is pinned to its .deb even in an older record."""
    entry = kernel_entry_of(build)
    if build.source.get("kind") == "debian" and "debian" not in entry:
        log = paths.cache_dir() / "lock-apt.log"
        entry["debian"] = pin_of_record(build.source, log).to_json()
    return entry


def _apt_archives_copy(package: str, version: str) -> Path | None:
    folder = Path(capture(["apt-config", "shell", "D", "Dir::Cache::archives/d"]).partition("'")[2]
                  .rstrip("'") or "/var/cache/apt/archives")
    return next(iter(sorted(folder.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))), None)
