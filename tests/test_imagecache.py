"""This machine's image cache: an image built in one work area is taken by another (a second
checkout, a test's area, a --hosts host on this machine) instead of being built again; the
taken disk is checked by sha256 first, and a bad one is built around, not used."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kernlab.core.progress import reporter
from kernlab.core.util import sha256_file
from kernlab.guest import imagecache

NAME = "bookworm-0123456789ab"


@pytest.fixture
def areas(tmp_path, monkeypatch):
    """Two state dirs and one machine cache; an image built into the first."""
    monkeypatch.setenv("KERNLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(imagecache.ENV, raising=False)
    first = tmp_path / "a" / "images" / NAME
    (first / "keys").mkdir(parents=True)
    (first / "rootfs.ext4").write_bytes(b"ext4" * 1000)
    (first / "keys" / "client_ed25519").write_text("private\n")
    (first / "keys" / "client_ed25519").chmod(0o600)
    record = {"dir": str(first), "key": "0123456789ab" * 5,
              "image": {"path": str(first / "rootfs.ext4"), "sha256": sha256_file(first / "rootfs.ext4")},
              "client_key": str(first / "keys" / "client_ed25519"), "build_log": str(first / "build.log")}
    (first / "image.json").write_text(json.dumps(record))
    return first, tmp_path / "b" / "images" / NAME


def test_an_image_kept_by_one_area_is_taken_by_another_with_its_paths(areas):
    first, second = areas
    assert imagecache.take(second) is None  # nothing kept yet: the caller builds
    imagecache.keep(first)
    record = imagecache.take(second)
    assert record["dir"] == str(second) and record["image"]["path"] == str(second / "rootfs.ext4")
    assert json.loads((second / "image.json").read_text()) == record
    assert (second / "rootfs.ext4").read_bytes() == (first / "rootfs.ext4").read_bytes()
    assert stat.S_IMODE((second / "keys" / "client_ed25519").stat().st_mode) == 0o600
    assert stat.S_IMODE(imagecache.kept_dir(NAME).stat().st_mode) == 0o700
    assert not list(second.parent.glob(f".{NAME}.tmp-*"))


def test_a_kept_disk_that_fails_its_sha256_is_not_used(areas, capsys):
    first, second = areas
    imagecache.keep(first)
    kept_disk = imagecache.kept_dir(NAME) / "rootfs.ext4"
    kept_disk.unlink()  # the kept copy replaced (a hard link shares the first area's bytes)
    kept_disk.write_bytes(b"tampered")
    with reporter().step("test"):
        assert imagecache.take(second) is None
    assert not second.exists() and not list(second.parent.glob(f".{NAME}.tmp-*"))
    assert kept_disk.read_bytes() == b"tampered"  # left for the user to look at
    assert "not used" in capsys.readouterr().err


def test_sharing_off_takes_and_keeps_nothing(areas, monkeypatch):
    first, second = areas
    monkeypatch.setenv(imagecache.ENV, "0")
    imagecache.keep(first)
    assert not imagecache.kept_dir(NAME).exists()
    monkeypatch.delenv(imagecache.ENV)
    imagecache.keep(first)
    monkeypatch.setenv(imagecache.ENV, "0")
    assert imagecache.take(second) is None and not Path(second).exists()
