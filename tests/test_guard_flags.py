"""Every documented flag works, nothing-to-do is an error, a closed pipe ends quietly (issue 22, 22b).

Each flag of `probes`, `check-experiment`, `new-experiment`, `pack`, `reproduce` and `clean`,
long and short, is driven through the real CLI (`invoke ...` in a subprocess). The kernel
is tests/fakekernel.py's tree built by the real `invoke build-kernel` in seconds; its
vmlinux is then a real (tiny) ELF that has vfs_read with an ftrace call site, so the
probe atlas reads it as it reads a kernel's. Nothing here boots a guest: `--live` and
`reproduce`'s rerun are the slow tests' (test_probes_slow.py, test_pack.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fakekernel
import pytest
from test_bad_input import isolated_env, run_cli
from test_pack import bundle  # noqa: F401  (the fixture: a bundle of hellotrace on a tarball kernel 9.9)

from kernlab.artifacts.pack import SUFFIX

ROOT = Path(__file__).resolve().parent.parent
PROBE_CONFIG = ("CONFIG_MODULES=y\nCONFIG_BPF=y\nCONFIG_BPF_SYSCALL=y\nCONFIG_BPF_EVENTS=y\n"
                "CONFIG_KPROBES=y\nCONFIG_KPROBE_EVENTS=y\nCONFIG_FTRACE=y\nCONFIG_DYNAMIC_FTRACE=y\n"
                "CONFIG_FUNCTION_TRACER=y\n")
VMLINUX_C = "int vfs_read(void) { return 0; }\nint main(void) { return vfs_read(); }\n"

pytestmark = pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc (the fake kernel's vmlinux)")


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stdout + done.stderr
    return done.stdout


def error_line(done: subprocess.CompletedProcess) -> str:
    shown = f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr, shown
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kernlab: error:") and "kernlab bug" not in last, shown
    return last


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Areas with kernel 9.9 built (the fake tree) whose vmlinux and System.map hold vfs_read."""
    tmp = tmp_path_factory.mktemp("lab")
    sha = fakekernel.tarball(tmp / "linux-9.9.tar.gz")
    fakekernel.catalog(tmp / "configs", {"file": {"path": str(tmp / "linux-9.9.tar.gz"), "sha256": sha}})
    (tmp / "configs" / "fake.config").write_text(PROBE_CONFIG)
    env = {**fakekernel.environ(tmp), "KERNLAB_RESULTS": str(tmp / "results"),
           "KERNLAB_EXPERIMENTS": str(ROOT / "experiments")}
    ok(cli(["build-kernel", "--version", "9.9", "--no-samples"], env, tmp))
    obj = next((tmp / "work" / "build").glob("9.9-*/obj"))
    (tmp / "vmlinux.c").write_text(VMLINUX_C)
    subprocess.run(["gcc", "-pg", "-mfentry", "-mrecord-mcount", "-no-pie", "-o", str(obj / "vmlinux"),
                    str(tmp / "vmlinux.c")], check=True, capture_output=True)
    (obj / "System.map").write_text("ffffffff81000000 T _text\nffffffff81000100 T vfs_read\n")
    return tmp, env


# ---------------------------------------------------------------- probes
@pytest.mark.parametrize("args", [
    ["probes", "vfs_read"],
    ["probes", "--targets", "vfs_read"],
    ["probes", "-t", "vfs_read"],
    ["probes", "--targets=vfs_read"],
    ["probes", "vfs_read", "--kernels", "9.9"],
    ["probes", "vfs_read", "-k", "9.9"],
    ["probes", "-t", "vfs_read", "-v", "h22b-x"],
    ["probes", "vfs_read", "--vm-name", "h22b-x"],
], ids=lambda args: " ".join(args[1:]))
def test_each_probes_flag_reaches_the_atlas(lab, args: list[str]) -> None:
    """Issue 22 worst case 7: --targets/-t and -v NAME ended in `No idea what 'vfs_read' is!`."""
    tmp, env = lab
    out = ok(cli(args, env, tmp))
    assert "vfs_read on 9.9-" in out and ": attachable" in out


@pytest.mark.parametrize("flag", ["--json", "-j"])
def test_probes_json(lab, flag: str) -> None:
    tmp, env = lab
    out = ok(cli(["probes", "vfs_read", "tracepoint:sched:sched_switch", flag], env, tmp))
    rows = json.loads(out)["rows"]
    assert [(r["target"], r["verdict"]) for r in rows] == [("vfs_read", "attachable"),
                                                          ("tracepoint:sched:sched_switch", "no")]


