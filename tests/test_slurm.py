"""`matrix --slurm` against a real single-node Slurm (tests/slurmcluster.py).

The Slurm side is real throughout: sbatch, the array, scontrol's states and reasons,
scancel. Here each task's payload is a few lines of shell standing in for one kernel's
`invoke matrix` (it writes the report a one-kernel run writes), so that cancelling, retrying
and Ctrl-C are tested in seconds; test_slurm_slow.py runs the real matrix through Slurm.
"""

from __future__ import annotations

import _thread
import json
import shlex
import threading
import time
from pathlib import Path

import pytest
import slurmcluster

from kernlab.compare.merge import slurm_run
from kernlab.core.errors import KernlabError
from kernlab.fanout import slurm

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ["5.4.286", "6.1"]
needs_slurm = pytest.mark.skipif(not slurmcluster.available(),
                                 reason="needs root, munge and slurm-wlm (invoke setup)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from slurmcluster.running(tmp_path_factory)


@pytest.fixture
def on_cluster(cluster, monkeypatch, tmp_path):
    """SLURM_CONF for this process; the image counts as there (no image job)."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    monkeypatch.setattr(slurm, "_image_ready", lambda _dir: True)
    return cluster


def stand_in(hold_task: int | None = None):
    """A task script that writes a one-kernel report of PASS cells; task ``hold_task``'s first
    attempt sleeps (for the test to cancel it) and later attempts do not."""

    def script(tasks, names, run, slurm_dir, lanes):
        cells = {t.index: [{"kernel": t.kernel, "experiment": n, "status": "PASS", "reason": "",
                            "bundle": None} for n in names] for t in tasks}
        cases = "\n".join(
            f"  {i}) KERNEL={t.kernel}; CELLS={shlex.quote(json.dumps(cells[i]))} ;;"
            for i, t in ((t.index, t) for t in tasks))
        hold = (f'if [ "$SLURM_ARRAY_TASK_ID" = {hold_task} ] && mkdir {run}/held 2>/dev/null; '
                "then echo '> holding'; sleep 300; fi") if hold_task is not None else ""
        return f"""#!/bin/sh
set -eu
case "$SLURM_ARRAY_TASK_ID" in
{cases}
esac
OUT={run}/tasks/$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_JOB_ID/report
echo "> kernel $KERNEL"
{hold}
mkdir -p "$OUT"
printf '{{"kernels": ["%s"], "experiments": {json.dumps(names)}, "hosts": {{}}, "cells": %s}}' \\
  "$KERNEL" "$CELLS" > "$OUT/matrix.json"
echo "< kernel $KERNEL"
"""
    return script


def options(tmp_path: Path, **given) -> slurm.SlurmOptions:
    return slurm.SlurmOptions(slurm.slurm_dir_of(str(tmp_path / "shared")), poll=0.5, **given)


def when_running(cluster, task: int, then, timeout: float = 60.0) -> threading.Thread:
    """A thread that waits for array task ``task`` of the test's array to run, then calls
    ``then(job_id)``."""

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = cluster.run("squeue", "-h", "-r", "-n", "kernlab-matrix", "-t", "RUNNING",
                              "-o", "%F %K", check=False).stdout.split()
            pairs = list(zip(out[::2], out[1::2], strict=False))
            jobs = [job for job, index in pairs if index == str(task)]
            if jobs:
                time.sleep(1.0)  # let it reach its sleep
                then(jobs[0])
                return
            time.sleep(0.3)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def run(kernels, names, out, opts):
    """`matrix --slurm` through the library: (merged matrix, the Slurm run)."""
    merged, _written, done = slurm_run(kernels, names, out, opts)
    return merged, done


def grid(matrix) -> dict:
    return {f"{k}/{e}": c.status for (k, e), c in matrix.cells.items()}


@needs_slurm
def test_one_task_per_kernel_merged_into_one_report(on_cluster, monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(slurm, "task_script", stand_in())
    out = tmp_path / "report"
    merged, _ = run(KERNELS, ["readiter", "hellotrace"], out, options(tmp_path))
    assert grid(merged) == {f"{k}/{e}": "PASS" for k in KERNELS for e in ("readiter", "hellotrace")}
    assert merged.hosts == dict.fromkeys(KERNELS, slurmcluster.NODE)  # where each ran
    written = json.loads((out / "matrix.json").read_text())
    assert written["kernels"] == KERNELS and len(written["cells"]) == 4
    said = capfd.readouterr().err
    for kernel in KERNELS:  # each task's state changes and its own progress lines
        assert f"[{kernel}] Slurm job" in said and "COMPLETED" in said
        assert f"[{kernel}] > kernel {kernel}" in said


@needs_slurm
def test_a_cancelled_task_is_error_cells_naming_slurms_state(on_cluster, monkeypatch, tmp_path):
    monkeypatch.setattr(slurm, "task_script", stand_in(hold_task=1))
    when_running(on_cluster, 1, lambda job: on_cluster.run("scancel", f"{job}_1"))
    merged, _ = run(KERNELS, ["readiter"], tmp_path / "report", options(tmp_path))
    assert merged.cell("5.4.286", "readiter").status == "PASS"
    cancelled = merged.cell("6.1", "readiter")
    assert cancelled.status == "ERROR"
    assert "CANCELLED" in cancelled.reason and "_1 " in cancelled.reason, cancelled.reason
    assert f"on {slurmcluster.NODE}" in cancelled.reason and "log " in cancelled.reason
    assert json.loads((tmp_path / "report" / "matrix.json").read_text())["passed"] is False


@needs_slurm
def test_retry_resubmits_only_the_cancelled_task(on_cluster, monkeypatch, tmp_path, capfd):
    monkeypatch.setattr(slurm, "task_script", stand_in(hold_task=1))
    submitted = []
    real_sbatch = slurm.sbatch
    monkeypatch.setattr(slurm, "sbatch", lambda args: submitted.append(args) or real_sbatch(args))
    when_running(on_cluster, 1, lambda job: on_cluster.run("scancel", f"{job}_1"))
    merged, done = run(KERNELS, ["readiter"], tmp_path / "report", options(tmp_path, retry=1))
    assert grid(merged) == {"5.4.286/readiter": "PASS", "6.1/readiter": "PASS"}
    assert [len(t.attempts) for t in done.tasks] == [1, 2]
    arrays = [next(a for a in args if a.startswith("--array=")) for args in submitted]
    assert arrays == ["--array=0,1", "--array=1"]  # the second round: the cancelled task only
    said = capfd.readouterr().err
    assert "[6.1] Slurm job" in said and "CANCELLED" in said and "ERROR, no report" in said
    assert "resubmitting 6.1 (retry 1 of 1)" in said


@needs_slurm
def test_ctrl_c_cancels_the_array_and_merges_what_finished(on_cluster, monkeypatch, tmp_path):
    monkeypatch.setattr(slurm, "task_script", stand_in(hold_task=1))
    when_running(on_cluster, 1, lambda _job: _thread.interrupt_main())
    merged, done = run(KERNELS, ["readiter"], tmp_path / "report", options(tmp_path, retry=2))
    assert done.interrupted
    assert merged.cell("5.4.286", "readiter").status == "PASS"
    assert merged.cell("6.1", "readiter").status == "ERROR"
    assert "CANCELLED" in merged.cell("6.1", "readiter").reason
    assert [len(t.attempts) for t in done.tasks] == [1, 1]  # Ctrl-C: no retry
    left = on_cluster.run("squeue", "-h", "-n", "kernlab-matrix", check=False).stdout.strip()
    assert not left, f"still queued after Ctrl-C: {left}"


@needs_slurm
def test_sbatch_refusing_a_partition_is_one_line_and_leaves_no_run_folder(on_cluster, tmp_path):
    with pytest.raises(KernlabError, match=r"sbatch refused the job: .*partition.*; check --partition"):
        run(["6.1"], ["readiter"], tmp_path / "r", options(tmp_path, partition="nosuch"))
    assert not list((tmp_path / "shared" / "runs").iterdir())


def test_scontrol_lines_give_each_array_task_its_state():
    text = ("JobId=7 ArrayJobId=5 ArrayTaskId=2-3%1 JobName=kernlab-matrix JobState=PENDING "
            "Reason=Resources ExitCode=0:0 RunTime=00:00:00 NodeList=(null)\n"
            "JobId=6 ArrayJobId=5 ArrayTaskId=1 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15 "
            "RunTime=01:00:02 NodeList=n3\n"
            "JobId=9 ArrayJobId=8 ArrayTaskId=0 JobState=COMPLETED Reason=None\n")
    states = slurm.scontrol_states(text, "5")
    assert sorted(states) == [1, 2, 3]
    assert states[2].state == "PENDING" and not states[2].final
    assert states[1].why() == "Slurm job 5_1 TIMEOUT (TimeLimit, signal 15) on n3 after 01:00:02"


def test_sacct_rows_serve_once_the_controller_forgot_the_job():
    rows = "12_0|COMPLETED|None|0:0|n1|00:03:01\n12_1|OUT_OF_MEMORY|None|0:125|n2|00:01:10\n" \
           "12_[2-3]|CANCELLED by 0|DependencyNeverSatisfied|0:0|None assigned|00:00:00\n"
    states = slurm.sacct_states(rows, "12")
    assert states[1].why() == "Slurm job 12_1 OUT_OF_MEMORY (signal 125) on n2 after 00:01:10"
    assert states[3].state == "CANCELLED" and states[3].reason == "DependencyNeverSatisfied"
    assert slurm.task_ids("0-2,5,7-8%2") == [0, 1, 2, 5, 7, 8]


@pytest.mark.parametrize(("flags", "message"), [
    ({"retry": "-1"}, "--retry '-1' is not a number of retries; give a whole number from 0"),
    ({"retry": "x"}, "--retry 'x' is not a number of retries"),
    ({"partition": "a b"}, "--partition 'a b' is not a Slurm name or time"),
    ({"lanes": "0"}, "--lanes='0' is not a number of lanes"),
])
def test_bad_flags_are_one_line(flags, message, tmp_path):
    given = {"slurm_dir": str(tmp_path / "s"), "partition": "", "account": "", "time_limit": "",
             "retry": 0, "lanes": None, **flags}
    with pytest.raises(KernlabError) as caught:
        slurm.options_of(**given)
    assert message in caught.value.one_line()


def test_slurm_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(KernlabError, match="is a file, not a directory; give --slurm-dir a folder"):
        slurm.slurm_dir_of(str(tmp_path / "f"))


def test_without_slurm_commands_it_says_where_to_run(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KernlabError, match="sbatch, scontrol, scancel not found on PATH; run from a login"):
        slurm.check_tools()


def test_slurm_flags_need_slurm_and_exclude_hosts_and_merge():
    with pytest.raises(KernlabError, match="--slurm and --hosts both share the kernels out; use one"):
        slurm.check_flags(True, "hosts.yaml")
    with pytest.raises(KernlabError, match="--merge runs nothing; --slurm runs the matrix; drop --slurm"):
        slurm.check_flags(True, "", "--merge")
    with pytest.raises(KernlabError, match="--partition, --retry: only with --slurm; add --slurm"):
        slurm.check_flags(False, "", partition="batch", account="", retry=2)
    slurm.check_flags(False, "", partition="", retry=0)  # nothing given: fine
