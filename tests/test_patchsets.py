"""The shipped patch sets and lab fragments against real kernel trees.

Vanilla kernel.org trees are not part of the repository. A test that needs one takes the
tree its variable names, else extracts the pinned tarball KERNLAB_LOCAL_KERNELS holds (as
.ci/run sets it; checksum checked against that folder's SHA256SUMS), else is skipped
saying what to set:

    KERNLAB_VANILLA_4_15=/path/to/linux-4.15     vanilla 4.15.0    (or linux-4.15.tar.xz)
    KERNLAB_VANILLA_5_4=/path/to/linux-5.4.286   vanilla 5.4.286   (or linux-5.4.286.tar.xz)

The Debian trees (5.10 and 6.1) are taken from /usr/src/linux-source-X.Y.tar.xz when
the linux-source-X.Y package is installed, else from the .deb kernlab.lock pins when
kernlab's cache holds it (after a build), or from an extracted tree named by
KERNLAB_VANILLA_5_10 / KERNLAB_VANILLA_6_1. The 5.10 lab config is checked against
KERNLAB_VANILLA_5_10 or the whole /usr/src/linux-source-5.10.tar.xz, extracted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from guests import CI_BUILDS

from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.kconfig import load_model, requested_options, verify_config
from kernlab.kernel.patch import apply_series, read_series
from kernlab.kernel.source import cached_sha256, safe_extract

ROOT = Path(__file__).resolve().parent.parent
PATCHES = ROOT / "patches"
CONFIGS = ROOT / "configs"

VANILLA = {"4.15": "KERNLAB_VANILLA_4_15", "5.4": "KERNLAB_VANILLA_5_4"}
DEBIAN = {"5.10": "KERNLAB_VANILLA_5_10", "6.1": "KERNLAB_VANILLA_6_1", "6.12": "KERNLAB_VANILLA_6_12"}
SERIES = ["4.15", "5.4", "5.10", "6.1", "6.12"]
UPSTREAM_ID = re.compile(r"\b[0-9a-f]{12,40}\b")


LOCAL_TARBALLS = {"4.15": "linux-4.15.tar.xz", "5.4": "linux-5.4.286.tar.xz"}


@pytest.fixture(scope="module")
def vanilla_tree(tmp_path_factory):
    """``vanilla_tree(version)``: the tree its variable names, else the tarball kernlab's own
    extractor unpacks once per module (KERNLAB_LOCAL_KERNELS' pinned 4.15 and 5.4.286, as
    .ci/run sets it; /usr/src/linux-source-5.10.tar.xz), else skipped saying what to set.
    The extracted trees (about 1 GB each) are removed when the module ends."""
    extracted: dict[str, Path] = {}

    def tree(version: str) -> Path:
        var = VANILLA.get(version) or DEBIAN[version]
        value = os.environ.get(var)
        if value:
            if not (Path(value) / "Makefile").is_file():
                pytest.skip(f"{var}={value} is not a kernel tree (no Makefile)")
            return Path(value)
        if version not in extracted:
            tarball = _tarball_of(version)
            if tarball is None:
                pytest.skip(f"no vanilla {version} tree: set {var} to its path (or "
                            "KERNLAB_LOCAL_KERNELS to the pinned tarballs' folder)")
            extracted[version] = safe_extract(tarball, tmp_path_factory.mktemp(f"v{version}"))
        return extracted[version]

    yield tree
    for path in extracted.values():
        shutil.rmtree(path, ignore_errors=True)


def built_in_this_ci_run(version: str) -> None:
    """Skip under CI for a kernel CI builds anyway: its build applies the series to the same
    pinned tree (exactly: no fuzz, no offset) and verifies every lab option, so extracting
    the tree again here costs minutes and checks nothing more (the applier's idempotence is
    tests/test_patch_and_config.py's). 5.10, which CI does not build, is still checked."""
    catalog_version = {"5.4": "5.4.286"}.get(version, version)
    if os.environ.get("CI") and catalog_version in CI_BUILDS:
        pytest.skip(f"CI builds {catalog_version}, which applies this series to the pinned tree "
                    "and verifies the lab config")


def _tarball_of(version: str) -> Path | None:
    """The checksum-verified local tarball of ``version``, if this machine has one."""
    if version in LOCAL_TARBALLS and os.environ.get("KERNLAB_LOCAL_KERNELS"):
        folder = Path(os.environ["KERNLAB_LOCAL_KERNELS"])
        tarball = folder / LOCAL_TARBALLS[version]
        lines = (folder / "SHA256SUMS").read_text().split("\n")
        sums = {name: digest for digest, name in (line.split() for line in lines if line.strip())}
        if tarball.is_file():
            assert cached_sha256(tarball) == sums[tarball.name], f"{tarball}: not the pinned file"
            return tarball
    debian = Path(f"/usr/src/linux-source-{version}.tar.xz")
    return debian if version in DEBIAN and debian.is_file() else None


def _makefile_release(tree: Path) -> str:
    fields = dict(re.findall(r"^(VERSION|PATCHLEVEL|SUBLEVEL) = (\d*)$",
                             (tree / "Makefile").read_text(), re.MULTILINE))
    return ".".join(fields[k] for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL") if fields.get(k))


def _scratch_copy(tree: Path, dest: Path) -> Path:
    """A hard-linked copy: GNU patch replaces the files it changes, the original stays."""
    subprocess.run(["cp", "-al", str(tree), str(dest)], check=True)
    return dest


def _touched_files(version: str) -> list[str]:
    files = []
    for patch in read_series(PATCHES / version):
        for line in patch.path.read_text().splitlines():
            if line.startswith("+++ b/"):
                files.append(line[len("+++ b/"):].split("\t")[0])
    return sorted(set(files))


def _debian_tree(version: str, dest: Path) -> Path:
    """The files the series touches, from the Debian tree (extracted or the tarball)."""
    value = os.environ.get(DEBIAN[version])
    if value:
        return _scratch_copy(Path(value), dest)
    tarball = Path(f"/usr/src/linux-source-{version}.tar.xz")
    wanted = {f"linux-source-{version}/{name}" for name in _touched_files(version)}
    wanted.add(f"linux-source-{version}/Makefile")
    if tarball.exists():
        with tarfile.open(tarball) as archive:
            members = [m for m in archive if m.name in wanted and m.isfile()]
            archive.extractall(dest, members=members, filter="data")
        return dest / f"linux-source-{version}"
    deb = _pinned_deb(version)
    if deb is None:
        pytest.skip(f"{tarball} missing and kernlab.lock's linux-source-{version} .deb is not in the cache: "
                    f"build {version} once, install linux-source-{version} or set {DEBIAN[version]}")
    from kernlab.kernel.debsource import open_tarball

    with open_tarball(deb) as (_, stream), tarfile.open(fileobj=stream, mode="r|*") as archive:
        for member in archive:
            if member.name in wanted and member.isfile():
                archive.extract(member, dest, filter="data")
    return dest / f"linux-source-{version}"


def _pinned_deb(version: str) -> Path | None:
    """The linux-source .deb kernlab.lock pins for ``version``, if kernlab's cache holds it."""
    from kernlab.core.lock import read_lock
    from kernlab.kernel.debsource import DebPin, cached_deb

    pin = DebPin.from_lock(read_lock()["kernels"].get(version))
    return cached_deb(pin.deb_sha256) if pin else None


# ---------------------------------------------------------------- no tree needed
@pytest.mark.parametrize("version", SERIES)
def test_series_names_its_release_and_every_patch_has_a_header(version):
    series = PATCHES / version / "series"
    first = series.read_text().splitlines()[0]
    assert re.match(r"^# written for: \d+\.\d+(\.\d+)?\b", first), first
    patches = read_series(PATCHES / version)
    assert patches, f"{series} lists no patch"
    for patch in patches:
        text = patch.path.read_text()
        header = text.split("\n--- a/", 1)[0].split("\ndiff --git ", 1)[0]
        assert len(header.strip().splitlines()) >= 3, f"{patch.name}: header too short"
        assert "Upstream:" in header, f"{patch.name}: header names no upstream commit (or `none`)"
        if "Upstream: none (lab-only" not in header:  # the copyout and make-probeable patches
            assert UPSTREAM_ID.search(header), f"{patch.name}: backport without an upstream commit id"


@pytest.mark.parametrize("version", SERIES)
def test_copyout_patch_makes_it_noinline_and_exported(version):
    text = next(p for p in read_series(PATCHES / version) if "copyout" in p.name).path.read_text()
    # 6.12 brings copyout back with copy_to_user_iter's return type; the arguments are 6.1's
    assert re.search(r"^\+noinline (int|size_t) copyout\(void __user \*to, const void \*from, size_t n\)",
                     text, re.MULTILINE)
    assert "+EXPORT_SYMBOL(copyout);" in text
    # 4.15's access_ok() takes VERIFY_WRITE; 5.0 dropped the argument.
    if version == "4.15":
        assert "access_ok(VERIFY_WRITE, to, n)" in text


@pytest.mark.parametrize("version", ["4.15", "5.4", "5.10", "6.12"])
def test_catalog_entry_uses_the_series_and_fragments(version):
    spec = load_catalog().kernel(version)
    assert version in spec.patches
    assert spec.fragments[-1] == f"lab-{version}.config"
    for fragment in spec.fragments:
        assert (CONFIGS / fragment).is_file(), fragment


def test_options_absent_from_4_15_are_not_requested_for_it():
    requests = requested_options([CONFIGS / f for f in load_catalog().kernel("4.15").fragments])
    absent = {"DEBUG_INFO_BTF", "IKHEADERS", "BPF_KPROBE_OVERRIDE", "XDP_SOCKETS"}
    assert not absent & {r.name for r in requests}
    notrace = [r for r in requests if r.name == "KPROBE_EVENTS_ON_NOTRACE"]
    assert notrace and notrace[0].optional, "KPROBE_EVENTS_ON_NOTRACE (4.19+) must be optional"


# ---------------------------------------------------------------- vanilla trees
@pytest.mark.slow
@pytest.mark.parametrize("version", ["4.15", "5.4"])
def test_series_applies_to_the_vanilla_tree(version, tmp_path, vanilla_tree):
    built_in_this_ci_run(version)
    vanilla = vanilla_tree(version)
    tree = _scratch_copy(vanilla, tmp_path / "tree")
    patches = read_series(PATCHES / version)
    for patch in patches:  # each patch on its own, in order: dry run first, as `patch` users do
        dry = subprocess.run(["patch", "-p1", "--dry-run", "--forward", "--batch", "-i", str(patch.path)],
                             cwd=tree, capture_output=True, text=True, check=False)
        assert dry.returncode == 0, f"{patch.name}:\n{dry.stdout}{dry.stderr}"
        subprocess.run(["patch", "-p1", "-s", "--batch", "-i", str(patch.path)], cwd=tree, check=True)
    # the tool's strict applier sees a patched tree and applies nothing twice
    records = apply_series(tree, patches, _makefile_release(tree), tmp_path / "patch.log")
    assert [r["name"] for r in records] == [p.name for p in patches]
    text = (tree / "lib" / "iov_iter.c").read_text()
    assert re.search(r"^noinline (int|size_t) copyout\(", text, re.MULTILINE)
    assert "EXPORT_SYMBOL(copyout);" in text
    # the original tree is untouched
    assert "static int copyout(" in (vanilla / "lib" / "iov_iter.c").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["4.15", "5.4", "5.10"])
def test_lab_config_verifies_on_the_vanilla_tree(version, tmp_path, vanilla_tree):
    built_in_this_ci_run(version)
    tree = vanilla_tree(version)
    spec = load_catalog().kernel(version)
    obj = tmp_path / "obj"
    obj.mkdir()
    fragments = [CONFIGS / f for f in spec.fragments]

    def run(*cmd: str) -> None:
        done = subprocess.run(list(cmd), cwd=tree, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"

    run("make", f"O={obj}", "ARCH=x86_64", spec.base)
    run("sh", "scripts/kconfig/merge_config.sh", "-m", "-O", str(obj), str(obj / ".config"),
        *map(str, fragments))
    run("make", f"O={obj}", "ARCH=x86_64", "olddefconfig")
    requests = requested_options(fragments)
    model = load_model(tree, obj / ".config", "x86_64")
    result = verify_config(requests, obj / ".config",
                           explain=model.explain if model else None,
                           exists=model.exists if model else None)
    assert not result.dropped, "\n".join(f"{r.name}={r.value} ({r.fragment}) {why}"
                                         for r, why in result.dropped)
    asked = {r.name for r in requests}
    for name in ("MODULES", "BPF_SYSCALL", "BPF_JIT", "BPF_EVENTS", "KPROBES", "KPROBE_EVENTS",
                 "UPROBE_EVENTS", "FTRACE", "FUNCTION_TRACER", "DYNAMIC_FTRACE", "FTRACE_SYSCALLS",
                 "DEBUG_FS", "KALLSYMS_ALL", "IKCONFIG_PROC", "EXT4_FS", "DEVTMPFS_MOUNT",
                 "VIRTIO_BLK", "VIRTIO_NET", "VIRTIO_CONSOLE", "SERIAL_8250_CONSOLE"):
        assert name in asked, f"CONFIG_{name} is not requested for {version}"
    na = {r.name for r in result.not_applicable}
    if version == "4.15":
        assert "KPROBE_EVENTS_ON_NOTRACE" in na
    else:
        assert "KPROBE_EVENTS_ON_NOTRACE" not in na
        assert {"KPROBE_EVENTS_ON_NOTRACE", "DEBUG_INFO_BTF"} <= {r.name for r in result.ok}


# ---------------------------------------------------------------- Debian trees
@pytest.mark.slow
@pytest.mark.parametrize("version", ["5.10", "6.1", "6.12"])
def test_series_applies_to_debian_linux_source(version, tmp_path):
    built_in_this_ci_run(version)
    if not shutil.which("patch"):
        pytest.skip("GNU patch is not installed")
    tree = _debian_tree(version, tmp_path / "src")
    patches = read_series(PATCHES / version)
    records = apply_series(tree, patches, _makefile_release(tree), tmp_path / "patch.log")
    assert [r["name"] for r in records] == [p.name for p in patches]
    text = (tree / "lib" / "iov_iter.c").read_text()
    assert re.search(r"^noinline (int|size_t) copyout\(", text, re.MULTILINE)
    assert "EXPORT_SYMBOL(copyout);" in text