@pytest.mark.parametrize("flag", ["--experiment", "-e"])
def test_probes_experiment(lab, flag: str) -> None:
    """hellotrace's kprobe on the write syscall, which this kernel does not have."""
    tmp, env = lab
    out = ok(cli(["probes", flag, "hellotrace", "-k", "9.9"], env, tmp))
    assert "__x64_sys_write on 9.9-" in out and "not attachable" in out


def test_probes_vm_name_is_checked(lab) -> None:
    tmp, env = lab
    assert "bad VM name 'Bad Name'" in error_line(cli(["probes", "vfs_read", "-v", "Bad Name"], env, tmp))


def test_probes_with_no_kernel_built_is_an_error(tmp_path: Path) -> None:
    """Issue 22 worst case 7: with no build it printed an empty table, exit 0."""
    for args in (["probes", "vfs_read"], ["probes", "vfs_read", "--json"]):
        done = run_cli(args, tmp_path, isolated_env(tmp_path))
        assert "no kernel is built" in error_line(done) and "invoke build-kernel" in done.stderr
        assert done.stdout == ""


def test_probes_of_an_experiment_with_no_target_is_an_error(lab, tmp_path: Path) -> None:
    tmp, env = lab
    ok(cli(["new-experiment", str(tmp_path / "plain"), "--kind", "shell"], env, tmp))
    spec = tmp_path / "plain" / "experiment.yaml"
    spec.write_text("\n".join(line for line in spec.read_text().splitlines() if "kprobe_events" not in line))
    done = cli(["probes", "-e", str(tmp_path / "plain"), "-k", "9.9"], env, tmp)
    assert "uses no probe target kernlab can find" in error_line(done)


# ---------------------------------------------------------------- check-experiment, new-experiment
@pytest.mark.parametrize("args", [
    ["check-experiment", "hellotrace", "--kernels", "9.9"],
    ["check-experiment", "hellotrace", "-k", "9.9"],
    ["check-experiment", "--name", "hellotrace", "-k", "9.9"],
    ["check-experiment", "-n", "hellotrace"],  # the default kernel: the catalog's, 9.9 here
])
def test_each_check_experiment_flag(lab, args: list[str]) -> None:
    """The fake kernel lacks the write syscall hellotrace probes: checked, and said."""
    tmp, env = lab
    done = cli(args, env, tmp)
    assert "hellotrace failed its checks on 9.9" in error_line(done)
    assert "experiment.yaml ok" in done.stdout and "kernel 9.9" in done.stdout


@pytest.mark.parametrize(("kind", "flags"), [("bpftrace", ("--name", "--kind")), ("libbpf", ("-n", "-k")),
                                           ("bcc", ("--name", "-k")), ("shell", ("-n", "--kind"))])
def test_each_new_experiment_flag_and_kind(lab, tmp_path: Path, kind: str, flags: tuple[str, str]) -> None:
    tmp, env = lab
    folder = tmp_path / f"new-{kind}"
    out = ok(cli(["new-experiment", flags[0], str(folder), flags[1], kind], env, tmp))
    assert f"a {kind} experiment" in out and (folder / "experiment.yaml").is_file()
    listed = ok(cli(["list-experiments"], {**env, "KERNLAB_EXPERIMENTS": str(tmp_path)}, tmp))
    assert f"new-{kind}" in listed and "BROKEN" not in listed  # it loads as written


def test_new_experiment_bare_name_goes_into_the_suite(lab, tmp_path: Path) -> None:
    tmp, env = lab
    suite = tmp_path / "suite"
    suite.mkdir()
    ok(cli(["new-experiment", "fresh"], {**env, "KERNLAB_EXPERIMENTS": str(suite)}, tmp))
    assert (suite / "fresh" / "experiment.yaml").is_file()


