"""Fetching kernel sources: a real HTTP mirror on 127.0.0.1 stands in for kernel.org."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import tarfile
from pathlib import Path

import pytest
import yaml
from httpmirror import Mirror

from kernlab.core.errors import KernlabError
from kernlab.kernel import identity
from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.source import SourceOptions, resolve_source, safe_extract


def make_tarball(path: Path, members: dict[str, bytes]) -> str:
    """A .tar.xz with ``members`` under linux-9.9/; returns its sha256."""
    with tarfile.open(path, "w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"linux-9.9/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Own cache, work area and catalog directory for one test."""
    for name in ("KERNLAB_CACHE", "KERNLAB_WORK", "KERNLAB_CONFIGS"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.delenv("KERNLAB_MIRROR", raising=False)
    return tmp_path


@pytest.fixture
def served(isolated):
    """A 'kernel' tarball of ~600 KiB (random bytes, so xz cannot shrink it) on a mirror."""
    root = isolated / "mirror" / "v9.x"
    root.mkdir(parents=True)
    rng = __import__("random").Random(7)
    payload = bytes(rng.getrandbits(8) for _ in range(600_000))
    sha = make_tarball(root / "linux-9.9.tar.xz", {"Makefile": b"VERSION = 9\nPATCHLEVEL = 9\n",
                                                   "blob": payload})
    with Mirror(isolated / "mirror") as mirror:
        yield mirror, sha


def write_catalog(configs: Path, sha256: str | None, url: str = "{mirror}/v9.x/linux-9.9.tar.xz") -> None:
    (configs / "base.config").write_text("CONFIG_MODULES=y\n")
    catalog = {
        "mirror": "http://127.0.0.1:9",
        "kernels": {"9.9": {"release": "9.9", "sources": [{"tarball": {"url": url, "sha256": sha256}}],
                            "config": {"base": "tinyconfig", "fragments": ["base.config"]},
                            "compiler": "gcc"}},
    }
    (configs / "kernels.yaml").write_text(yaml.safe_dump(catalog))


def resolve(isolated: Path, **opts):
    catalog = load_catalog()
    return resolve_source(catalog.kernel("9.9"), catalog, SourceOptions(**opts), isolated / "source.log")


def downloads(isolated: Path) -> list[str]:
    return sorted(p.name for p in (isolated / "KERNLAB_CACHE" / "downloads").glob("*"))


def test_good_checksum_downloads_once_then_needs_no_network(isolated, served, monkeypatch):
    mirror, sha = served
    write_catalog(isolated / "KERNLAB_CONFIGS", sha)
    monkeypatch.setenv("KERNLAB_MIRROR", mirror.url)
    first = resolve(isolated)
    assert first.verified and first.sha256 == sha
    assert downloads(isolated) == [f"{sha}-linux-9.9.tar.xz"]
    monkeypatch.setenv("KERNLAB_MIRROR", "http://127.0.0.1:9")  # nothing listens there
    again = resolve(isolated)
    assert again.tarball == first.tarball
    assert len(mirror.state.requests) == 1


def test_bad_checksum_deletes_the_download(isolated, served, monkeypatch):
    mirror, _ = served
    write_catalog(isolated / "KERNLAB_CONFIGS", "0" * 64)
    monkeypatch.setenv("KERNLAB_MIRROR", mirror.url)
    with pytest.raises(KernlabError, match=r"checksum mismatch .* the download was deleted"):
        resolve(isolated)
    assert downloads(isolated) == []


def test_truncated_download_is_reported_and_kept_for_resume(isolated, served, monkeypatch):
    mirror, sha = served
    mirror.state.truncate_at = 100_000
    mirror.state.ranges = False  # every retry starts over and is cut again
    write_catalog(isolated / "KERNLAB_CONFIGS", sha)
    monkeypatch.setenv("KERNLAB_MIRROR", mirror.url)
    with pytest.raises(KernlabError, match=r"truncated at 100000 bytes .*run the command again to resume"):
        resolve(isolated)
    assert downloads(isolated) == [f"{sha}-linux-9.9.tar.xz.part"]


def test_interrupted_download_resumes_with_a_range_request(isolated, served, monkeypatch):
    mirror, sha = served
    mirror.state.truncate_at = 250_000  # the first answer is cut short, then the network heals
    mirror.state.truncate_once = True
    write_catalog(isolated / "KERNLAB_CONFIGS", sha)
    monkeypatch.setenv("KERNLAB_MIRROR", mirror.url)
    source = resolve(isolated)
    assert source.verified
    ranges = [r["range"] for r in mirror.state.requests]
    assert ranges[0] is None and ranges[1] == "bytes=250000-"
    assert downloads(isolated) == [f"{sha}-linux-9.9.tar.xz"]


def test_missing_file_on_mirror_is_a_404_error(isolated, served, monkeypatch):
    mirror, sha = served
    write_catalog(isolated / "KERNLAB_CONFIGS", sha, url="{mirror}/v9.x/linux-9.8.tar.xz")
    monkeypatch.setenv("KERNLAB_MIRROR", mirror.url)
    with pytest.raises(KernlabError, match=r"HTTP 404.*check the version and the mirror"):
        resolve(isolated)


def test_unreachable_mirror_names_host_and_fix(isolated, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    write_catalog(isolated / "KERNLAB_CONFIGS", "a" * 64)
    monkeypatch.setenv("KERNLAB_MIRROR", f"http://127.0.0.1:{port}")
    with pytest.raises(KernlabError, match=f"cannot reach 127.0.0.1:{port}.*KERNLAB_MIRROR"):
        resolve(isolated)


def test_unpinned_tarball_is_refused_unless_allowed(isolated, served, monkeypatch):
    mirror, sha = served
    write_catalog(isolated / "KERNLAB_CONFIGS", None)
    monkeypatch.setenv("KERNLAB_MIRROR", mirror.url)
    with pytest.raises(KernlabError, match=r"no pinned sha256.*--sha256 SUM.*--allow-unverified"):
        resolve(isolated)
    assert mirror.state.requests == []
    unverified = resolve(isolated, allow_unverified=True)
    assert unverified.sha256 == sha and not unverified.verified
    pinned = resolve(isolated, sha256=sha)
    assert pinned.verified


def test_local_tarball_with_wrong_pin_is_refused(isolated, tmp_path):
    sha = make_tarball(tmp_path / "k.tar.xz", {"Makefile": b"VERSION = 9\n"})
    write_catalog(isolated / "KERNLAB_CONFIGS", None)
    with pytest.raises(KernlabError, match="expected 0000"):
        resolve(isolated, tarball=tmp_path / "k.tar.xz", sha256="0" * 64)
    assert resolve(isolated, tarball=tmp_path / "k.tar.xz", sha256=sha).verified


@pytest.mark.parametrize(
    ("member", "kind", "why"),
    [
        ("linux-9.9/../../evil", tarfile.REGTYPE, "path leaves the tree"),
        ("/etc/evil", tarfile.REGTYPE, "absolute path"),
        ("linux-9.9/link", tarfile.SYMTYPE, "points outside the tree"),
    ],
)
def test_archive_members_escaping_the_tree_are_refused(tmp_path, member, kind, why):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(member)
        info.type = kind
        if kind == tarfile.SYMTYPE:
            info.linkname = "../../../etc/passwd"
        tar.addfile(info, io.BytesIO(b""))
    dest = tmp_path / "out"
    with pytest.raises(KernlabError, match=why):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil").exists()
    assert not list(dest.rglob("link"))


def chained_links_tar(path: Path, compression: str = "") -> None:
    """t/s2 -> '.', t/s1 -> 's2/..' (the top, inside), t/s3 -> 's1/..' (one above the top:
    outside, though 't/s1/..' reads as 't'), then a file written through t/s3."""
    with tarfile.open(path, f"w:{compression}") as tar:
        top = tarfile.TarInfo("t")
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        for name, target in (("t/s2", "."), ("t/s1", "s2/.."), ("t/s3", "s1/..")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
        evil = tarfile.TarInfo("t/s3/evil")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))


@pytest.mark.parametrize("route", ["file", "stream"])
def test_a_symlink_reaching_out_through_earlier_symlinks_is_refused(tmp_path, route):
    """Read lexically, t/s3 -> s1/.. stays in t; followed through t/s1 and t/s2 it leaves the
    tree. Both routes (an archive file, checked then unpacked by GNU tar; a stream, checked
    as it unpacks) follow the links the archive made, and nothing lands beside the tree."""
    archive = tmp_path / "chain.tar.gz"
    chained_links_tar(archive, "gz")
    dest = tmp_path / "area" / "out"
    with pytest.raises(KernlabError, match=re.escape("t/s3' refused: symlink to s1/.. points outside")):
        if route == "file":
            safe_extract(archive, dest)
        else:
            with archive.open("rb") as stream:
                safe_extract(None, dest, stream=stream)
    assert not (tmp_path / "area" / "evil").exists() and not list(tmp_path.rglob("evil"))


def test_gnu_tar_and_the_stream_route_make_the_same_tree(tmp_path):
    """An archive file unpacked by GNU tar and the same archive streamed through Python's
    tarfile give the same tree identity: files, the owner's x bit, symlinks."""
    archive = tmp_path / "k.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for name, data, mode in (("linux-9.9/Makefile", b"VERSION = 9\n", 0o644),
                                 ("linux-9.9/scripts/run.sh", b"#!/bin/sh\n", 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("linux-9.9/tools/run")
        link.type, link.linkname = tarfile.SYMTYPE, "../scripts/run.sh"
        tar.addfile(link)
    by_file = safe_extract(archive, tmp_path / "a")
    with archive.open("rb") as stream:
        by_stream = safe_extract(None, tmp_path / "b", stream=stream)
    assert by_file.name == by_stream.name == "linux-9.9"
    assert (by_file / "tools" / "run").read_bytes() == b"#!/bin/sh\n"
    assert (by_file / "scripts" / "run.sh").stat().st_mode & 0o100
    assert identity.tree_sha256(by_file) == identity.tree_sha256(by_stream)


def test_an_xz_archive_with_bytes_after_its_stream_is_refused_and_nothing_unpacked(tmp_path):
    """The check pass decompresses with `xz -T0`; xz's own verdict counts, not only tar's end
    marker: a whole tar followed by stray bytes is one line, and no tree is left."""
    archive = tmp_path / "k.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        info = tarfile.TarInfo("linux-9.9/Makefile")
        info.size = 12
        tar.addfile(info, io.BytesIO(b"VERSION = 9\n"))
    whole = safe_extract(archive, tmp_path / "whole")
    assert (whole / "Makefile").read_bytes() == b"VERSION = 9\n"
    spoiled = tmp_path / "spoiled.tar.xz"
    spoiled.write_bytes(archive.read_bytes() + b"stray bytes\n")
    with pytest.raises(KernlabError, match=r"spoiled.tar.xz is not a complete tar archive \(xz says the "
                                           r"compressed data is corrupt or cut short; 1 members were read\)"):
        safe_extract(spoiled, tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())
