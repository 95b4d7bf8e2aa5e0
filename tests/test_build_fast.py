"""Fast tests of the build pipeline on the fake kernel tree (tests/fakekernel.py).

The real CLI (`invoke build-kernel`, `kernel-info`, `lock`) in subprocesses, every
kernlab area under the test's tmp_path: a fake build takes well under a second, so
what only the slow tests reached before (build planning, the record round trip, up to
date, lock differences, which build a version uses) is checked on every fast run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import fakekernel
import pytest

from kernlab.core.records import BuildRecord

ROOT = Path(__file__).resolve().parent.parent
FRAGMENTS = {"A": "CONFIG_MODULES=y\nCONFIG_BPF=y\n", "B": "CONFIG_MODULES=y\n"}  # A: fakekernel's own


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Fake:
    """One test's kernlab areas, its fake 9.9 (a local tarball, one patch) and the CLI."""

    tmp: Path
    env: dict[str, str]

    def run(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        """`invoke ARGS`; its exit status must be ``code``."""
        done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], cwd=self.tmp,
                              env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr
        return done

    def build(self, *args: str, code: int = 0) -> subprocess.CompletedProcess:
        return self.run("build-kernel", "--version", "9.9", *args, code=code)

    def info(self) -> dict:
        return json.loads(self.run("kernel-info", "--version", "9.9", "--json").stdout)

    @property
    def fragment(self) -> Path:
        return self.tmp / "configs" / "fake.config"

    @property
    def patch(self) -> Path:
        return self.tmp / "patches" / "note" / "note.patch"

    @property
    def lock(self) -> Path:
        return Path(self.env["KERNLAB_LOCK"])

    def builds(self) -> list[str]:
        """The build ids (directories with a build.json) under <work>/build."""
        return sorted(p.parent.name for p in (self.tmp / "work" / "build").glob("*/build.json"))

    def change(self, what: str, to: str = "B") -> tuple[str, str, str, str]:
        """Rewrite the catalog's fragment or patch; (lock field, file name, old sha256, new sha256)."""
        path = self.fragment if what == "fragment" else self.patch
        old = sha256(path)
        if what == "fragment":
            path.write_text(FRAGMENTS[to])
        else:
            fakekernel.patch_series(path.parent, f"patch {to}")
        return FIELDS[what], path.name, old, sha256(path)


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    sha = fakekernel.tarball(tmp_path / "linux-9.9.tar.gz")
    series = fakekernel.patch_series(tmp_path / "patches" / "note", "patch A")
    fakekernel.catalog(tmp_path / "configs", {"file": {"path": str(tmp_path / "linux-9.9.tar.gz"),
                                                       "sha256": sha}}, patches=(str(series),))
    return Fake(tmp_path, fakekernel.environ(tmp_path))


FIELDS = {"fragment": "fragments", "patch": "patches"}  # what changes: its kernlab.lock field
CHANGES = list(FIELDS)


# ---------------------------------------------------------------- planning
def test_plan_names_every_input_and_neither_downloads_nor_builds(fake: Fake) -> None:
    # a tarball that only an unreachable mirror (port 9: discard) serves: a download would fail
    sha = fakekernel.tarball(fake.tmp / "served.tar.gz")
    fakekernel.catalog(fake.tmp / "configs", {"tarball": {"url": "{mirror}/v9.x/linux-9.9.tar.gz",
                                                          "sha256": sha}},
                       patches=(str(fake.patch.parent),))
    plan = json.loads(fake.build("--plan").stdout)
    assert plan["version"] == plan["release"] == "9.9"
    assert plan["sources (in order)"] == [f"http://127.0.0.1:9/v9.x/linux-9.9.tar.gz sha256={sha}"]
    assert plan["patches"] == [f"note/note.patch sha256={sha256(fake.patch)[:16]}"]
    assert plan["config"] == {"base": "tinyconfig", "fragments": [str(fake.fragment)]}
    assert plan["compiler"].startswith("gcc (gcc ") and "NOT INSTALLED" not in plan["compiler"]
    assert plan["make"].startswith("make -C <src> O=<build>/obj ARCH=x86_64 ")
    assert plan["make"].endswith(" bzImage modules")
    assert not (fake.tmp / "cache" / "downloads").exists()
    assert not (fake.tmp / "work" / "build").exists() and not (fake.tmp / "work" / "src").exists()


def test_plan_names_the_pinned_sha256_of_a_local_tarball(fake: Fake) -> None:
    plan = json.loads(fake.build("--plan").stdout)
    assert sha256(fake.tmp / "linux-9.9.tar.gz")[:12] in plan["sources (in order)"][0]


