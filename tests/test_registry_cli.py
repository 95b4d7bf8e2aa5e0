"""The registry through the real CLI: `invoke push` on one machine's areas, then commands on
a fresh area that needs the build look it up by key and pull it instead of building.

The kernel is the fake one (tests/fakekernel.py), built by the real `invoke build-kernel`;
the registry is Debian's docker-registry on 127.0.0.1 (tests/ociregistry.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fakekernel
import pytest
import yaml
from ociregistry import Registry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory):
    server = Registry(tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()


def invoke(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture
def two(tmp_path: Path, reg: Registry) -> tuple[dict[str, str], dict[str, str], str]:
    """The builder's environment (a fake 9.9 built), a fresh machine's (same checkout: configs and
    lock; empty work, cache and state) and the registry's address."""
    sha = fakekernel.tarball(tmp_path / "linux-9.9.tar.gz")
    fakekernel.catalog(tmp_path / "configs", {"file": {"path": str(tmp_path / "linux-9.9.tar.gz"),
                                                       "sha256": sha}})
    builder = fakekernel.environ(tmp_path / "a")
    builder.update(KERNLAB_CONFIGS=str(tmp_path / "configs"), KERNLAB_LOCK=str(tmp_path / "kernlab.lock"),
                   HOME=str(tmp_path))
    fresh = {**builder, **fakekernel.environ(tmp_path / "b"), "KERNLAB_CONFIGS": builder["KERNLAB_CONFIGS"],
             "KERNLAB_LOCK": builder["KERNLAB_LOCK"], "HOME": str(tmp_path)}
    invoke(builder, "build-kernel", "--version", "9.9")
    return builder, fresh, f"{reg.host}/cli{abs(hash(tmp_path)) % 10**8}"


def test_push_then_a_fresh_area_pulls_instead_of_building(two, tmp_path: Path) -> None:
    builder, fresh, address = two
    pushed = invoke(builder, "push", "--kernel", "9.9", "--registry", address)
    assert f"pushed kernel build 9.9: {address}/kernel:9.9-" in pushed.stdout
    assert "headers disk of 9.9 not pushed" in pushed.stderr  # the fake tree has no include/
    (tmp_path / "linux-9.9.tar.gz").unlink()  # a build here could not even start: its source is gone
    done = invoke(fresh, "build-kernel", "--version", "9.9", "--json", "--registry", address)
    record = json.loads(done.stdout)
    assert "pulled kernel build 9.9-" in done.stderr and "is not pinned in kernlab.lock" in done.stderr
    assert record["pulled"]["reference"].startswith(f"{address}/kernel@sha256:")
    assert Path(record["build_dir"]).is_relative_to(tmp_path / "b" / "work")
    assert not (tmp_path / "b" / "work" / "src").exists(), "nothing was extracted or built"
    again = invoke(fresh, "build-kernel", "--version", "9.9", "--registry", address)
    assert "is up to date" in again.stderr and "pulled" not in again.stderr
    info = json.loads(invoke(fresh, "kernel-info", "--version", "9.9", "--json").stdout)
    assert info["key"] == record["key"]


def test_lock_pins_the_pulled_digest_and_a_pinned_key_needs_no_note(two) -> None:
    builder, fresh, address = two
    invoke(builder, "push", "--kernel", "9.9", "--registry", address)
    pulled = json.loads(invoke(fresh, "build-kernel", "--version", "9.9", "--json", "--registry",
                               address).stdout)
    invoke(fresh, "lock", "--version", "9.9")
    lock = json.loads(Path(fresh["KERNLAB_LOCK"]).read_text())
    assert lock["artifacts"] == {f"kernel:9.9-{pulled['key']}": pulled["pulled"]["digest"]}
    other = {**fresh, **{k: v.replace("/b/", "/c/") for k, v in fresh.items()
                         if k in ("KERNLAB_WORK", "KERNLAB_CACHE", "KERNLAB_STATE")}}
    done = invoke(other, "build-kernel", "--version", "9.9", "--registry", address)
    assert "pulled kernel build" in done.stderr and "not pinned" not in done.stderr


def test_no_registry_and_an_unreachable_one_build_locally(two) -> None:
    _, fresh, _ = two
    done = invoke({**fresh, "KERNLAB_REGISTRY": "127.0.0.1:9/kernlab"}, "build-kernel", "--version", "9.9")
    assert done.stderr.count("cannot be reached") == 1 and "making the kernel build here" in done.stderr
    assert "make bzImage" in done.stderr


def test_a_bad_registry_flag_and_a_push_with_nothing_to_push_are_one_line(two) -> None:
    builder, _, address = two
    done = invoke(builder, "build-kernel", "--version", "9.9", "--registry", "ghcr.io", code=1)
    assert done.stderr.strip().splitlines()[-1].startswith("kernlab: error: registry 'ghcr.io' is not")
    done = invoke(builder, "push", "--registry", address, code=1)
    assert "kernlab: error: nothing to push; give --kernel VERSION, --image, or --all" in done.stderr
    done = invoke({**builder, "KERNLAB_REGISTRY": ""}, "push", "--kernel", "9.9", code=1)
    assert "kernlab: error: no registry to push to" in done.stderr


def test_rebuild_check_names_both_sha256s_when_the_bytes_differ(two, tmp_path: Path) -> None:
    builder, fresh, address = two  # the fake bzImage holds make's pid: never the same twice
    invoke(builder, "push", "--kernel", "9.9", "--registry", address)
    pulled = json.loads(invoke(fresh, "build-kernel", "--version", "9.9", "--json", "--registry",
                               address).stdout)
    done = invoke(fresh, "build-kernel", "--version", "9.9", "--rebuild-check", "--registry", address, code=1)
    last = done.stderr.strip().splitlines()[-1]
    theirs = pulled["outputs"]["bzImage"]["sha256"]
    assert last.startswith(f"kernlab: error: bzImage differs: 9.9-{pulled['key'][:12]} has sha256 {theirs}, "
                           "the rebuild from source ")
    assert "the rebuild is kept in" in last
    catalog = yaml.safe_load((tmp_path / "configs" / "kernels.yaml").read_text())
    assert catalog["kernels"]["9.9"]  # the checkout is untouched
