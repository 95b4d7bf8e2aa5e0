"""This machine's tree cache: a tree extracted and patched in one work area is a hard-linked
copy in the next (another checkout, a test's area, a --hosts host, --rebuild-check), with
its identity; KERNLAB_TREE_CACHE=0 extracts every time."""

from __future__ import annotations

import pytest
from areas import one_kernel_areas, resolve
from test_identity import FILES, write_tarball

from kernlab.kernel import treecache
from kernlab.kernel.build import make_plan, prepared_tree
from kernlab.kernel.identity import MARKER


@pytest.fixture
def areas(tmp_path, monkeypatch):
    base = one_kernel_areas(tmp_path, monkeypatch, {"tarball": {"url": "http://127.0.0.1:9/x.tar.xz",
                                                               "sha256": None}}, patches=[])
    monkeypatch.delenv(treecache.ENV, raising=False)
    sha = write_tarball(base / "linux-9.9.tar.xz", "linux-9.9", FILES)
    return base, sha


def tree_in(work, base, sha, monkeypatch):
    monkeypatch.setenv("KERNLAB_WORK", str(work))
    return prepared_tree(make_plan("9.9"), resolve(base, tarball=base / "linux-9.9.tar.xz", sha256=sha))


def test_a_second_work_area_gets_the_first_ones_tree_hard_linked(areas, monkeypatch, capsys):
    base, sha = areas
    first = tree_in(base / "w1", base, sha, monkeypatch)
    kept = treecache.kept_dir(first.name)
    assert (kept / treecache.DONE).is_file()
    second = tree_in(base / "w2", base, sha, monkeypatch)
    assert second == base / "w2" / "src" / first.name
    assert "from this machine's cache" in capsys.readouterr().err
    fork = "kernel/fork.c"
    assert (second / fork).stat().st_ino == (first / fork).stat().st_ino == (kept / fork).stat().st_ino
    assert (second / "include/fork.c").is_symlink()
    assert (second / MARKER).read_text() == (first / MARKER).read_text()
    assert not list(second.parent.glob(".*tmp-*"))


def test_sharing_off_extracts_every_time(areas, monkeypatch, capsys):
    base, sha = areas
    monkeypatch.setenv(treecache.ENV, "0")
    first = tree_in(base / "w1", base, sha, monkeypatch)
    assert not treecache.kept_dir(first.name).exists()
    second = tree_in(base / "w2", base, sha, monkeypatch)
    assert (second / "kernel/fork.c").stat().st_ino != (first / "kernel/fork.c").stat().st_ino
    assert "from this machine's cache" not in capsys.readouterr().err


def test_an_unfinished_kept_tree_is_not_taken(areas, monkeypatch):
    base, sha = areas
    first = tree_in(base / "w1", base, sha, monkeypatch)
    kept = treecache.kept_dir(first.name)
    (kept / treecache.DONE).unlink()  # as a keep killed half-way would leave it (never renamed, in fact)
    second = tree_in(base / "w2", base, sha, monkeypatch)
    assert (second / "kernel/fork.c").stat().st_ino != (first / "kernel/fork.c").stat().st_ino
    assert (second / treecache.DONE).is_file()