# ---------------------------------------------------------------- the record
def test_a_build_writes_a_record_that_buildrecord_and_kernel_info_read(fake: Fake) -> None:
    done = fake.build("--json")
    (build_id,) = fake.builds()
    path = fake.tmp / "work" / "build" / build_id / "build.json"
    record = BuildRecord.load(path)
    assert record.to_json() == json.loads(done.stdout) == json.loads(path.read_text())
    assert (record.id, record.version, record.kernelrelease) == (build_id, "9.9", "9.9.0-kernlab")
    assert build_id == f"9.9-{record.key[:12]}"
    assert record.bzimage.read_text().startswith("fake bzImage")
    for name, out in (("bzImage", record.bzimage), ("vmlinux", record.vmlinux),
                      ("System.map", record.system_map), ("config", record.config)):
        assert out.is_file() and out.is_relative_to(record.build_dir), name
        assert record.output_sha256(name) == sha256(out), name
    assert (record.headers / "linux" / "bpf.h").is_file()
    assert record.config.read_text() == FRAGMENTS["A"]  # merge_config.sh got the catalog's fragment
    assert record.build_dir.parent == fake.tmp / "work" / "build"
    assert fake.info() == record.to_json()
    text = fake.run("kernel-info", "--version", "9.9").stdout
    assert text.startswith(f"kernel 9.9: 9.9.0-kernlab (build {build_id})\n")
    assert f"bzImage    {record.bzimage}  sha256={record.output_sha256('bzImage')[:16]}" in text


def test_same_inputs_are_up_to_date_at_once_without_make(fake: Fake) -> None:
    fake.build()
    (build_id,) = fake.builds()
    build_dir = fake.tmp / "work" / "build" / build_id
    make_log = build_dir / "logs" / "make.log"
    before = (make_log.stat().st_mtime_ns, (build_dir / "build.json").read_bytes())
    err = fake.build().stderr
    assert f"- 9.9 is up to date: {build_dir}/obj/arch/x86/boot/bzImage" in err
    assert "> make" not in err and "> patched tree" not in err and "> configure" not in err
    assert (make_log.stat().st_mtime_ns, (build_dir / "build.json").read_bytes()) == before
    assert sum(line.startswith("fake make pid") for line in make_log.read_text().splitlines()) == 1
    assert fake.builds() == [build_id]


@pytest.mark.parametrize("what", CHANGES)
def test_a_changed_input_makes_a_new_build_id(fake: Fake, what: str) -> None:
    fake.build()
    (first,) = fake.builds()
    fake.change(what)
    err = fake.build().stderr
    assert "up to date" not in err and "> make bzImage modules" in err
    (second,) = set(fake.builds()) - {first}
    assert fake.info()["build_dir"].endswith(f"/{second}")


# ---------------------------------------------------------------- the lock
@pytest.mark.parametrize("what", CHANGES)
def test_a_locked_build_stops_naming_the_changed_input_until_update_lock(fake: Fake, what: str) -> None:
    fake.build()
    (build_id,) = fake.builds()
    assert fake.run("lock").stdout == f"{fake.lock}: locked kernel 9.9 ({build_id})\n"
    locked = json.loads(fake.lock.read_text())["kernels"]["9.9"]
    assert locked["fragments"] == {"fake.config": sha256(fake.fragment)}
    assert locked["patches"] == {"note.patch": sha256(fake.patch)}

    field, name, old, new = fake.change(what)
    err = fake.build(code=1).stderr
    assert err.splitlines()[-1] == (
        f"kernlab: error: inputs of kernel 9.9 differ from {fake.lock}: {field}: {name} changed from "
        f"{old[:16]} to {new[:16]}; restore the locked inputs, or pass --update-lock to accept "
        "and record the change")
    assert fake.builds() == [build_id]  # nothing was built
    assert json.loads(fake.lock.read_text())["kernels"]["9.9"] == locked

    fake.build("--update-lock")
    relocked = json.loads(fake.lock.read_text())["kernels"]["9.9"]
    assert relocked[field] == {name: new}
    assert {**relocked, field: None} == {**locked, field: None}  # only that field changed
    assert "9.9 is up to date" in fake.build().stderr  # the lock now names the new input


def test_update_lock_records_inputs_whose_build_already_exists(fake: Fake) -> None:
    fake.change("fragment", to="B")
    fake.build()  # a build of B
    fake.change("fragment", to="A")
    fake.build()
    fake.run("lock")  # pins A, today's fragment
    *_, new = fake.change("fragment", to="B")
    fake.build(code=1)
    fake.build("--update-lock")  # B's build exists: up to date
    assert json.loads(fake.lock.read_text())["kernels"]["9.9"]["fragments"]["fake.config"] == new
    fake.build()


