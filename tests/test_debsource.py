"""Debian sources pinned by kernlab.lock, against a real local apt repository (no mocks of apt)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aptrepo import AptRepo, build_deb, kernel_tarball, repackage
from areas import one_kernel_areas, resolve

from kernlab.core.errors import KernlabError
from kernlab.core.util import sha256_file
from kernlab.kernel.source import tree_identity

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "linux-source-9.9"
pytestmark = pytest.mark.skipif(not shutil.which("dpkg-scanpackages") or os.geteuid() != 0,
                                reason="needs dpkg-dev and root (apt-get update into private lists)")


def source_deb(work: Path, version: str, fork: bytes = b"int fork(void) { return 0; }\n") -> Path:
    files = {"Makefile": b"VERSION = 9\nPATCHLEVEL = 9\nSUBLEVEL = 1\n", "kernel/fork.c": fork}
    inner = kernel_tarball(files, f"linux-source-9.9-{version}")
    return build_deb(work, PACKAGE, version, {f"usr/src/{PACKAGE}.tar.xz": inner,
                                              f"usr/share/doc/{PACKAGE}/copyright": b"GPL-2\n"})


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """Own cache, work area and lock; a catalog whose 9.9 comes from Debian; a private apt."""
    one_kernel_areas(tmp_path, monkeypatch, {"debian": {"package": PACKAGE}}, release="9.9.1")
    repo = AptRepo(tmp_path)
    monkeypatch.setenv("APT_CONFIG", str(repo.config))
    (tmp_path / "debs").mkdir()
    return tmp_path, repo


def pin(base: Path, deb: Path, version: str) -> None:
    entry = {"debian": {"package": PACKAGE, "version": version, "deb_sha256": sha256_file(deb)}}
    (base / "kernlab.lock").write_text(json.dumps({"format": 1, "kernels": {"9.9": entry}, "images": {}}))


def test_the_archive_version_is_downloaded_into_the_cache_and_recorded(setup):
    base, repo = setup
    deb = source_deb(base / "debs", "9.9.1-1")
    repo.publish(deb)
    source = resolve(base)
    record = source.record()
    assert record["kind"] == "debian" and record["origin"] == f"{PACKAGE}=9.9.1-1"
    assert record["debian"]["version"] == "9.9.1-1"
    assert record["debian"]["deb_sha256"] == sha256_file(deb)
    cached = base / "KERNLAB_CACHE" / "downloads" / f"{sha256_file(deb)}-{deb.name}"
    assert Path(record["debian"]["file"]) == cached and cached.is_file()
    # The tarball is streamed out of the .deb: the tree is there, nothing was installed.
    assert tree_identity(source, base / "scratch", base / "x.log")
    assert not Path(f"/usr/src/{PACKAGE}.tar.xz").exists()


def test_an_archive_with_another_version_than_the_lock_stops_the_build(setup):
    base, repo = setup
    old, new = source_deb(base / "debs", "9.9.1-1"), source_deb(base / "debs", "9.9.2-1", b"changed\n")
    pin(base, old, "9.9.1-1")
    repo.publish(new)  # the archive moved on; the pinned .deb is in no cache
    with pytest.raises(KernlabError) as caught:
        resolve(base)
    message = caught.value.one_line()
    assert f"kernlab.lock pins {PACKAGE} 9.9.1-1" in message and f"offers {PACKAGE} 9.9.2-1" in message
    assert "invoke build-kernel --version 9.9 --update-lock" in message
    assert f"--deb PATH/{PACKAGE}_9.9.1-1_all.deb" in message

    # The pinned one from a copy: verified against the lock, cached, then used without apt.
    assert resolve(base, deb=old).record()["debian"]["version"] == "9.9.1-1"
    repo.publish()  # an empty archive: the cache alone serves the pin
    assert resolve(base).record()["debian"]["deb_sha256"] == sha256_file(old)

    # Accepting the archive's version.
    repo.publish(new)
    assert resolve(base, update_lock=True).record()["debian"]["version"] == "9.9.2-1"


def test_a_deb_unlike_the_pin_is_refused(setup):
    base, _ = setup
    old, other = source_deb(base / "debs", "9.9.1-1"), source_deb(base / "debs", "9.9.2-1", b"x\n")
    pin(base, old, "9.9.1-1")
    with pytest.raises(KernlabError, match=f"kernlab.lock pins {PACKAGE} 9.9.1-1 with {sha256_file(old)}"):
        resolve(base, deb=other)


def test_a_users_deb_with_no_pin_is_recorded_unverified(setup):
    base, _ = setup
    deb = source_deb(base / "debs", "9.9.1-1")
    record = resolve(base, deb=deb).record()
    assert record["verified"] is False and record["debian"]["deb_sha256"] == sha256_file(deb)


def test_the_archive_still_offering_the_pinned_version_is_no_drift(setup):
    base, repo = setup
    old, new = source_deb(base / "debs", "9.9.1-1"), source_deb(base / "debs", "9.9.2-1", b"changed\n")
    pin(base, old, "9.9.1-1")
    repo.publish(old, new)
    assert resolve(base).record()["debian"]["version"] == "9.9.1-1"


# ---------------------------------------------------------------- the real package
def real_deb() -> Path | None:
    found = sorted(Path("/var/cache/apt/archives").glob("linux-source-6.1_*_all.deb"))
    return found[-1] if found else None


@pytest.mark.skipif(real_deb() is None, reason="no linux-source-6.1 .deb in /var/cache/apt/archives")
def test_drift_of_the_real_linux_source_6_1_stops_build_kernel(tmp_path):
    """The real .deb repackaged as another version, served by a local archive: `invoke
    build-kernel --version 6.1` with a lock pinning the real one stops, naming both versions."""
    deb = real_deb()
    assert deb is not None
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    moved = repackage(deb, f"{version}+moved1", tmp_path)
    repo = AptRepo(tmp_path)
    repo.publish(moved)
    lock = tmp_path / "kernlab.lock"
    entry = {"debian": {"package": "linux-source-6.1", "version": version, "deb_sha256": sha256_file(deb)}}
    lock.write_text(json.dumps({"format": 1, "kernels": {"6.1": entry}, "images": {}}))
    # apt's own archives folder would hold the pinned file: point it at an empty one.
    (tmp_path / "apt.conf.d").mkdir()
    with open(repo.config, "a") as conf:
        conf.write(f'Dir::Cache::archives "{tmp_path}/empty-archives";\n')
    env = {**os.environ, **repo.env, "KERNLAB_LOCK": str(lock), "KERNLAB_CACHE": str(tmp_path / "cache"),
           "KERNLAB_WORK": str(tmp_path / "work")}
    env.pop("KERNLAB_LOCAL_KERNELS", None)
    done = subprocess.run([sys.executable, "-m", "invoke", "build-kernel", "--version", "6.1"], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert f"kernlab.lock pins linux-source-6.1 {version}" in last
    assert f"offers linux-source-6.1 {version}+moved1" in last and "--update-lock" in last
    assert last.startswith("kernlab: error: source drift:")  # not the tarball fallback's complaint
