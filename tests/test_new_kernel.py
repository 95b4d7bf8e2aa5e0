"""`invoke new-kernel`: a version added like another, on two small fake trees.

The like-version 9.9 has four patches: one that applies to 9.10 as it is, one whose file
moved down five lines (applies at an offset: refreshed), one whose context changed a little
(fuzz: needs porting) and one whose code is gone (fails: needs porting). The real `patch`
decides; the report, the copied and refreshed patches, the series, the fragment, the
catalog entry and the kept tree are what a user would look at.
"""

from __future__ import annotations

import difflib
import io
import tarfile
from pathlib import Path

import fakekernel
import pytest

LINES = [f"int line{i};\n" for i in range(1, 21)]
OLD = {"a.c": "".join(LINES), "b.c": "".join(LINES), "c.c": "".join(LINES),
       "d.c": "static int copyout(void)\n{\n\treturn 0;\n}\n"}
NEW = {"a.c": "".join(LINES),
       "b.c": "".join(f"int moved{i};\n" for i in range(5)) + "".join(LINES),
       "c.c": "".join(LINES).replace("int line8;", "long line8;"),
       "d.c": "size_t copy_to_user_iter(void)\n{\n\treturn 0;\n}\n"}


def makefile(patchlevel: int) -> str:
    return fakekernel.MAKEFILE.replace("PATCHLEVEL = 9", f"PATCHLEVEL = {patchlevel}")


def tarball(path: Path, top: str, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def diff(name: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{name}", f"b/{name}"))


def series(directory: Path) -> list[str]:
    """The like-version's four patches (each changes line 10 of a file, or copyout)."""
    directory.mkdir(parents=True)
    names = []
    for number, name in enumerate(("a.c", "b.c", "c.c", "d.c"), 1):
        old = OLD[name]
        new = (old.replace("int line10;", "int line10 = 1;") if name != "d.c"
               else old.replace("static int copyout", "noinline int copyout"))
        patch = f"{number:04d}-{name[0]}.patch"
        (directory / patch).write_text(f"kernlab: change {name}\n\nKernel:  9.9 (written for 9.9)\n\n"
                                       + diff(name, old, new))
        names.append(patch)
    (directory / "series").write_text("# written for: 9.9\n" + "\n".join(names) + "\n")
    return names


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, str]:
    """A project root (configs, patches) whose 9.9 comes from a local tarball, and a 9.10 tarball."""
    root = tmp_path / "root"
    (root / "patches").mkdir(parents=True)
    series(root / "patches" / "9.9")
    old = tarball(tmp_path / "linux-9.9.tar.gz", "linux-9.9", {"Makefile": makefile(9), **OLD})
    sha = fakekernel.hashlib.sha256(old.read_bytes()).hexdigest()
    fakekernel.catalog(root / "configs", {"file": {"path": str(old), "sha256": sha}},
                       patches=(str(root / "patches" / "9.9"),))
    text = (root / "configs" / "kernels.yaml").read_text().replace("fake.config", "lab-9.9.config")
    (root / "configs" / "kernels.yaml").write_text(text)
    (root / "configs" / "lab-9.9.config").write_text("# kernlab: 9.9 only\nCONFIG_BPF=y\n")
    tarball(tmp_path / "linux-9.10.tar.gz", "linux-9.10", {"Makefile": makefile(10), **NEW})
    env = fakekernel.environ(tmp_path)
    env["KERNLAB_ROOT"] = str(root)
    env["KERNLAB_CONFIGS"] = str(root / "configs")
    return env


def test_new_kernel_adds_the_entry_and_sorts_the_patches_into_copied_refreshed_and_to_port(lab, tmp_path):
    root = Path(lab["KERNLAB_ROOT"])
    new = str(tmp_path / "linux-9.10.tar.gz")
    out = fakekernel.cli(lab, "new-kernel", "9.10", "--like", "9.9", "--tarball", new)
    assert "9.9/0001-a.patch  applies cleanly: copied" in out
    assert "9.9/0002-b.patch  applies at an offset (hunk #1 of b.c moved +5 lines): refreshed" in out
    assert "9.9/0003-c.patch  NEEDS PORTING: hunk #1 of c.c applies only with fuzz" in out
    assert "9.9/0004-d.patch  NEEDS PORTING: hunk #1 of d.c does not apply" in out
    new = root / "patches" / "9.10"
    assert (new / "series").read_text().splitlines() == [
        "# written for: 9.10", "0001-a.patch", "0002-b.patch",
        "# 0003-c.patch: needs porting (patches/9.9; `invoke new-kernel` report)",
        "# 0004-d.patch: needs porting (patches/9.9; `invoke new-kernel` report)"]
    refreshed = (new / "0002-b.patch").read_text()
    assert "Kernel:  9.10 (written for 9.10; patches/9.9/0002-b.patch refreshed" in refreshed
    assert "@@ -12,7 +12,7 @@" in refreshed  # where the hunk applies now (it was line 7)
    assert "Kernel:  9.10 (written for 9.10; patches/9.9/0001-a.patch applies as is" in (
        new / "0001-a.patch").read_text()
    kept = tmp_path / "work" / "new-kernel" / "9.10"
    tree = kept / "linux-9.10"
    assert "int line10 = 1;" in (tree / "b.c").read_text() and "int line10;" in (tree / "c.c").read_text()
    assert (kept / "base" / "0004-d" / "d.c").read_text() == NEW["d.c"]
    assert f"diff -u --label a/d.c --label b/d.c {kept}/base/0004-d/d.c {tree}/d.c" in out
    fragment = (root / "configs" / "lab-9.10.config").read_text()
    assert fragment.startswith("# kernlab: 9.10, copied from lab-9.9.config") and "CONFIG_BPF=y" in fragment
    catalog = (root / "configs" / "kernels.yaml").read_text()
    assert catalog.index('"9.10":') < catalog.index("'9.9':") and "lab-9.10.config" in catalog
    # the entry plans as a build would: its series, its fragment
    plan = fakekernel.cli(lab, "build-kernel", "--version", "9.10", "--plan")
    assert "9.10/0001-a.patch" in plan and "lab-9.10.config" in plan


def test_new_kernel_refuses_what_would_overwrite_and_bad_input(lab, tmp_path):
    new = str(tmp_path / "linux-9.10.tar.gz")
    out = fakekernel.cli(lab, "new-kernel", "9.9", "--like", "9.9", "--tarball", new, code=1)
    assert "kernlab: error: kernel 9.9 is in the catalog already" in out
    out = fakekernel.cli(lab, "new-kernel", "../x", "--like", "9.9", "--tarball", new, code=1)
    assert "is not a kernel version like 6.12" in out
    out = fakekernel.cli(lab, "new-kernel", "9.10", "--like", "9.9", code=1)
    assert "9.9 is not from Debian: say where 9.10 comes from" in out
    (Path(lab["KERNLAB_ROOT"]) / "patches" / "9.10").mkdir()
    (Path(lab["KERNLAB_ROOT"]) / "patches" / "9.10" / "mine.patch").write_text("x")
    out = fakekernel.cli(lab, "new-kernel", "9.10", "--like", "9.9", "--tarball", new, code=1)
    assert "patches/9.10 exists and is not empty" in out
    assert not (tmp_path / "work" / "new-kernel").exists()
