"""Pinned sources: the catalog's sums, bad input, the shown pins and the committed kernlab.lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from httpmirror import Mirror
from test_source import make_tarball

from kernlab.core.errors import KernlabError
from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.source import SourceOptions, resolve_source

ROOT = Path(__file__).resolve().parent.parent
SUM_5_4_302 = "ae6a3207f12aa4d6cfb0fa793ec9da4a6fcdfdcb57d869d63d6b77e3a8c1423d"


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=False, timeout=600)


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


@pytest.fixture
def own_areas(tmp_path, monkeypatch):
    """Own cache, work area and lock; no local kernels, no mirror override."""
    for name in ("KERNLAB_CACHE", "KERNLAB_WORK", "KERNLAB_STATE"):
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("KERNLAB_LOCK", str(tmp_path / "kernlab.lock"))
    monkeypatch.delenv("KERNLAB_LOCAL_KERNELS", raising=False)
    monkeypatch.delenv("KERNLAB_MIRROR", raising=False)
    return tmp_path


# ---------------------------------------------------------------- the catalog's pins
def test_5_4_is_the_last_5_4_y_with_its_pinned_sum(own_areas):
    spec = load_catalog().kernel("5.4")
    assert spec.release == "5.4.302"
    assert spec.sources[0].options["sha256"] == SUM_5_4_302
    done = invoke("build-kernel", "--version", "5.4", "--plan", env={"KERNLAB_MIRROR": "http://192.0.2.1"})
    assert done.returncode == 0, done.stderr
    assert f"http://192.0.2.1/v5.x/linux-5.4.302.tar.xz sha256={SUM_5_4_302}" in done.stdout


def test_a_mirror_file_unlike_the_pin_is_refused_naming_both_sums(own_areas, monkeypatch):
    served = own_areas / "mirror" / "v5.x"
    served.mkdir(parents=True)
    other = make_tarball(served / "linux-5.4.302.tar.xz", {"Makefile": b"VERSION = 5\n"})
    with Mirror(own_areas / "mirror") as mirror:
        monkeypatch.setenv("KERNLAB_MIRROR", mirror.url)
        catalog = load_catalog()
        with pytest.raises(KernlabError) as caught:
            resolve_source(catalog.kernel("5.4"), catalog, SourceOptions(), own_areas / "source.log")
    assert f"got {other}, expected {SUM_5_4_302}" in caught.value.cause
    assert not list((own_areas / "KERNLAB_CACHE" / "downloads").glob("*.tar.xz"))


def test_list_kernels_shows_every_source_and_its_pin(own_areas):
    done = invoke("list-kernels")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.count("source: ") == len(load_catalog().kernels) == text.count("pinned: ")
    assert f"pinned: sha256={SUM_5_4_302[:12]}" in text
    assert "pinned: NOT PINNED" in text  # 5.4.286's kernel.org file: one public source only so far


# ---------------------------------------------------------------- bad input
def _catalog_with(tmp_path: Path, monkeypatch, extra: dict) -> Path:
    (tmp_path / "lab.config").write_text("CONFIG_MODULES=y\n")
    entry = {"release": "6.1.1", "compiler": "gcc", "sources": [{"debian": {"package": "linux-source-6.1"}}],
             "config": {"base": "tinyconfig", "fragments": ["lab.config"]}, **extra}
    path = tmp_path / "kernels.yaml"
    path.write_text(yaml.safe_dump({"kernels": {"6.1": entry}}))
    monkeypatch.setenv("KERNLAB_CONFIGS", str(tmp_path))
    return path


@pytest.mark.parametrize(("key", "meant"), [("samples_bfp", "samples_bpf"), ("symbol", "symbols")])
def test_an_unknown_catalog_key_is_refused_naming_key_and_file(tmp_path, monkeypatch, key, meant):
    path = _catalog_with(tmp_path, monkeypatch, {key: ["copyout"]})
    with pytest.raises(KernlabError) as caught:
        load_catalog()
    message = caught.value.one_line()
    assert str(path) in message and f"unknown key '{key}' in kernels.6.1" in message
    assert f"did you mean '{meant}'" in message


def test_an_unknown_source_option_is_refused(tmp_path, monkeypatch):
    _catalog_with(tmp_path, monkeypatch, {"sources": [{"tarball": {"url": "x", "sha265": "0" * 64}}]})
    with pytest.raises(KernlabError,
                       match=r"unknown key .sha265. in kernels\.[\d.]+\.sources\[0\]\.tarball \(did you"):
        load_catalog()


def test_an_upper_case_catalog_sum_is_normalised(tmp_path, monkeypatch):
    _catalog_with(tmp_path, monkeypatch, {"sources": [{"tarball": {"url": "x", "sha256": "AB" * 32}}]})
    assert load_catalog().kernel("6.1").sources[0].options["sha256"] == "ab" * 32


def test_a_malformed_sha256_flag_is_called_malformed(own_areas):
    done = invoke("build-kernel", "--version", "4.15", "--plan", "--sha256", "abc123")
    assert done.returncode == 1
    assert last_line(done).startswith("kernlab: error: --sha256 'abc123' is malformed: a sha256 is 64 hex")


def test_an_upper_case_sha256_flag_is_accepted(own_areas):
    tarball = own_areas / "linux-9.9.tar.xz"
    sha = make_tarball(tarball, {"Makefile": b"VERSION = 9\n"})
    catalog = load_catalog()
    opts = SourceOptions(tarball=tarball, sha256=sha.upper())
    source = resolve_source(catalog.kernel("4.15"), catalog, opts, own_areas / "source.log")
    assert source.verified and source.sha256 == sha


# ---------------------------------------------------------------- the committed lock
def local_kernels() -> str | None:
    """The folder of pinned local tarballs .ci/run would use (KERNLAB_LOCAL_KERNELS), if any."""
    for folder in (os.environ.get("KERNLAB_LOCAL_KERNELS"), ROOT.parent / "shared" / "kernels",
                   "/work/shared/kernels"):
        if folder and (Path(folder) / "SHA256SUMS").is_file():
            return str(folder)
    return None


def test_the_committed_lock_parses_and_matches_the_catalog(monkeypatch):
    """CI's check of kernlab.lock: every entry is a catalog kernel with today's patches and
    fragments; a Debian pin names the catalog's package at its `release`; a tarball entry
    holds a sum the catalog (with the local tarballs CI uses) pins."""
    from kernlab.core.util import sha256_file
    from kernlab.kernel.build import make_plan

    for name in ("KERNLAB_LOCK", "KERNLAB_CONFIGS", "KERNLAB_ROOT"):
        monkeypatch.delenv(name, raising=False)
    if folder := local_kernels():
        monkeypatch.setenv("KERNLAB_LOCAL_KERNELS", folder)
    lock = json.loads((ROOT / "kernlab.lock").read_text())
    assert lock["format"] == 1 and lock["kernels"], "kernlab.lock pins no kernel"
    catalog = load_catalog()
    for version, entry in lock["kernels"].items():
        spec = catalog.kernel(version)
        plan = make_plan(version)
        assert entry["patches"] == {p.name: p.record()["sha256"] for p in plan.patches}, version
        assert entry["fragments"] == {f.name: sha256_file(f) for f in plan.fragments}, version
        debian = [s.options["package"] for s in spec.sources if s.kind == "debian"]
        if "debian" in entry:
            pin = entry["debian"]
            assert pin["package"] in debian and len(pin["deb_sha256"]) == 64, version
            assert pin["version"].split(":")[-1].startswith(f"{spec.release}-"), (
                f"{version}: the catalog says release {spec.release}, kernlab.lock pins {pin['version']}")
        else:
            pinned = {s.options.get("sha256") for s in spec.sources} - {None}
            if entry["source_sha256"] not in pinned:  # without the local tarballs: not checkable
                assert folder is None, f"{version}: kernlab.lock's source is pinned nowhere"
