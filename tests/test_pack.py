"""`invoke pack`: a bundle's inputs in one file, usable in a fresh work area without network.

The fast test packs a bundle whose kernel is a small tarball, unpacks it into fresh areas
and checks that the packed catalog, patches, fragments, lock and cached source give the
bundle's kernel inputs back with no network. The whole loop (rebuild, image, rerun, all
under `unshare -n`) is the slow test at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from guests import ci_build
from test_identity import FILES, write_tarball

from kernlab.artifacts.pack import SUFFIX, _lock_image, pack_bundle, packed_project, unpack
from kernlab.compare.reproduce import kernel_input_changes
from kernlab.core import paths
from kernlab.core.records import BuildRecord, ImageRecord
from kernlab.core.util import sha256_file
from kernlab.experiments.suite import load_experiment
from kernlab.guest.image import input_files_sha256
from kernlab.kernel.build import binutils_version, compiler_version, make_plan, plan_source
from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.source import SourceOptions, resolve_source, tree_identity

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bundle(tmp_path, monkeypatch):
    """A bundle of experiment hellotrace on a kernel 9.9 built from a local tarball (no image)."""
    for name in ("KERNLAB_CACHE", "KERNLAB_WORK", "KERNLAB_STATE", "KERNLAB_RESULTS", "KERNLAB_CONFIGS"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("KERNLAB_LOCK", str(tmp_path / "kernlab.lock"))
    monkeypatch.delenv("KERNLAB_LOCAL_KERNELS", raising=False)
    configs = tmp_path / "KERNLAB_CONFIGS"
    (configs / "base.config").write_text("CONFIG_MODULES=y\n")
    series = tmp_path / "patches-9.9"
    series.mkdir()
    (series / "series").write_text("# written for: 9.9\n0001-a.patch\n")
    (series / "0001-a.patch").write_text("--- a/Makefile\n+++ b/Makefile\n")
    tarball = tmp_path / "linux-9.9.tar.xz"
    sha = write_tarball(tarball, "linux-9.9", FILES)
    (configs / "kernels.yaml").write_text(
        "kernels:\n  '9.9':\n    release: '9.9'\n    compiler: gcc\n"
        f"    patches: ['{series}']\n"
        f"    sources: [{{file: {{path: '{tarball}', sha256: {sha}}}}}]\n"
        "    config: {base: tinyconfig, fragments: [base.config]}\n")
    catalog = load_catalog()
    source = resolve_source(catalog.kernel("9.9"), catalog, SourceOptions(), tmp_path / "s.log")
    tree_identity(source, tmp_path / "scratch", tmp_path / "s.log")
    build = {"version": "9.9", "source": source.record(), "config_base": "tinyconfig",
             "patches": [{"name": "0001-a.patch", "series": str(series),
                          "sha256": sha256_file(series / "0001-a.patch")}],
             "fragments": [{"path": str(configs / "base.config"),
                            "sha256": sha256_file(configs / "base.config")}],
             "compiler": compiler_version("gcc"), "binutils": binutils_version()}
    exp = load_experiment("hellotrace")
    folder = tmp_path / "KERNLAB_RESULTS" / "hellotrace" / "9.9" / "20260101T000000Z"
    folder.mkdir(parents=True)
    manifest = {"experiment": {"name": exp.name, "hash": exp.content_hash()}, "build": build, "image": None}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "result.json").write_text(json.dumps({"status": "PASS", "expectations": []}))
    (folder / "trace.txt").write_text("hello\n")
    return folder, build, tarball


def test_a_pack_holds_the_inputs_and_reproduces_them_offline(bundle, tmp_path, monkeypatch):
    folder, build, tarball = bundle
    pack = pack_bundle(folder)
    assert pack.name == f"hellotrace-9.9-{folder.name}{SUFFIX}"
    with tarfile.open(pack) as tar:
        names = set(tar.getnames())
    assert f"cache/downloads/{build['source']['sha256']}-linux-9.9.tar.xz" in names
    assert {"pack.json", "bundle/manifest.json", "root/kernlab.lock", "root/configs/base.config",
            "root/patches/patches-9.9/0001-a.patch", "root/experiments/hellotrace/experiment.yaml"} <= names

    # Another machine: fresh areas, the original files gone, no mirror answering.
    for name in ("KERNLAB_CACHE", "KERNLAB_WORK", "KERNLAB_STATE"):
        monkeypatch.setenv(name, str(tmp_path / "other" / name))
    monkeypatch.setenv("KERNLAB_MIRROR", "http://127.0.0.1:9")
    monkeypatch.setenv("KERNLAB_CONFIGS", str(tmp_path / "nowhere"))
    tarball.unlink()
    shutil.rmtree(tmp_path / "patches-9.9")
    dest = unpack(pack)
    assert dest.parent == paths.state_dir() / "packs"
    with packed_project(dest):
        catalog = load_catalog()
        assert list(catalog.kernels) == ["9.9"] and paths.root() == dest / "root"
        source = resolve_source(catalog.kernel("9.9"), catalog, SourceOptions(), tmp_path / "s.log")
        assert source.verified and source.sha256 == build["source"]["sha256"]
        plan = make_plan("9.9")
        assert kernel_input_changes(BuildRecord.from_json(build), False, plan, plan_source(plan)) == []
        packed = load_experiment("hellotrace")
        assert packed.dir == dest / "root" / "experiments" / "hellotrace"
        manifest = json.loads((folder / "manifest.json").read_text())
        assert packed.content_hash() == manifest["experiment"]["hash"]
    assert os.environ["KERNLAB_CONFIGS"] == str(tmp_path / "nowhere")  # restored


def test_a_changed_patch_is_not_packed_as_the_bundles(bundle):
    folder, build, _ = bundle
    Path(build["patches"][0]["series"], "0001-a.patch").write_text("edited\n")
    from kernlab.core.errors import KernlabError

    with pytest.raises(KernlabError, match=r"0001-a\.patch changed since the bundle"):
        pack_bundle(folder)


def test_a_build_from_a_removed_checkout_packs_this_checkouts_identical_files(bundle, tmp_path):
    """The build names patches and fragments in a worktree since removed: the files of the
    same name and sha256 in this checkout are packed (a traceback before)."""
    folder, build, _ = bundle
    patch, fragment = ROOT / "patches" / "6.1" / "series", ROOT / "configs" / "lab.config"
    first = next(line for line in patch.read_text().splitlines() if line and not line.startswith("#"))
    build["patches"] = [{"name": first, "series": "/gone/wt/patches/6.1",
                         "sha256": sha256_file(patch.parent / first)}]
    build["fragments"] = [{"path": "/gone/wt/configs/lab.config", "sha256": sha256_file(fragment)}]
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "build": build}))
    project = unpack(pack_bundle(folder, tmp_path / f"p{SUFFIX}")) / "root"
    assert (project / "patches" / "6.1" / first).read_bytes() == (patch.parent / first).read_bytes()
    assert (project / "configs" / "lab.config").read_bytes() == fragment.read_bytes()


def test_a_small_pack_locks_the_image_recipe_files_and_packages(tmp_path):
    """A small pack holds the image's lock entry: recipe key, the vm/ files' hashes, package versions."""
    image = json.loads((ROOT / "tests" / "data" / "records" / "image-bookworm.json").read_text())
    lock_file = tmp_path / "kernlab.lock"
    lock_file.write_text(json.dumps({"format": 1, "kernels": {}, "images": {}}))
    _lock_image(lock_file, ImageRecord.from_json(image))
    entry = json.loads(lock_file.read_text())["images"]["bookworm"]
    assert entry["recipe_sha256"] == image["key"]
    assert entry["files"] == input_files_sha256("bookworm") and entry["files"]
    assert entry["packages"]["bash"] and len(entry["packages"]) == len(image["packages"])


@pytest.mark.slow
def test_a_debian_sourced_build_packs_its_deb_and_resolves_offline(lab_kernel, tmp_path, monkeypatch):
    """6.1 comes from Debian's linux-source .deb: the pack carries that .deb, and a fresh area
    with no mirror and no local tarballs resolves the build's source from it, verified, with
    no input changed (the offline rebuild itself is the 4.15 loop below)."""
    folder = tmp_path / "bundle"
    folder.mkdir()
    exp = load_experiment("hellotrace")
    manifest = {"experiment": {"name": exp.name, "hash": exp.content_hash()}, "build": lab_kernel.data,
                "image": None}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "result.json").write_text(json.dumps({"status": "PASS", "expectations": []}))
    pack = pack_bundle(folder, tmp_path / f"deb{SUFFIX}", small=False)
    for name in ("KERNLAB_CACHE", "KERNLAB_WORK", "KERNLAB_STATE"):
        monkeypatch.setenv(name, str(tmp_path / "other" / name))
    monkeypatch.setenv("KERNLAB_MIRROR", "http://127.0.0.1:9")
    monkeypatch.delenv("KERNLAB_LOCAL_KERNELS", raising=False)
    dest = unpack(pack)
    with packed_project(dest):
        catalog = load_catalog()
        source = resolve_source(catalog.kernel("6.1"), catalog, SourceOptions(), tmp_path / "s.log")
        assert source.verified and source.sha256 == lab_kernel.data["source"]["sha256"]
        assert source.kind == "debian" and source.deb.is_relative_to(tmp_path / "other")  # the pack's .deb
        plan = make_plan("6.1")
        assert kernel_input_changes(lab_kernel, False, plan, plan_source(plan)) == []


@pytest.mark.slow
def test_pack_then_reproduce_offline_in_a_fresh_work_area(tmp_path):
    """The real loop: a hellotrace bundle made now on 4.15 (so it carries today's experiment
    and patches), packed, reproduced under `unshare -n` with fresh KERNLAB_WORK, KERNLAB_STATE
    and KERNLAB_CACHE and no KERNLAB_LOCAL_KERNELS: identical (bzImage, image package
    versions, expectations, masked trace). 4.15 rebuilds in about a third of 6.1's time; 6.1's
    Debian source in a pack is the test above."""
    ci_build("4.15")
    results = tmp_path / "made"
    ran = subprocess.run([sys.executable, "-m", "invoke", "run-experiment", "hellotrace", "--kernel", "4.15",
                          "--vm-name", "packtest"], cwd=ROOT, capture_output=True, text=True, check=False,
                         timeout=3600, env={**os.environ, "KERNLAB_RESULTS": str(results)})
    assert ran.returncode == 0, ran.stdout + ran.stderr
    found = next(path.parent for path in results.rglob("manifest.json"))
    made = subprocess.run([sys.executable, "-m", "invoke", "pack", str(found), "--out",
                           str(tmp_path / f"t{SUFFIX}")], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=1800)
    assert made.returncode == 0, made.stderr
    env = {**os.environ, **{name: str(tmp_path / name) for name in
                            ("KERNLAB_WORK", "KERNLAB_STATE", "KERNLAB_CACHE", "KERNLAB_RESULTS")}}
    env.pop("KERNLAB_LOCAL_KERNELS", None)  # the tarball comes from the pack, nowhere else
    # Compiled objects are no input (ccache keys them by the preprocessed source and the
    # flags): the reproduction shares this machine's, as a second checkout on it would. Its
    # downloads, .debs, sources and builds still start empty: only the pack supplies them.
    env["CCACHE_DIR"] = str(paths.ccache_dir())
    env.setdefault("KERNLAB_CCACHE_SHARE", "1")  # .ci/run sets it: paths relative to the area
    script = f"ip link set lo up && {sys.executable} -m invoke reproduce {tmp_path / f't{SUFFIX}'}"
    done = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False, timeout=7200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == "IDENTICAL"
