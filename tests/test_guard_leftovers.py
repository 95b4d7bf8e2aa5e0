"""Nothing lost, nothing left behind, one command per VM (issue 22, helper 22a).

The real CLI (`invoke ...` in subprocesses) on real files and real signals:
- `clean --yes` while a build compiles leaves that build's source tree (and names the build);
- `pack --out` and `matrix --merge --out` never overwrite what is there;
- a pack stopped by SIGTERM leaves neither its ``.part`` nor its staging; one killed with
  kill -9 leaves them, and `clean` lists them (naming the killed command) and removes them;
- two commands on one VM name: the second waits, naming the first; a matrix's or a lane's
  VM name that another command holds is never shared (the next free name is taken).
Builds are of the fake kernel tree (tests/fakekernel.py); packs are of test_pack's bundle.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import fakekernel
import pytest
from interrupts import sigint_default
from test_locks import wait_for
from test_pack import bundle  # noqa: F401 (a fixture)

from kernlab.core import paths

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def start(*args: str, env: dict[str, str], err: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(err, "w"), preexec_fn=sigint_default)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# ---------------------------------------------------------------- clean vs a build in progress
def test_clean_keeps_the_source_tree_a_build_compiles_from(tmp_path: Path) -> None:
    """Worst case 1: `clean --yes` while a build holds its lock deleted the tree it compiled from."""
    env = fakekernel.environ(tmp_path, FAKE_MAKE_SECONDS="8")
    sha = fakekernel.tarball(tmp_path / "linux-9.9.tar.gz")
    fakekernel.catalog(tmp_path / "configs", {"file": {"path": str(tmp_path / "linux-9.9.tar.gz"),
                                                       "sha256": sha}})
    work = tmp_path / "work"
    build = start("build-kernel", "--version", "9.9", env=env, err=tmp_path / "build.err")
    wait_for("make", lambda: any(log.read_text().count("fake make pid")
                                 for log in work.glob("build/*/logs/make.log")))
    (tree,) = [d for d in (work / "src").iterdir() if not d.name.startswith(".")]
    listed = invoke("clean", env=env)
    assert listed.returncode == 0, listed.stderr
    assert f"kept {tree}: in use by pid {build.pid} (" in listed.stdout, listed.stdout
    assert "build 9.9-" in listed.stdout and str(tree) + "  (" not in listed.stdout
    cleaned = invoke("clean", "--yes", env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"kept {tree}: in use by pid {build.pid}" in cleaned.stdout, cleaned.stdout
    assert (tree / "Makefile").is_file()
    assert build.wait(timeout=120) == 0, (tmp_path / "build.err").read_text()
    done = invoke("clean", env=env)  # the build is the one in use now: its tree is kept, listed nowhere
    assert "nothing to remove" in done.stdout, done.stdout


# ---------------------------------------------------------------- never overwrite
def test_pack_out_never_overwrites(bundle, tmp_path: Path) -> None:  # noqa: F811
    """Worst case 3: `pack BUNDLE --out FILE` overwrote FILE without a word."""
    folder = bundle[0]
    out = tmp_path / "mine.tar"
    out.write_text("my own file\n")
    done = invoke("pack", str(folder), "--out", str(out), env=dict(os.environ))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert last_line(done.stderr) == (f"kernlab: error: --out {out} already exists and kernlab does not "
                                      "overwrite it; give a new --out, or remove that one first")
    assert out.read_text() == "my own file\n"
    assert not list(tmp_path.glob(".*.part"))
    fresh = tmp_path / "new" / "p.kernlab-pack.tar"
    assert invoke("pack", str(folder), "--out", str(fresh), env=dict(os.environ)).returncode == 0
    again = invoke("pack", str(folder), "--out", str(fresh), env=dict(os.environ))
    assert again.returncode == 1 and "already exists" in last_line(again.stderr)


def test_merge_out_never_overwrites_an_earlier_report(tmp_path: Path) -> None:
    from kernlab.compare.matrix import Cell, Matrix, write_report

    run = Matrix(["5.4"], ["readiter"])
    run.cells[("5.4", "readiter")] = Cell("5.4", "readiter", "PASS")
    write_report(run, tmp_path / "one")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "report.md").write_text("my earlier report\n")
    env = {**os.environ, "KERNLAB_STATE": str(tmp_path / "state")}
    done = invoke("matrix", "--merge", str(tmp_path / "one"), "--out", str(earlier), env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert last_line(done.stderr).startswith(f"kernlab: error: --out {earlier} already exists and kernlab "
                                             "does not overwrite it; ")
    assert [p.name for p in earlier.iterdir()] == ["report.md"]
    assert (earlier / "report.md").read_text() == "my earlier report\n"
    into_empty = tmp_path / "empty"
    into_empty.mkdir()
    merged = invoke("matrix", "--merge", str(tmp_path / "one"), "--out", str(into_empty), env=env)
    assert merged.returncode == 0 and (into_empty / "matrix.json").is_file(), merged.stderr


# ---------------------------------------------------------------- stopped and killed packs
def slow_pack(folder: Path, tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    """`invoke pack` of ``folder`` made slow by a 400 MB file, once its .part is being written."""
    with open(folder / "big.bin", "wb") as big:
        big.truncate(400 << 20)
    out = tmp_path / "out" / "p.kernlab-pack.tar"
    proc = start("pack", str(folder), "--out", str(out), env=env, err=tmp_path / "pack.err")
    part = out.with_name(f".{out.name}.part")
    wait_for("the pack's .part", lambda: part.is_file() and part.stat().st_size > (1 << 20), timeout=120)
    return proc, part


def test_a_pack_stopped_by_sigterm_leaves_nothing(bundle, tmp_path: Path) -> None:  # noqa: F811
    """Worst case 10: a pack stopped by SIGTERM left its .part (739 MB)."""
    env = dict(os.environ)
    proc, part = slow_pack(bundle[0], tmp_path, env)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    err = (tmp_path / "pack.err").read_text()
    assert last_line(err) == "kernlab: interrupted" and "Traceback" not in err
    assert not part.exists() and not part.with_name("p.kernlab-pack.tar").exists()
    assert not list((Path(env["KERNLAB_STATE"]) / "packs").glob(".pack-*"))
    assert "nothing to remove" in invoke("clean", env=env).stdout


def test_clean_lists_and_removes_what_a_killed_pack_left(bundle, tmp_path: Path) -> None:  # noqa: F811
    """kill -9 cannot be caught: `clean` names what the killed command left, then removes it."""
    env = dict(os.environ)
    proc, part = slow_pack(bundle[0], tmp_path, env)
    proc.kill()
    proc.wait(timeout=30)
    staging = list((Path(env["KERNLAB_STATE"]) / "packs").glob(".pack-*"))
    assert part.exists() and len(staging) == 1
    listed = invoke("clean", env=env)
    assert listed.returncode == 0, listed.stderr
    for left in (part, staging[0]):
        assert f"{left}  (left by a killed command, pid {proc.pid} (invoke -r {ROOT} pack " in listed.stdout
    assert "would remove 1 directory and 1 file" in listed.stdout and part.exists()  # staging, .part
    cleaned = invoke("clean", "--yes", env=env)
    assert cleaned.returncode == 0 and "removing 1 directory and 1 file" in cleaned.stdout, cleaned.stdout
    assert not part.exists() and not staging[0].exists()
    assert "nothing to remove" in invoke("clean", env=env).stdout


# ---------------------------------------------------------------- one command per VM
HOLD = ("import sys, time\nfrom kernlab.guest import vm\nvm.claim(sys.argv[1])\n"
        "print('held', flush=True)\ntime.sleep(60)\n")


def holder(name: str, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, name], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_vm_name_another_command_holds_is_waited_for_or_never_shared(tmp_path: Path,
                                                                       monkeypatch) -> None:
    from kernlab.core.errors import KernlabError
    from kernlab.guest import vm

    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    env = {**os.environ, "KERNLAB_STATE": str(tmp_path / "state")}
    first = holder("matrix-6-1", env)
    try:
        with pytest.raises(KernlabError) as busy:
            vm.claim("matrix-6-1", wait=False)
        assert busy.value.one_line().startswith(f"a command on VM matrix-6-1 is in progress in pid "
                                                f"{first.pid} (")
        with vm.free_name("matrix-6-1") as name:  # a matrix's VM: the next free name
            assert name == "matrix-6-1-2" and vm.in_use_by("matrix-6-1-2") is None  # (held by us)
        assert vm.claim_free("matrix-6-1") == "matrix-6-1-2"  # a lane's VM: the same
        assert vm.claim_free("matrix-6-1") == "matrix-6-1-3"
        vm.release("matrix-6-1-2")
        assert vm.claim_free("matrix-6-1") == "matrix-6-1-2"
    finally:
        first.kill()
        first.wait()
        for name in ("matrix-6-1-2", "matrix-6-1-3"):
            vm.release(name)
    with vm.free_name("matrix-6-1") as name:  # nobody holds it: taken as is, nothing made yet
        assert name == "matrix-6-1"
    started = time.monotonic()
    assert vm.claim_free("matrix-6-1") == "matrix-6-1"  # the killed holder's claim died with it
    vm.release("matrix-6-1")
    assert time.monotonic() - started < 2


@pytest.mark.slow
def test_two_runs_on_one_vm_name_one_after_the_other(lab_kernel, lab_image, tmp_path: Path) -> None:
    """Worst case 4: the second run joined the first's guest and failed; the first then
    stopped the VM the second was told would stay up. Now the second waits, naming the first."""
    env = {**os.environ, "KERNLAB_PLAIN": "1", "KERNLAB_RESULTS": str(tmp_path / "results")}
    name = f"h22a-{os.getpid() % 10000}"
    slow = tmp_path / "hellotrace"  # hellotrace whose workload first sleeps: the first run holds
    shutil.copytree(ROOT / "experiments" / "hellotrace", slow)  # its VM while the second starts
    spec = slow / "experiment.yaml"
    spec.write_text(spec.read_text().replace("cmd: ./hellotrace 3", "cmd: sleep 10 && ./hellotrace 3"))
    args = ("run-experiment", str(slow), "--kernel", "6.1", "--vm-name", name)
    first = start(*args, env=env, err=tmp_path / "first.err")
    state = paths.state_dir()
    wait_for("the first run's VM", lambda: (state / "vms" / name / "vm.json").is_file(), timeout=600)
    second = start(*args, "--keep-vm", env=env, err=tmp_path / "second.err")
    try:
        assert first.wait(timeout=900) == 0, (tmp_path / "first.err").read_text()
        assert second.wait(timeout=900) == 0, (tmp_path / "second.err").read_text()
        err = (tmp_path / "second.err").read_text()
        assert f"a command on VM {name} is in progress in pid {first.pid} (invoke -r {ROOT} " \
               f"run-experiment {slow}" in err, err
        assert "waiting for it (Ctrl-C stops waiting)" in err
        assert (state / "vms" / name / "vm.json").is_file()  # --keep-vm: the second's VM stays up
    finally:
        for proc in (first, second):
            proc.kill()
        invoke("vm.down", "--name", name, env=env)


# for tests/test_bad_input.py's count by kind
FAULTS = [("lock", "clean-during-build-keeps-its-tree"), ("overwrite", "pack-out-exists"),
          ("overwrite", "pack-out-made-by-an-earlier-pack"), ("overwrite", "merge-out-has-a-report"),
          ("signal", "sigterm-mid-pack"), ("signal", "kill-9-mid-pack-then-clean"),
          ("lock", "vm-name-held-refused-or-next-free"), ("lock", "second-run-on-a-vm-waits")]
