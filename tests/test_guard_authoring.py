"""Issue 22 (22c): writing experiments. ``${NAME}`` in every expectation value, the older
``kernels: {min: V}`` format read with a note, through the real CLI where a user meets them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kernlab.core.errors import KernlabError
from kernlab.experiments import driver
from kernlab.experiments.expect import Evidence, check
from kernlab.experiments.fit import resolve_vars
from kernlab.experiments.suite import load_experiment

ROOT = Path(__file__).resolve().parent.parent

VALUES = """\
title: values per kernel
description: every expectation value may be a vars entry
vars:
  LOW: {"0": "3", "5.4": "10"}
  HIGH: {"0": "5", "5.4": "20"}
  OFFSET: {"0": "88", "5.4": "92"}
  CODE: {"0": "0"}
run:
  steps:
    - {name: work, cmd: "echo n=12; echo off=92"}
expect:
  - {name: count, in: "step:work", value: "n=(\\\\d+)", min: "${LOW}", max: "${HIGH}"}
  - {name: offset, in: "step:work", value: "off=(\\\\d+)", equals: "${OFFSET}"}
  - {name: lines, in: "step:work", contains: "n=", min: "${LOW}"}
  - {name: ends, exit: {step: work, code: "${CODE}"}}
"""


def write(root: Path, name: str, text: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiment.yaml").write_text(textwrap.dedent(text))
    return folder


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("KERNLAB_")}
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], capture_output=True,
                          text=True, check=False, timeout=300, cwd=ROOT,
                          env={**full, **env, "KERNLAB_PLAIN": "1"})


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "exps").mkdir()
    return {"KERNLAB_EXPERIMENTS": str(tmp_path / "exps"), "KERNLAB_WORK": str(tmp_path / "work"),
            "KERNLAB_STATE": str(tmp_path / "state"), "KERNLAB_RESULTS": str(tmp_path / "results"),
            "KERNLAB_LOCK": str(tmp_path / "kernlab.lock")}


def outcomes(exp, release: str, output: str) -> dict[str, tuple[bool, str]]:
    evidence = Evidence(texts={"step:work": output}, exits={"work": 0})
    variables = resolve_vars(exp, release)
    return {e.name: (o.passed, o.detail) for e in exp.expectations
            for o in [check(e, evidence, variables)]}


def test_vars_in_min_max_equals_and_exit_code_are_resolved_per_kernel(tmp_path, env):
    """README: every expectation value may be a ``${NAME}``; it was refused in min/max/equals."""
    write(tmp_path / "exps", "values", VALUES)
    listed = cli("list-experiments", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "values" in listed.stdout and "BROKEN" not in listed.stdout
    exp = load_experiment("values", tmp_path / "exps")
    on_61 = outcomes(exp, "6.1", "n=12\noff=92\n")
    assert on_61 == {"count": (True, "values 12 (want >= 10.0 <= 20.0)"),
                     "offset": (True, "values 92 (want == 92.0)"),
                     "lines": (False, "1 matching lines (want >= 10)"),
                     "ends": (True, "step work exited 0 (want 0)")}
    on_415 = outcomes(exp, "4.15", "n=12\noff=92\n")  # 4.15's values: 3..5, 88
    assert not on_415["count"][0] and not on_415["offset"][0] and on_415["ends"][0]


@pytest.mark.parametrize("key, value, words", [
    ("min", "${NOPE}", "expect[0].min: ${NOPE} is not defined"),
    ("max", "${NOPE}", "expect[0].max: ${NOPE} is not defined"),
    ("equals", "${NOPE}", "expect[0].equals: ${NOPE} is not defined"),
    ("min", "ten", "expect[0].min: must be a number or one ${NAME} from vars:, got 'ten'"),
])
def test_a_bad_var_in_a_value_is_refused_on_load_naming_the_key(tmp_path, env, key, value, words):
    spec = VALUES.replace('min: "${LOW}", max: "${HIGH}"', f'{key}: "{value}"')
    write(tmp_path / "exps", "values", spec)
    done = cli("check-experiment", "values", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("kernlab: error: ")
    assert words in done.stderr.strip().splitlines()[-1]


def test_a_var_that_is_not_a_number_on_a_kernel_fails_that_expectation_saying_so(tmp_path):
    lots = VALUES.replace('LOW: {"0": "3", "5.4": "10"}', 'LOW: {"0": "3", "5.4": "lots"}')
    write(tmp_path, "values", lots)
    exp = load_experiment("values", tmp_path)
    result = outcomes(exp, "6.1", "n=12\noff=92\n")
    assert result["count"] == (False, "min ${LOW} is 'lots' here, not a number: fix its vars: entry")
    assert result["offset"][0]
    from kernlab.experiments.check import _value_lines  # check-experiment says it before any boot

    lines = _value_lines(exp, resolve_vars(exp, "6.1"))
    assert [(line.status, line.what) for line in lines] == [("FAIL", "expect[0] (count)"),
                                                            ("FAIL", "expect[2] (lines)")]
    assert lines[0].detail == "min ${LOW} is 'lots' here, not a number: fix its vars: entry"
    assert _value_lines(exp, resolve_vars(exp, "4.15")) == []


def test_older_format_minimum_runs_as_na_with_the_text_to_write(tmp_path, env):
    """Last month's ``kernels: {min: "5.5"}``: read (n/a before 5.5), with a one-line note
    saying what to write; it was refused outright."""
    write(tmp_path / "exps", "old", VALUES.replace("vars:", 'kernels: {min: "5.5"}\nvars:'))
    done = cli("run-experiment", "old", "--kernel", "4.15", env=env)
    assert done.returncode == 77, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == ("kernlab: n/a: old needs Linux 5.5 (an older-format bound, no reason given); "
                         "kernel 4.15 is older")
    note = [line for line in lines if "older format" in line]
    assert len(note) == 1 and 'needs: {features: {NAME: "5.5"}}' in note[0]
    listed = cli("list-experiments", env=env)
    assert listed.returncode == 0 and "BROKEN" not in listed.stdout and ">= 5.5" in listed.stdout


def test_an_unreadable_bound_is_still_an_error(tmp_path):
    write(tmp_path, "bad", VALUES.replace("vars:", 'kernels: {min: "four"}\nvars:'))
    with pytest.raises(KernlabError, match=r"kernels.min: must be a kernel version like 5.4"):
        load_experiment("bad", tmp_path)


@pytest.mark.skipif(shutil.which("bpftrace") is None or os.geteuid() != 0,
                    reason="needs the host's bpftrace (Debian's 0.17, as in the guest) and root")
def test_a_bare_command_found_twice_on_path_runs(tmp_path, monkeypatch):
    """``command: true`` on a merged-/usr Debian (/bin -> usr/bin): bpftrace -c refused it
    ("path 'true' must refer to a unique binary but matched 2 binaries"); the driver now
    gives bpftrace the path. The host's real bpftrace, run by the guest driver's code."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    if len({os.path.realpath(p) for p in ("/usr/bin/true", "/bin/true") if os.path.exists(p)}) != 1:
        pytest.skip("not a merged-/usr host")
    plan = {"outdir": str(tmp_path / "out"), "timeout": 60, "drain": 0,
            "trace": {"enabled": False, "dir": str(tmp_path)},
            "steps": [{"name": "hi", "cmd": "bpftrace", "timeout": 60,
                       "bpftrace": {"program": 'BEGIN { printf("hello\\n"); exit(); }', "command": "true"}}]}
    status = driver.run_plan(plan)
    log = (tmp_path / "out" / "steps" / "hi.log").read_text()
    assert status["status"] == "done", log
    assert "kernlab: command true is /usr/bin/true" in log and "hello" in log
    assert "unique binary" not in log


