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
