"""Matrix cells on other hosts over SSH: hosts file checks, assignment, real sshd on loopback.

The "other host" is a second OpenSSH sshd on 127.0.0.1 (tests/sshd.py): real SSH,
real SFTP, real key and host-key checks; only the machine behind it is this one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sshd
import yaml
from guests import ci_build
from interrupts import sigint_default

from kernlab.core.errors import KernlabError
from kernlab.fanout import fleet as hosts

ROOT = Path(__file__).resolve().parent.parent
LAB2_KERNEL = "4.15"  # the kernel lab2 is pinned to (hosts.yaml `kernels:`)
needs_sshd = pytest.mark.skipif(not sshd.available(), reason="needs root and openssh-server (invoke setup)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not sshd.available():
        pytest.skip("needs root and openssh-server (invoke setup)")
    running = sshd.start(tmp_path_factory.mktemp("sshd"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def lab2_workdir(tmp_path_factory) -> Iterator[Path]:
    """lab2's workdir, kept for the module: its tree, venv, kernel and image are made once."""
    workdir = tmp_path_factory.mktemp("lab2")
    yield workdir
    for bulky in ("kernels", "state"):  # several GB; its logs and runs stay for a look
        shutil.rmtree(workdir / bulky, ignore_errors=True)


def lab2_entry(server, workdir: Path) -> dict:
    """lab2 runs 4.15 with its own tree, venv, kernel build, image and VMs under its workdir.
    It is this machine, so it shares the download and compiler cache and the pinned local
    tarballs (ccache: with KERNLAB_CCACHE_SHARE, as .ci/run sets it, a warm build of about
    1.5 minutes; 4.15 rather than 6.1, which takes twice that). A host's run does not
    inherit this process's environment."""
    from kernlab.core import paths

    env = {"KERNLAB_CACHE": str(paths.cache_dir())}
    for name in ("KERNLAB_CCACHE_SHARE", "KERNLAB_LOCAL_KERNELS"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return server.host_entry("lab2", workdir, kernels=[LAB2_KERNEL], env=env)


def write_hosts(path: Path, entries: list[dict], include_local: bool = True) -> Path:
    path.write_text(yaml.safe_dump({"include_local": include_local, "hosts": entries}))
    return path


def invoke(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, env={**os.environ, **(env or {})}, timeout=timeout)


def key_pair(tmp_path: Path) -> tuple[Path, Path]:
    key, known = tmp_path / "id", tmp_path / "known_hosts"
    key.write_text("not a real key\n")
    key.chmod(0o600)
    known.write_text("")
    return key, known


# ---------------------------------------------------------------- the hosts file
def test_kernels_are_shared_out_and_pins_are_kept(tmp_path):
    key, known = key_pair(tmp_path)
    entry = {"key": str(key), "known_hosts": str(known), "address": "192.0.2.1"}
    config = hosts.load_hosts(write_hosts(tmp_path / "h.yaml", [
        {"name": "a", **entry}, {"name": "b", "kernels": ["4.15"], **entry}]))
    # b keeps its pin; the rest alternate between this machine and a, in the given order
    assert hosts.assign(["4.15", "5.4", "5.10", "6.1"], config) == {
        "b": ["4.15"], "local": ["5.4", "6.1"], "a": ["5.10"]}
    config.include_local = False
    assert hosts.assign(["5.10", "6.1"], config) == {"a": ["5.10", "6.1"]}
    config.hosts = [h for h in config.hosts if h.name == "b"]
    with pytest.raises(KernlabError, match=r"no runner for kernels 5\.10, 6\.1"):
        hosts.assign(["5.10", "6.1"], config)


def test_a_private_key_readable_by_others_is_refused_before_connecting(tmp_path):
    key, known = key_pair(tmp_path)
    key.chmod(0o644)
    path = write_hosts(tmp_path / "h.yaml", [{"name": "lab2", "address": "192.0.2.1", "key": str(key),
                                              "known_hosts": str(known)}])
    done = invoke("matrix", "--kernels", "6.1", "--hosts", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"kernlab: error: host lab2: private key {key} is readable by others (mode 644); chmod 600 {key}")
    assert not (tmp_path / "out").exists()


def test_missing_known_hosts_says_how_to_get_the_key(tmp_path):
    key, _ = key_pair(tmp_path)
    path = write_hosts(tmp_path / "h.yaml", [{"name": "lab2", "address": "192.0.2.1", "port": 2222,
                                              "key": str(key), "known_hosts": "nowhere"}])
    with pytest.raises(KernlabError) as caught:
        hosts.load_hosts(path)
    assert "known_hosts file" in caught.value.cause and str(tmp_path / "nowhere") in caught.value.cause
    assert "ssh-keyscan -p 2222 192.0.2.1" in caught.value.fix


def test_a_port_that_is_not_a_number_is_refused_in_one_line(tmp_path):
    key, known = key_pair(tmp_path)
    path = write_hosts(tmp_path / "h.yaml", [{"name": "lab2", "address": "192.0.2.1", "port": "ssh",
                                              "key": str(key), "known_hosts": str(known)}])
    done = invoke("matrix", "--kernels", "6.1", "--hosts", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"kernlab: error: {path}: host lab2: port 'ssh' is not a TCP port; give a number, e.g. 22")


def test_repeated_host_names_are_refused(tmp_path):
    key, known = key_pair(tmp_path)
    entry = {"name": "lab2", "address": "192.0.2.1", "key": str(key), "known_hosts": str(known)}
    with pytest.raises(KernlabError, match="host names repeat: lab2"):
        hosts.load_hosts(write_hosts(tmp_path / "h.yaml", [entry, entry]))


# ---------------------------------------------------------------- real SSH
@needs_sshd
def test_an_unknown_host_key_is_refused_and_nothing_is_sent(server, tmp_path):
    other = tmp_path / "other_known_hosts"  # holds some other machine's key for that address
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    other.write_text(f"[127.0.0.1]:{server.port} " + " ".join((tmp_path / "k.pub").read_text().split()[:2])
                     + "\n")
    workdir = tmp_path / "lab2"
    path = write_hosts(tmp_path / "h.yaml", [server.host_entry("lab2", workdir, known_hosts=str(other))],
                       include_local=False)
    done = invoke("matrix", "--kernels", "6.1", "--experiments", "hellotrace", "--hosts", str(path),
                  "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    cells = json.loads((tmp_path / "out" / "matrix.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["ERROR"]
    assert "offered a host key unlike the one in" in cells[0]["reason"] and cells[0]["host"] == "lab2"
    assert not workdir.exists()


@needs_sshd
def test_an_unreachable_host_is_an_error_cell_naming_it(server, tmp_path):
    closed = sshd._free_port()
    path = write_hosts(tmp_path / "h.yaml", [server.host_entry("lab3", tmp_path / "w", port=closed)],
                       include_local=False)
    done = invoke("matrix", "--kernels", "6.1", "--experiments", "hellotrace", "--hosts", str(path),
                  "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| hellotrace | ⚠️ ERROR |" in report
    assert f"cannot reach host lab3 at 127.0.0.1:{closed}" in report


@needs_sshd
def test_kernlab_is_shipped_once_per_content(server, tmp_path):
    path = write_hosts(tmp_path / "h.yaml", [server.host_entry("lab2", tmp_path / "w")])
    host = hosts.load_hosts(path).hosts[0]
    with hosts._connected(host) as conn:
        tree = hosts.ship(conn, str(tmp_path / "w"))
        shipped = Path(tree)
        fleet_py = Path("kernlab", "fanout", "fleet.py")
        assert (shipped / fleet_py).read_bytes() == (ROOT / fleet_py).read_bytes()
        assert os.access(shipped / "kl", os.X_OK)
        assert not (shipped / "tests").exists() and not (shipped / ".venv").exists()
        marker = (shipped / ".kernlab-shipped").stat().st_mtime_ns
        assert hosts.ship(conn, str(tmp_path / "w")) == tree
        assert (shipped / ".kernlab-shipped").stat().st_mtime_ns == marker  # not sent again


def outside_experiment(root: Path, name: str = "hello-outside") -> Path:
    """A copy of hellotrace in ``root``/NAME (with a ``_lib`` beside it and a symlink out)."""
    folder = root / name
    shutil.copytree(ROOT / "experiments" / "hellotrace", folder)
    shutil.copytree(ROOT / "experiments" / "_lib", root / "_lib", dirs_exist_ok=True)
    (root / "_lib" / "note.h").write_text("/* the folder's own shared lib */\n")
    (folder / "leak").symlink_to("/etc/hostname")
    return folder


@needs_sshd
def test_experiments_from_outside_the_checkout_go_with_the_tree(server, tmp_path, monkeypatch):
    from kernlab.experiments.suite import load_experiment

    folder = outside_experiment(tmp_path / "research")
    monkeypatch.setenv("KERNLAB_EXPERIMENT_PATH", str(tmp_path / "research"))
    groups = hosts.outside_groups(["readiter", "hello-outside"])
    assert [(g.folder, [e.name for e in g.experiments], g.is_suite) for g in groups] == \
        [(tmp_path / "research", ["hello-outside"], False)]
    path = write_hosts(tmp_path / "h.yaml", [server.host_entry("lab2", tmp_path / "w")])
    with hosts._connected(hosts.load_hosts(path).hosts[0]) as conn:
        tree = Path(hosts.ship(conn, str(tmp_path / "w"), groups))
    shipped = tree / "extra-experiments" / "0"
    assert (shipped / "hello-outside" / "experiment.yaml").read_bytes() == \
        (folder / "experiment.yaml").read_bytes()
    assert (shipped / "_lib" / "note.h").is_file()
    assert not (shipped / "hello-outside" / "leak").exists()  # a symlink out of the folder
    env = hosts.outside_env(groups, str(tree))
    assert env == {"KERNLAB_EXPERIMENT_PATH": str(shipped)}
    # the host finds it by name, and its bundles will carry the same content hash
    there = subprocess.run([sys.executable, "-c", "from kernlab.experiments.suite import load_experiment; "
                            "print(load_experiment('hello-outside').content_hash())"],
                           cwd=tree, env={**os.environ, **env, "PYTHONPATH": str(tree)},
                           capture_output=True, text=True, check=True)
    (folder / "leak").unlink()
    assert there.stdout.strip() == load_experiment("hello-outside").content_hash()


def test_a_replaced_suite_goes_with_the_tree_as_the_hosts_suite(tmp_path, monkeypatch):
    outside_experiment(tmp_path / "mine", "readiter")
    monkeypatch.setenv("KERNLAB_EXPERIMENTS", str(tmp_path / "mine"))
    (group,) = hosts.outside_groups(["readiter"])
    assert group.is_suite and hosts.outside_env([group], "/t") == \
        {"KERNLAB_EXPERIMENTS": "/t/extra-experiments/0"}
    monkeypatch.delenv("KERNLAB_EXPERIMENTS")
    assert hosts.outside_groups(["readiter", "hellotrace"]) == []  # the checkout's: shipped anyway


@needs_sshd
@pytest.mark.slow
def test_a_host_runs_its_cells_and_the_bundles_come_back(server, lab2_workdir, tmp_path):
    """lab2 runs 4.15 there: ships kernlab, makes its venv, its own image and VM, runs, sends back."""
    workdir = lab2_workdir
    here = ci_build(LAB2_KERNEL)
    path = write_hosts(tmp_path / "h.yaml", [lab2_entry(server, workdir)], include_local=False)
    out = tmp_path / "out"
    outside_experiment(tmp_path / "research").joinpath("leak").unlink()
    done = invoke("matrix", "--kernels", LAB2_KERNEL, "--experiments", "hellotrace,readiter,hello-outside",
                  "--hosts", str(path), "--out", str(out), timeout=3600,
                  env={"KERNLAB_EXPERIMENT_PATH": str(tmp_path / "research")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "4.15 @ lab2" in done.stdout and "[lab2] > kernel 4.15: 3 experiments" in done.stderr

    matrix = json.loads((out / "matrix.json").read_text())
    assert matrix["hosts"] == {"4.15": "lab2"}
    for cell in matrix["cells"]:
        assert (cell["status"], cell["host"]) == ("PASS", "lab2")
        bundle = Path(cell["bundle"])
        assert bundle.is_relative_to(out / "hosts" / "lab2" / "bundles")
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["build"]["build_dir"].startswith(str(workdir / "kernels"))  # lab2 built it
        # ... in another directory, and got the very same bzImage as this machine's build
        assert manifest["build"]["outputs"]["bzImage"]["sha256"] == here.output_sha256("bzImage")
        assert manifest["image"]["dir"].startswith(str(workdir / "state"))  # and its own image
        assert (bundle / "trace.txt").is_file() and (bundle / "console.log").is_file()
    assert "| readiter | ✅ PASS |" in (out / "report.md").read_text()
    assert 'hostname="lab2"' in (out / "junit.xml").read_text()
    log = (out / "hosts" / "lab2.log").read_text()
    assert "./kl matrix --kernels 4.15" in log and "> make bzImage modules" in log
    assert len(list(workdir.glob("tree-*/.venv/bin/invoke"))) == 1
    assert not qemu_processes_under(workdir)


@needs_sshd
@pytest.mark.slow
def test_a_host_that_fails_says_why_in_its_cells(server, lab2_workdir, tmp_path):
    """lab2's kernlab stops at once (its catalog is missing): the cells carry its own error."""
    entry = lab2_entry(server, lab2_workdir)
    entry["env"]["KERNLAB_CONFIGS"] = str(tmp_path / "no-configs")
    path = write_hosts(tmp_path / "h.yaml", [entry], include_local=False)
    done = invoke("matrix", "--kernels", LAB2_KERNEL, "--experiments", "hellotrace", "--hosts", str(path),
                  "--out", str(tmp_path / "out"), timeout=1800)
    assert done.returncode == 1
    cell = json.loads((tmp_path / "out" / "matrix.json").read_text())["cells"][0]
    assert cell["status"] == "ERROR" and cell["host"] == "lab2"
    assert cell["reason"] == f"host lab2: no kernel catalog at {tmp_path}/no-configs/kernels.yaml; " \
                             "set KERNLAB_CONFIGS or restore it"


def qemu_processes_under(workdir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", f"qemu-system.*{workdir}"], capture_output=True, text=True)
    return found.stdout.splitlines()


@needs_sshd
@pytest.mark.slow
def test_ctrl_c_is_passed_on_to_the_host_which_stops_its_vm(server, lab2_workdir, tmp_path):
    path = write_hosts(tmp_path / "h.yaml", [lab2_entry(server, lab2_workdir)], include_local=False)
    run = subprocess.Popen(
        [sys.executable, "-m", "invoke", "matrix", "--kernels", LAB2_KERNEL, "--experiments",
         "hellotrace,readiter", "--hosts", str(path), "--out", str(tmp_path / "out")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    seen = []
    for line in run.stderr:  # wait until lab2's guest is running an experiment (in any lane)
        seen.append(line)
        if "[lab2]" in line and "run hellotrace in the guest" in line:
            break
    assert qemu_processes_under(lab2_workdir), "".join(seen)[-2000:]
    run.send_signal(signal.SIGINT)
    _, rest = run.communicate(timeout=120)
    assert run.returncode == 130, rest[-2000:]
    assert "[lab2] interrupting" in rest and "kernlab: interrupted" in rest
    assert not qemu_processes_under(lab2_workdir)  # lab2's kernlab stopped its VM
    pid_file = next((lab2_workdir / "runs").glob("*.pid"))
    group = subprocess.run(["pgrep", "-g", pid_file.read_text().strip()], capture_output=True, text=True)
    assert group.stdout == ""  # nothing of that run is left on the host


@needs_sshd
def test_an_unknown_kernel_stops_the_run_before_any_host_starts(server, tmp_path):
    workdir = tmp_path / "lab2"
    path = write_hosts(tmp_path / "h.yaml", [server.host_entry("lab2", workdir)], include_local=False)
    done = invoke("matrix", "--kernels", "6.1,9.9", "--experiments", "hellotrace", "--hosts", str(path),
                  "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("kernlab: error: unknown kernel version '9.9'")
    assert not workdir.exists() and not (tmp_path / "out").exists()