# ---------------------------------------------------------------- which build a version uses
def test_of_two_builds_the_one_from_todays_fragments_is_used(fake: Fake) -> None:
    fake.build()
    (made_a,) = fake.builds()
    fake.change("fragment", to="B")
    fake.build()
    (made_b,) = set(fake.builds()) - {made_a}
    fake.change("fragment", to="A")  # back to A: B's build is the latest made, A's is today's
    done = fake.run("kernel-info", "--version", "9.9")
    assert done.stdout.startswith(f"kernel 9.9: 9.9.0-kernlab (build {made_a})\n")
    assert f"- kernel 9.9: build {made_a} (9.9, from " in done.stderr
    assert "2 builds of 9.9: --version BUILD_ID picks another" in done.stderr
    assert "was made with other" not in done.stderr
    fake.change("fragment", to="B")
    assert fake.info()["build_dir"].endswith(f"/{made_b}")
    assert json.loads(fake.run("kernel-info", "--version", made_a, "--json").stdout)["build_dir"].endswith(
        f"/{made_a}")  # a build id still picks the other one


def test_a_no_patch_variant_never_becomes_the_latest_build(fake: Fake) -> None:
    """`--no-patch` makes a variant with its own key; neither building it nor finding it up to
    date makes it the version's latest (which `--kernel 9.9` picks after today's inputs)."""
    fake.build()
    latest = fake.tmp / "work" / "latest" / "9.9.json"
    full = json.loads(latest.read_text())["build_dir"]
    for name in ("note.patch", "note.patch", "note/note.patch", "note"):  # built, then up to date
        fake.build("--no-patch", name)  # however the patch is named: the same build
        assert json.loads(latest.read_text())["build_dir"] == full
    assert len(fake.builds()) == 2


def test_clean_lists_then_removes_what_no_kept_build_uses(fake: Fake) -> None:
    """`clean` shows the variant build and its tree with sizes and removes nothing; with
    `--yes` they go, the build in use and its tree stay and are still used."""
    fake.build()
    kept = fake.info()["build_dir"]
    fake.build("--no-patch", "note.patch")
    variant = next(b for b in fake.builds() if not kept.endswith(b))
    variant_tree = json.loads((fake.tmp / "work" / "build" / variant / "build.json").read_text())["tree"]
    shown = fake.run("clean").stdout
    assert f"build/{variant}  (not the build in use)" in shown and variant_tree in shown
    assert "would remove 2 directories" in shown and "`invoke clean --yes` removes them" in shown
    assert len(fake.builds()) == 2 and Path(variant_tree).is_dir()
    fake.run("clean", "--yes")
    assert [kept.endswith(b) for b in fake.builds()] == [True] and not Path(variant_tree).exists()
    assert Path(fake.info()["tree"]).is_dir()
    assert "nothing to remove" in fake.run("clean").stdout
    rebuilt = fake.build()
    assert "is up to date" in rebuilt.stdout + rebuilt.stderr


def test_clean_skips_a_build_another_process_is_making(fake: Fake) -> None:
    """A build directory whose lock is held (a build in progress) is named as kept, not removed."""
    from kernlab.core import filelock

    fake.build()
    unfinished = fake.tmp / "work" / "build" / "9.9-0123456789ab"
    (unfinished / "obj").mkdir(parents=True)
    lock = fake.tmp / "work" / "locks" / f"build-{unfinished.name}.lock"
    with filelock.exclusive(lock, "a build"):
        done = fake.run("clean", "--yes")
    assert f"kept {unfinished}: being made by pid {os.getpid()} (" in done.stdout, done.stdout
    assert "(an unfinished build)" not in done.stdout  # not among what goes
    assert unfinished.is_dir()
    fake.run("clean", "--yes")
    assert not unfinished.exists()


def test_clean_keeps_the_build_a_running_vm_booted(fake: Fake, monkeypatch) -> None:
    """The build keys of running VMs (tasks.clean passes them) stay, with their trees."""
    from kernlab.kernel.tidy import plan_cleanup

    fake.build()
    fake.build("--no-patch", "note.patch")
    for name, value in fake.env.items():
        monkeypatch.setenv(name, value)
    variant = next(r for r in map(BuildRecord.from_json, (json.loads(p.read_text()) for p in
                   (fake.tmp / "work" / "build").glob("*/build.json"))) if r.data.get("without_patches"))
    assert {str(i.path) for i in plan_cleanup(set())} >= {str(Path(variant.data["build_dir"])),
                                                          variant.data["tree"]}
    assert plan_cleanup({variant.key}) == []