# ---------------------------------------------------------------- pack, reproduce
@pytest.mark.parametrize("flags", [("--bundle", "--out", "--small"), ("-b", "-o", "-s")])
def test_each_pack_flag(bundle, tmp_path: Path, flags: tuple[str, str, str]) -> None:  # noqa: F811
    folder, _, _ = bundle
    env = {**os.environ, "KERNLAB_PLAIN": "1"}  # the fixture's areas (monkeypatched)
    big = ok(cli(["pack", flags[0], str(folder), flags[1], str(tmp_path / f"big{SUFFIX}")], env, tmp_path))
    assert big.startswith(str(tmp_path / f"big{SUFFIX}")) and (tmp_path / f"big{SUFFIX}").is_file()
    small = cli(["pack", str(folder), flags[1], str(tmp_path / f"small{SUFFIX}"), flags[2]], env, tmp_path)
    assert "a small pack cannot point at it" in error_line(small)  # --small taken: this source is local
    assert not (tmp_path / f"small{SUFFIX}").exists()
    default = ok(cli(["pack", str(folder)], env, tmp_path))  # no --out: under results/packs
    assert "/packs/hellotrace-9.9-" in default


@pytest.mark.parametrize("args", [
    ["reproduce", "bundle", "--anyway", "--keep-vm", "--vm-name", "h22b-r", "--json"],
    ["reproduce", "-b", "bundle", "-a", "-k", "-v", "h22b-r", "-j"],
])
def test_each_reproduce_flag_is_taken(tmp_path: Path, args: list[str]) -> None:
    """Every flag parses and reaches reproduce, which reads the bundle (here: one without a
    manifest) before any VM; the rerun itself is test_pack.py's slow test."""
    (tmp_path / "bundle").mkdir()
    assert "no manifest.json" in error_line(run_cli(args, tmp_path, isolated_env(tmp_path)))


def test_reproduce_vm_name_is_checked(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()
    done = run_cli(["reproduce", "bundle", "-v", "../x"], tmp_path, isolated_env(tmp_path))
    assert "bad VM name '../x'" in error_line(done)


# ---------------------------------------------------------------- clean
def test_clean_lists_then_removes_with_each_flag(lab, tmp_path: Path) -> None:
    """An older build of 9.9 (other fragments) is listed by `clean`, kept, then removed by
    `clean --yes` / `-y`; the build in use stays."""
    tmp, env = lab
    area = tmp_path / "area"
    shutil.copytree(tmp / "work", area / "work", symlinks=True)
    shutil.copytree(tmp / "configs", area / "configs")
    env = {**env, "KERNLAB_WORK": str(area / "work"), "KERNLAB_CONFIGS": str(area / "configs"),
           "KERNLAB_STATE": str(area / "state")}
    for flag in ("--yes", "-y"):
        (area / "configs" / "fake.config").write_text(PROBE_CONFIG + f"# {flag}\n")
        ok(cli(["build-kernel", "--version", "9.9", "--no-samples"], env, tmp))
        builds = sorted((area / "work" / "build").glob("9.9-*"))
        assert len(builds) == 2
        listed = ok(cli(["clean"], env, tmp))
        assert "9.9-" in listed and sorted((area / "work" / "build").glob("9.9-*")) == builds
        ok(cli(["clean", flag], env, tmp))
        left = sorted((area / "work" / "build").glob("9.9-*"))
        assert len(left) == 1 and left[0] in builds


# ---------------------------------------------------------------- a closed pipe
CLOSED_PIPE = 141


@pytest.mark.parametrize("args", [
    ["probes", "vfs_read"], ["probes", "vfs_read", "--json"], ["list-kernels"], ["list-experiments"],
    ["kernel-info", "--version", "9.9"], ["kernel-info", "--version", "9.9", "--json"], ["vm.status"],
    ["clean"], ["build-kernel", "--version", "9.9", "--plan"], ["check-experiment", "hellotrace"],
], ids=lambda args: " ".join(args))
def test_output_to_a_closed_pipe_ends_quietly(lab, args: list[str]) -> None:
    """`invoke probes ... | head` ended in a BrokenPipe "kernlab bug" line: now no word, exit 141
    (a shell's code for SIGPIPE), and no crash log. The pipe is closed before kernlab writes."""
    tmp, env = lab
    read, write = os.pipe()
    os.close(read)
    logs = tmp / "state" / "logs"
    before = set(logs.glob("*-*-*.log")) if logs.is_dir() else set()
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], cwd=tmp,
                          env={**env, "PYTHONUNBUFFERED": "1"},  # each print meets the closed pipe
                          stdout=write, stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    os.close(write)
    assert "kernlab: error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "BrokenPipe" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert done.returncode == CLOSED_PIPE, done.stderr
    crashes = [p for p in (set(logs.glob("*-*-*.log")) if logs.is_dir() else set()) - before
               if "Traceback" in p.read_text(errors="replace")]
    assert not crashes  # no "kernlab bug" log written either
