"""The registry stage against a real registry (Debian's docker-registry, the CNCF distribution
registry) on 127.0.0.1, with a real HTTP proxy in front of it for the faults.

The artifacts are fake kernel builds (tests/fakekernel.py) made by the real `invoke
build-kernel`: what is checked is kernlab's pushing, pulling and refusing, not a kernel.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import fakekernel
import oras.provider
import pytest
from ociregistry import Faults, Registry

from kernlab.core import oci, registry
from kernlab.core.errors import KernlabError
from kernlab.core.util import sha256_file
from kernlab.guest.image import IMAGE
from kernlab.kernel import layers as kinds

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-kernlab-test-password"


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory):
    server = Registry(tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()


@pytest.fixture
def faults(reg: Registry):
    proxy = Faults(reg.host).start()
    yield proxy
    proxy.stop()


def fake_build(tmp: Path, padding: int = 0) -> dict:
    """A fake 9.9 built by the real CLI in ``tmp`` (its own areas); ``padding`` bytes of
    random data in its headers make the artifact as large as a test needs."""
    sha = fakekernel.tarball(tmp / "linux-9.9.tar.gz")
    fakekernel.catalog(tmp / "configs", {"file": {"path": str(tmp / "linux-9.9.tar.gz"), "sha256": sha}})
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "build-kernel", "--version",
                           "9.9", "--json"], env=fakekernel.environ(tmp), capture_output=True, text=True,
                          timeout=120, check=True)
    record = json.loads(done.stdout)
    if padding:
        (Path(record["build_dir"]) / "obj/usr/include/linux/padding.h").write_bytes(os.urandom(padding))
    return record


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return fake_build(tmp_path_factory.mktemp("builder"))


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty work area, cache and lock for the pulling side."""
    for name in ("KERNLAB_WORK", "KERNLAB_CACHE", "KERNLAB_STATE"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    monkeypatch.setenv("KERNLAB_LOCK", str(tmp_path / "kernlab.lock"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.docker/config.json of the user's
    monkeypatch.delenv(oci.TOKEN_ENV, raising=False)
    monkeypatch.delenv(oci.REGISTRY_ENV, raising=False)
    registry._unreachable.clear()
    return tmp_path


def client_of(host: str, namespace: str = "kernlab") -> oci.Client:
    return oci.Client(oci.parse_address(f"{host}/{namespace}"))


def final_of(fresh: Path, record: dict) -> Path:
    return fresh / "KERNLAB_WORK" / "build" / Path(record["build_dir"]).name


def lookup(fresh: Path, record: dict, client: oci.Client, **kw) -> registry.Pulled | None:
    final = final_of(fresh, record)
    return registry.lookup(kinds.KERNEL, "9.9", record["key"], final, fresh / "pull.lock", client, **kw)


def pushed(reg: Registry, record: dict, namespace: str = "kernlab") -> str:
    return registry.publish(kinds.KERNEL, record, client_of(reg.host, namespace))[1]


def blob_gets(proxy: Faults) -> list[str]:
    return [path for method, path in proxy.seen if method == "GET" and "/blobs/" in path]


# ---------------------------------------------------------------- push and pull
def test_a_pushed_build_pulls_into_a_fresh_area_whole_and_verified(reg: Registry, built: dict,
                                                                  fresh: Path, capsys) -> None:
    digest = pushed(reg, built)
    got = lookup(fresh, built, client_of(reg.host))
    assert got is not None and got.digest == digest
    final = final_of(fresh, built)
    record = json.loads((final / "build.json").read_text())
    assert record["key"] == built["key"] and record["build_dir"] == str(final)
    assert record["pulled"]["digest"] == digest and record["tree"] == ""
    for name in ("bzImage", "System.map", "config"):
        path = Path(record["outputs"][name]["path"])
        assert path.is_relative_to(final)
        assert path.read_bytes() == Path(built["outputs"][name]["path"]).read_bytes()
    assert (final / "obj/usr/include/linux/bpf.h").is_file()
    assert not (final / "obj/vmlinux").exists(), "vmlinux is pulled only when asked for"
    vmlinux = registry.lazy_layer(kinds.KERNEL, record, "vmlinux.zst", fresh / "pull.lock")
    assert vmlinux.read_bytes() == Path(built["outputs"]["vmlinux"]["path"]).read_bytes()
    assert "is not pinned in kernlab.lock" in capsys.readouterr().err
    assert not list(registry.blobs_dir().iterdir()), "blobs are removed once the build is in place"


def test_oras_pull_gets_the_files_by_their_names(reg: Registry, built: dict, fresh: Path,
                                                  tmp_path: Path) -> None:
    pushed(reg, built)
    out = tmp_path / "oras"
    files = oras.provider.Registry(insecure=True).pull(
        target=f"{reg.host}/kernlab/kernel:9.9-{built['key']}", outdir=str(out))
    names = sorted(Path(f).name for f in files)
    assert names == sorted(["bzImage", "System.map", "config", "headers.tar.zst", "build.json",
                            "vmlinux.zst"])
    assert (out / "bzImage").read_bytes() == Path(built["outputs"]["bzImage"]["path"]).read_bytes()
    manifest, _ = client_of(reg.host).manifest("kernel", f"9.9-{built['key']}")
    assert manifest["artifactType"] == "application/vnd.kernlab.kernel.v1"
    assert json.loads(manifest["annotations"]["dev.kernlab.record"])["key"] == built["key"]


def test_a_key_the_registry_lacks_is_none_and_nothing_is_made(reg: Registry, built: dict, fresh: Path,
                                                            capsys) -> None:
    other = {**built, "key": "0" * 64}
    assert lookup(fresh, other, client_of(reg.host, "empty")) is None
    assert "is not in the registry" in capsys.readouterr().err
    builds = fresh / "KERNLAB_WORK" / "build"
    assert not builds.exists() or not any(builds.iterdir())


# ---------------------------------------------------------------- unreachable and HTTP faults
def test_an_unreachable_registry_is_one_note_at_once(built: dict, fresh: Path, capsys) -> None:
    client = client_of("127.0.0.1:9")  # discard: nothing listens
    started = time.monotonic()
    assert lookup(fresh, built, client) is None
    assert lookup(fresh, built, client) is None
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.count("cannot be reached") == 1 and "making the kernel build here" in err


@pytest.mark.parametrize("status", ["401", "404", "500"])
def test_an_error_mid_pull_leaves_nothing_and_a_rerun_resumes(reg: Registry, faults: Faults, built: dict,
                                                              fresh: Path, status: str, capsys) -> None:
    pushed(reg, built)
    client = client_of(faults.host)
    manifest, _ = client.manifest("kernel", f"9.9-{built['key']}")
    third = manifest["layers"][2]["digest"]  # the config: bzImage and System.map come before it
    faults.add("GET", third, status, times=1)
    assert lookup(fresh, built, client) is None
    assert f"HTTP {status}" in capsys.readouterr().err or status in ("401", "404")
    final = final_of(fresh, built)
    assert not final.exists() and not list(final.parent.glob(".*tmp-*"))
    kept = sorted(p.name for p in registry.blobs_dir().iterdir())
    assert kept == sorted(d["digest"].replace(":", "-") for d in manifest["layers"][:2])
    registry._unreachable.clear()
    faults.seen.clear()
    assert lookup(fresh, built, client) is not None
    fetched = blob_gets(faults)
    assert not any(d["digest"] in p for d in manifest["layers"][:2] for p in fetched), "verified blobs reused"
    assert (final / "build.json").is_file()


def test_a_blob_cut_off_mid_stream_is_not_kept(reg: Registry, faults: Faults, built: dict,
                                               fresh: Path) -> None:
    pushed(reg, built)
    client = client_of(faults.host)
    faults.add("GET", "/blobs/", "cut", times=1)
    assert lookup(fresh, built, client) is None
    assert not list(registry.blobs_dir().glob("*"))
    registry._unreachable.clear()
    assert lookup(fresh, built, client) is not None


def test_a_blob_that_does_not_match_its_digest_is_refused(reg: Registry, faults: Faults, built: dict,
                                                         fresh: Path) -> None:
    pushed(reg, built)
    faults.add("GET", "/blobs/", "corrupt", times=1)
    with pytest.raises(oci.ArtifactRefused, match=r"bzImage from kernel does not match its digest: "
                                                  r"expected sha256:[0-9a-f]{64} \(\d+ bytes\), got sha256:"):
        lookup(fresh, built, client_of(faults.host))
    assert not final_of(fresh, built).exists()
    assert not list(registry.blobs_dir().glob("*")), "neither the bad blob nor its .part is kept"


# ---------------------------------------------------------------- artifacts that are not what was asked for
def test_a_record_that_names_another_key_is_refused(reg: Registry, built: dict, fresh: Path) -> None:
    liar = {**built, "key": "f" * 64}  # annotations and tag say f..f; its build.json says the real key
    registry.publish(kinds.KERNEL, liar, client_of(reg.host))
    with pytest.raises(oci.ArtifactRefused,
                       match=r"record names key '[0-9a-f]{64}', this checkout wants 'f{64}'"):
        lookup(fresh, liar, client_of(reg.host))
    assert not final_of(fresh, liar).exists()


def test_a_record_of_another_kernel_is_refused(reg: Registry, built: dict, fresh: Path) -> None:
    other = {**built, "version": "9.8"}
    registry.publish(kinds.KERNEL, other, client_of(reg.host))
    final = fresh / "KERNLAB_WORK" / "build" / "9.8-x"
    with pytest.raises(oci.ArtifactRefused, match=r"record names version '9\.9', this checkout wants '9\.8'"):
        registry.lookup(kinds.KERNEL, "9.8", built["key"], final, fresh / "l.lock", client_of(reg.host))
    assert not final.exists()


def test_a_tag_that_points_at_an_image_where_a_kernel_was_expected_is_refused(reg: Registry, built: dict,
                                                                              fresh: Path) -> None:
    client = client_of(reg.host, "mixed")
    manifest = {"schemaVersion": 2, "mediaType": oci.MANIFEST_TYPE, "artifactType": IMAGE.artifact_type,
                "config": client.push_empty("kernel"), "layers": [],
                "annotations": {"dev.kernlab.key": built["key"], "dev.kernlab.name": "9.9"}}
    client.push_manifest("kernel", f"9.9-{built['key']}", manifest)
    with pytest.raises(oci.ArtifactRefused, match=r"is a application/vnd\.kernlab\.image\.v1, not a "
                                                  r"application/vnd\.kernlab\.kernel\.v1"):
        lookup(fresh, built, client)


def test_the_lock_pin_is_the_only_digest_accepted(reg: Registry, built: dict, fresh: Path, capsys) -> None:
    pushed(reg, built)
    pin = "sha256:" + "0" * 64
    Path(os.environ["KERNLAB_LOCK"]).write_text(json.dumps(
        {"format": 1, "kernels": {}, "images": {}, "artifacts": {f"kernel:9.9-{built['key']}": pin}}))
    assert lookup(fresh, built, client_of(reg.host)) is None  # the tag's manifest is not the pinned one
    assert "is not in the registry" in capsys.readouterr().err
    Path(os.environ["KERNLAB_LOCK"]).write_text(json.dumps(
        {"format": 1, "artifacts": {f"kernel:9.9-{built['key']}": pushed(reg, built)}}))
    assert lookup(fresh, built, client_of(reg.host)) is not None
    assert "not pinned" not in capsys.readouterr().err


# ---------------------------------------------------------------- interrupted, concurrent, disk full
PULL = textwrap.dedent("""\
    import sys
    from pathlib import Path
    from kernlab.core import oci, registry
    from kernlab.kernel import layers as kinds
    host, version, key, final = sys.argv[1:5]
    got = registry.lookup(kinds.KERNEL, version, key, Path(final), Path(final).parent / "pull.lock",
                          oci.Client(oci.parse_address(host + "/kernlab")))
    print("PULLED" if got and got.digest else "FOUND" if got else "NONE")
""")
PUSH = textwrap.dedent("""\
    import json, sys
    from kernlab.core import oci, registry
    from kernlab.kernel import layers as kinds
    record = json.load(open(sys.argv[2]))
    registry.publish(kinds.KERNEL, record, oci.Client(oci.parse_address(sys.argv[1] + "/kernlab")))
    print("PUSHED")
""")


def run_py(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "KERNLAB_PLAIN": "1"})


def wait_for(condition, proc: subprocess.Popen, seconds: float = 30) -> None:
    """Until ``condition()``, while ``proc`` runs (its output is the failure's message)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fake build with 3 MiB of headers: a slow proxy takes seconds to send it."""
    return fake_build(tmp_path_factory.mktemp("big"), padding=3 << 20)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_pull_interrupted_mid_blob_is_never_used_and_a_rerun_completes(reg: Registry, faults: Faults,
                                                                         big: dict, fresh: Path, sig) -> None:
    pushed(reg, big)
    final = final_of(fresh, big)
    faults.add("GET", "/blobs/", "slow")
    proc = run_py(PULL, faults.host, "9.9", big["key"], str(final))
    wait_for(lambda: any(registry.blobs_dir().glob("*.part")) if registry.blobs_dir().exists() else False,
             proc)
    proc.send_signal(sig)
    proc.wait(20)
    assert proc.returncode != 0
    assert not final.exists()
    faults.clear()
    again = run_py(PULL, faults.host, "9.9", big["key"], str(final))
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0 and out.strip() == "PULLED", err
    assert not list(final.parent.glob(".*tmp-*")), "a killed pull's staging is removed by the next"
    assert (final / "obj/usr/include/linux/padding.h").stat().st_size == 3 << 20


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_push_interrupted_mid_blob_tags_nothing_and_a_rerun_completes(
        reg: Registry, faults: Faults, big: dict, fresh: Path, tmp_path: Path, sig) -> None:
    namespace = f"killed{sig.value}"
    record_file = tmp_path / "record.json"
    record_file.write_text(json.dumps(big))
    faults.add("PATCH", "/blobs/uploads/", "slow")  # the proxy forwards after reading the chunk: slow answer
    proc = subprocess.Popen([sys.executable, "-c", PUSH.replace('"/kernlab"', f'"/{namespace}"'),
                             faults.host, str(record_file)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(m == "PATCH" for m, _ in faults.seen), proc)
    proc.send_signal(sig)
    proc.wait(20)
    assert proc.returncode != 0
    with pytest.raises(oci.NotInRegistry):
        client_of(reg.host, namespace).manifest("kernel", f"9.9-{big['key']}")
    faults.clear()
    again = subprocess.run([sys.executable, "-c", PUSH.replace('"/kernlab"', f'"/{namespace}"'), reg.host,
                            str(record_file)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    got = registry.lookup(kinds.KERNEL, "9.9", big["key"], final_of(fresh, big), fresh / "l.lock",
                          client_of(reg.host, namespace))
    assert got is not None and got.digest


def test_two_pulls_of_one_key_at_once_fetch_it_once(reg: Registry, faults: Faults, big: dict,
                                                    fresh: Path) -> None:
    pushed(reg, big)
    final = final_of(fresh, big)
    faults.add("GET", "/blobs/", "slow")
    procs = [run_py(PULL, faults.host, "9.9", big["key"], str(final)) for _ in range(2)]
    outs = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["FOUND", "PULLED"]
    manifest, _ = client_of(reg.host).manifest("kernel", f"9.9-{big['key']}")
    for layer in manifest["layers"]:
        if "lazy" not in str(layer.get("annotations")):
            assert sum(layer["digest"] in p for p in blob_gets(faults)) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_disk_that_fills_during_a_pull_leaves_nothing(reg: Registry, big: dict, fresh: Path,
                                                        tmp_path: Path) -> None:
    pushed(reg, big)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        final = small / "build" / Path(big["build_dir"]).name
        os.environ["KERNLAB_CACHE"] = str(small / "cache")
        with pytest.raises(KernlabError, match="disk full while") as error:
            registry.lookup(kinds.KERNEL, "9.9", big["key"], final, small / "l.lock", client_of(reg.host))
        assert "; free space" in error.value.one_line()
        assert not final.exists() and not list(final.parent.glob(".*tmp-*"))
    finally:
        subprocess.run(["umount", str(small)], check=True)


# ---------------------------------------------------------------- credentials and addresses
@pytest.fixture(scope="module")
def locked_reg(tmp_path_factory: pytest.TempPathFactory):
    server = Registry(tmp_path_factory.mktemp("authreg"), auth=("kernlab", PASSWORD)).start()
    yield server
    server.stop()


def test_a_push_without_credentials_is_one_line_and_with_them_works(locked_reg: Registry, built: dict,
                                                                    fresh: Path, monkeypatch, capsys) -> None:
    with pytest.raises(oci.RegistryDenied) as error:
        registry.publish(kinds.KERNEL, built, client_of(locked_reg.host))
    assert "denied access (no credentials)" in error.value.cause and "oras login" in error.value.fix
    monkeypatch.setenv(oci.TOKEN_ENV, "wrong")
    with pytest.raises(oci.RegistryDenied, match="credentials given were refused"):
        registry.publish(kinds.KERNEL, built, client_of(locked_reg.host))
    monkeypatch.setenv(oci.TOKEN_ENV, PASSWORD)
    monkeypatch.setenv(oci.USER_ENV, "kernlab")
    registry.publish(kinds.KERNEL, built, client_of(locked_reg.host))
    got = lookup(fresh, built, client_of(locked_reg.host))
    assert got is not None
    assert PASSWORD not in json.dumps(got.record) and PASSWORD not in str(capsys.readouterr())


def test_credentials_come_from_the_docker_config(locked_reg: Registry, built: dict, fresh: Path) -> None:
    import base64
    docker = fresh / ".docker"
    docker.mkdir()
    auth = base64.b64encode(f"kernlab:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {locked_reg.host: {"auth": auth}}}))
    registry.publish(kinds.KERNEL, built, client_of(locked_reg.host))


@pytest.mark.parametrize(("value", "insecure", "plain"), [
    ("127.0.0.1:5000/kernlab", False, True), ("localhost:5000/a/b", False, True),
    ("[::1]:5000/kernlab", False, True), ("ghcr.io/owner/kernlab", False, False),
    ("registry.lan:5000/kernlab", False, False), ("registry.lan:5000/kernlab", True, True)])
def test_plain_http_only_on_loopback_or_when_asked(value: str, insecure: bool, plain: bool) -> None:
    assert oci.parse_address(value, insecure).plain_http is plain


@pytest.mark.parametrize("value", ["ghcr.io", "ghcr.io/Owner", "host:port:9/x", "/ns"])
def test_a_bad_registry_address_is_one_line(value: str) -> None:
    with pytest.raises(KernlabError, match=r"registry|namespace"):
        oci.parse_address(value)


# ---------------------------------------------------------------- images
def fake_image(root: Path) -> dict:
    """An image directory as guest/image.py writes one: a sparse disk, keys (private ones 0600), record."""
    root.mkdir(parents=True)
    disk = root / "rootfs.ext4"
    with open(disk, "wb") as handle:
        handle.write(b"kernlab-root" * 1000)
        handle.truncate(256 << 20)  # mostly a hole, as mke2fs leaves it
    (root / "keys").mkdir(mode=0o700)
    for name, mode in (("client_ed25519", 0o600), ("client_ed25519.pub", 0o644)):
        (root / "keys" / name).write_text(f"{name}\n")
        os.chmod(root / "keys" / name, mode)
    record = {"recipe": "bookworm", "key": "a" * 64, "dir": str(root),
              "image": {"path": str(disk), "sha256": sha256_file(disk)},
              "client_key": str(root / "keys" / "client_ed25519")}
    (root / "image.json").write_text(json.dumps(record))
    return record


def test_an_image_pulls_sparse_with_its_private_key_still_0600(reg: Registry, fresh: Path,
                                                               tmp_path: Path) -> None:
    record = fake_image(tmp_path / "built" / "bookworm-aaaaaaaaaaaa")
    _, digest, size = registry.publish(IMAGE, record, client_of(reg.host))
    assert size < 1 << 20, "the disk's holes compress away"
    final = fresh / "KERNLAB_STATE" / "images" / "bookworm-aaaaaaaaaaaa"
    got = registry.lookup(IMAGE, "bookworm", "a" * 64, final, fresh / "i.lock", client_of(reg.host))
    assert got is not None and got.digest == digest
    disk = Path(got.record["image"]["path"])
    assert disk == final / "rootfs.ext4" and disk.stat().st_size == 256 << 20
    assert disk.stat().st_blocks * 512 < 16 << 20, "unpacked sparse"
    assert Path(got.record["client_key"]).stat().st_mode & 0o777 == 0o600
