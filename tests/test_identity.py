"""Source identity: a tarball and a git tree of the same files name the same source."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from areas import one_kernel_areas, resolve

from kernlab.core.util import sha256_file
from kernlab.kernel.build import make_plan, prepared_tree
from kernlab.kernel.identity import MARKER, tree_sha256
from kernlab.kernel.source import tree_identity

FILES = {
    "Makefile": (b"VERSION = 9\nPATCHLEVEL = 9\nSUBLEVEL = 0\nEXTRAVERSION =\n", 0o644),
    "kernel/fork.c": (b"int fork(void) { return 0; }\n", 0o644),
    "scripts/setlocalversion": (b"#!/bin/sh\necho\n", 0o755),
}
LINK = ("include/fork.c", "../kernel/fork.c")


def write_tarball(path: Path, top: str, files: dict[str, tuple[bytes, int]]) -> str:
    """A .tar.xz of ``files`` (and one symlink) under ``top``/, as kernel.org makes them."""
    with tarfile.open(path, "w:xz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"{top}/{LINK[0]}")
        link.type, link.linkname = tarfile.SYMTYPE, LINK[1]
        tar.addfile(link)
    return sha256_file(path)


def git_tree(path: Path, files: dict[str, tuple[bytes, int]]) -> str:
    """A git repository with ``files`` (and the symlink) committed; returns the commit."""
    for name, (data, mode) in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
        (path / name).chmod(mode)
    (path / LINK[0]).parent.mkdir(parents=True, exist_ok=True)
    (path / LINK[0]).symlink_to(LINK[1])
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "tree"], check=True)
    done = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def areas(tmp_path, monkeypatch):
    """Own cache, work area, lock and a one-kernel catalog with no patches."""
    return one_kernel_areas(tmp_path, monkeypatch, {"tarball": {"url": "http://127.0.0.1:9/x.tar.xz",
                                                           "sha256": None}}, patches=[])


def test_a_tarball_and_a_git_tree_of_the_same_files_have_one_identity(areas):
    sha = write_tarball(areas / "linux-9.9.tar.xz", "linux-9.9", FILES)
    (areas / "repo").mkdir()
    commit = git_tree(areas / "repo", FILES)

    from_tarball = resolve(areas, tarball=areas / "linux-9.9.tar.xz", sha256=sha)
    from_git = resolve(areas, git=areas / "repo")
    assert (from_tarball.sha256, from_git.sha256) == (sha, commit)  # two routes, two file names
    scratch, log = areas / "scratch", areas / "x.log"
    assert tree_identity(from_tarball, scratch, log) == tree_identity(from_git, scratch, log)

    # The build's own path (extract, identity, then patch) records the same identity.
    tree = prepared_tree(make_plan("9.9"), resolve(areas, git=areas / "repo"))
    assert (tree / MARKER).read_text().strip() == from_tarball.tree_sha256
    assert resolve(areas, git=areas / "repo").record()["tree_sha256"] == from_tarball.tree_sha256


@pytest.mark.parametrize("change", ["content", "exec bit", "link target", "extra file"])
def test_any_change_to_the_files_changes_the_identity(areas, change):
    files = dict(FILES)
    if change == "content":
        files["kernel/fork.c"] = (b"int fork(void) { return 1; }\n", 0o644)
    elif change == "exec bit":
        files["scripts/setlocalversion"] = (files["scripts/setlocalversion"][0], 0o644)
    elif change == "extra file":
        files["README"] = (b"hi\n", 0o644)
    top = areas / "a"
    write_tarball(areas / "a.tar.xz", "linux", FILES)
    write_tarball(areas / "b.tar.xz", "linux", files)
    for name in ("a", "b"):
        with tarfile.open(areas / f"{name}.tar.xz") as tar:
            tar.extractall(areas / name, filter="fully_trusted")
    if change == "link target":
        (areas / "b" / "linux" / LINK[0]).unlink()
        (areas / "b" / "linux" / LINK[0]).symlink_to("fork.c")
    assert tree_sha256(top / "linux") != tree_sha256(areas / "b" / "linux")


def test_the_top_directory_name_and_file_times_do_not_count(areas):
    write_tarball(areas / "a.tar.xz", "linux-9.9", FILES)
    write_tarball(areas / "b.tar.xz", "linux-source-9.9", FILES)
    for name in ("a", "b"):
        with tarfile.open(areas / f"{name}.tar.xz") as tar:
            tar.extractall(areas / name, filter="fully_trusted")
    (areas / "b" / "linux-source-9.9" / "Makefile").touch()
    assert tree_sha256(areas / "a" / "linux-9.9") == tree_sha256(areas / "b" / "linux-source-9.9")


def test_reproduce_compares_trees_not_files(areas):
    """A bundle built from the tarball; today the catalog names a git tree of the same files."""
    from kernlab.compare.reproduce import kernel_input_changes
    from kernlab.core.errors import KernlabError
    from kernlab.core.records import BuildRecord
    from kernlab.kernel.build import binutils_version, compiler_version, make_plan, plan_source

    def changes() -> list[str]:
        plan = make_plan("9.9")
        return kernel_input_changes(record, False, plan, plan_source(plan))

    sha = write_tarball(areas / "linux-9.9.tar.xz", "linux-9.9", FILES)
    (areas / "repo").mkdir()
    git_tree(areas / "repo", FILES)
    then = resolve(areas, tarball=areas / "linux-9.9.tar.xz", sha256=sha)
    tree_identity(then, areas / "scratch", areas / "x.log")
    fragment = areas / "KERNLAB_CONFIGS" / "base.config"
    record = BuildRecord.from_json({
        "version": "9.9", "source": then.record(), "patches": [],
        "fragments": [{"path": str(fragment), "sha256": sha256_file(fragment)}],
        "compiler": compiler_version("gcc"), "binutils": binutils_version()})
    catalog = areas / "KERNLAB_CONFIGS" / "kernels.yaml"
    data = yaml.safe_load(catalog.read_text())
    data["kernels"]["9.9"]["sources"] = [{"git": {"path": str(areas / "repo")}}]
    catalog.write_text(yaml.safe_dump(data))
    assert changes() == []  # same tree by another route

    (areas / "repo" / "kernel" / "fork.c").write_text("changed\n")
    subprocess.run(["git", "-C", str(areas / "repo"), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qam", "change"], check=True)
    with pytest.raises(KernlabError, match="built from other inputs: source tree changed from"):
        changes()