# ---------------------------------------------------------------- check-experiment: the image
CHECKED = """\
title: tools and binaries
description: what the run needs from the image
needs:
  tools: [bpftrace, tcpdump]
run:
  steps:
    - name: trace
      bpftrace: 'uprobe:bash:readline { @n = count(); } uprobe:/usr/bin/nope:f { }'
    - name: dd
      bpftrace: 'kretprobe:vfs_read /pid == cpid/ { @b = hist(retval); }'
      command: dd if=/dev/zero of=/dev/null count=4
expect:
  - {in: "step:dd", contains: "@b"}
"""


@pytest.fixture(scope="module")
def merged_usr_disk(tmp_path_factory) -> str:
    """A real ext4 file (mke2fs -d, as build-image makes one) with a merged-/usr layout."""
    if not (shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")):
        pytest.skip("needs e2fsprogs")
    root = tmp_path_factory.mktemp("root")
    for name in ("dd", "bash", "bpftrace"):
        (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        (root / "usr" / "bin" / name).write_text("#!/bin/sh\n")
    (root / "usr" / "sbin").mkdir()
    (root / "bin").symlink_to("usr/bin")
    (root / "sbin").symlink_to("usr/sbin")
    disk = tmp_path_factory.mktemp("disk") / "rootfs.ext4"
    mke2fs = shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-d", str(root), str(disk), "16M"], check=True)
    return str(disk)


def test_check_experiment_looks_up_tools_and_binaries_in_the_image(tmp_path, merged_usr_disk):
    """`ok needs: ..., tcpdump` for a tool the image lacks; `command: dd` and `uprobe:bash:`
    that bpftrace refuses in the guest (two matches, /bin and /usr/bin): now each a line."""
    from kernlab.experiments.check import guest_lines
    from kernlab.guest.imagefiles import read_disk

    files = read_disk(merged_usr_disk, packages=3)
    assert files.links == {"/bin": "/usr/bin", "/sbin": "/usr/sbin"}
    assert files.on_path("dd") == ["/usr/bin/dd", "/bin/dd"] and files.on_path("tcpdump") == []
    write(tmp_path, "checked", CHECKED)
    lines = {line.what: (line.status, line.detail) for line in
             guest_lines(load_experiment("checked", tmp_path), files)}
    assert lines["guest tools"][0] == "FAIL" and lines["guest tools"][1].startswith(
        "not in the image (3 packages): tcpdump; add the package")
    assert lines["step dd command"] == ("ok", "dd is /usr/bin/dd (given to bpftrace -c as that path)")
    assert lines["step trace uprobe"][0] == "FAIL"
    uprobes = [line for line in guest_lines(load_experiment("checked", tmp_path), files)
               if line.what == "step trace uprobe"]
    assert [u.detail for u in uprobes] == [
        "uprobe /usr/bin/nope: no such file in the image",
        "uprobe binary bash matches 2 files (/usr/bin/bash, /bin/bash): bpftrace refuses it; "
        "write uprobe:/usr/bin/bash:..."]


@pytest.mark.slow
def test_check_experiment_on_a_built_kernel_and_the_image(tmp_path, lab_kernel, lab_image):
    """The real CLI on the 6.1 build and the lab image: a tool the image lacks, a bare uprobe
    binary found twice, a kprobe_events line and a libbpf SEC() naming what the kernel lacks
    are FAIL lines (each was `ok` or unchecked); `command: dd` is ok (the run gives its path)."""
    env = {**os.environ, "KERNLAB_RESULTS": str(tmp_path / "results"), "KERNLAB_PLAIN": "1"}
    folder = write(tmp_path, "tooly", CHECKED.replace(
        "expect:", "    - name: events\n      cmd: echo 'p:kl_nope no_such_function_kl' >> "
                   "/sys/kernel/debug/tracing/kprobe_events\nexpect:"))
    done = subprocess.run([sys.executable, "-m", "invoke", "check-experiment", str(folder), "--kernels",
                           "6.1"], cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    fails = [line.strip() for line in done.stdout.splitlines() if line.startswith("  FAIL")]
    assert any(f.startswith("FAIL guest tools: not in image bookworm-") and ": tcpdump;" in f for f in fails)
    assert any("uprobe binary bash matches 2 files (/usr/bin/bash, /bin/bash)" in f for f in fails)
    assert any(f.startswith("FAIL probe targets (atlas): no_such_function_kl") for f in fails), fails
    assert "ok   step dd command: dd is /usr/bin/dd" in done.stdout
    assert "ok   step dd bpftrace dry run" in done.stdout  # with -c: cpid has a child command

    libbpf = tmp_path / "libbpf-exp"
    made = subprocess.run([sys.executable, "-m", "invoke", "new-experiment", str(libbpf), "--kind", "libbpf"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert made.returncode == 0, made.stderr
    source = libbpf / "prog.bpf.c"
    source.write_text(source.read_text().replace('SEC("kprobe/vfs_read")', 'SEC("kprobe/no_such_fn_kl")'))
    checked = subprocess.run([sys.executable, "-m", "invoke", "check-experiment", str(libbpf), "--kernels",
                              "6.1"], cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert checked.returncode == 1
    assert "FAIL probe targets (atlas): no_such_fn_kl: no_such_fn_kl is not in this kernel" in checked.stdout
