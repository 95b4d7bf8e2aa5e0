"""The real matrix through a real single-node Slurm (tests/slurmcluster.py): two kernels as
one job array, each task booting its kernel under TCG on the node; the merged grid equals a
local `invoke matrix` of the same kernels; a task cancelled mid-run (scancel of one array
element) is ERROR cells naming Slurm's state, and --retry recovers it.

The tasks use this session's kernel builds and image: the --slurm-dir's work/ and
state/images link to them (one node: the filesystem every node sees is this one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import slurmcluster
from guests import ci_build

from kernlab.core import paths
from kernlab.guest.image import images_dir

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KERNELS = "5.4.286,6.1"
EXPERIMENTS = "readiter,hellotrace"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from slurmcluster.running(tmp_path_factory)


@pytest.fixture(scope="module")
def slurm_dir(tmp_path_factory, lab_image) -> Path:
    """A --slurm-dir whose kernels and image are this session's."""
    for version in KERNELS.split(","):
        ci_build(version)
    folder = tmp_path_factory.mktemp("shared")
    (folder / "state").mkdir()
    (folder / "work").symlink_to(paths.work_dir())
    (folder / "state" / "images").symlink_to(images_dir())
    return folder


def invoke(cluster, *args: str, **popen) -> subprocess.Popen:
    env = {**cluster.env, "KERNLAB_PLAIN": "1"}
    return subprocess.Popen([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def finished(proc: subprocess.Popen, timeout: float = 1800) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def statuses(report: Path) -> dict[str, str]:
    data = json.loads((report / "matrix.json").read_text())
    return {f"{c['kernel']}/{c['experiment']}": c["status"] for c in data["cells"]}


@pytest.fixture(scope="module")
def local_grid(cluster, slurm_dir, tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("local") / "report"
    started = time.monotonic()
    code, said = finished(invoke(cluster, "matrix", "--kernels", KERNELS, "--experiments", EXPERIMENTS,
                                 "--out", str(out)))
    print(f"local matrix: {time.monotonic() - started:.1f} s\n{said}")
    assert code in (0, 1), said
    return statuses(out)


def test_the_slurm_matrix_equals_the_local_one(cluster, slurm_dir, local_grid, tmp_path):
    out = tmp_path / "report"
    started = time.monotonic()
    code, said = finished(invoke(cluster, "matrix", "--slurm", "--slurm-dir", str(slurm_dir), "--kernels",
                                 KERNELS, "--experiments", EXPERIMENTS, "--out", str(out)))
    print(f"slurm matrix: {time.monotonic() - started:.1f} s\n{said}")
    assert code in (0, 1), said
    assert statuses(out) == local_grid
    assert "PASS" in local_grid.values()
    for kernel in KERNELS.split(","):  # per task: Slurm's states and the task's own progress
        assert f"[{kernel}] Slurm job" in said and f"[{kernel}] > kernel {kernel}" in said
    hosts = json.loads((out / "matrix.json").read_text())["hosts"]
    assert hosts == dict.fromkeys(KERNELS.split(","), slurmcluster.NODE)


def cancel_mid_run(cluster, proc_log: list[str], task: int) -> threading.Thread:
    """scancel array element ``task`` once its kernlab has started an experiment."""

    def watch():
        deadline = time.monotonic() + 900
        kernel = KERNELS.split(",")[task]
        while time.monotonic() < deadline:
            if any(f"[{kernel}] > experiment" in line for line in proc_log):
                job = next(line.split("array job ")[1].split(":")[0] for line in proc_log
                           if "slurm: array job " in line)
                cluster.run("scancel", f"{job}_{task}")
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def run_cancelling(cluster, slurm_dir: Path, out: Path, retry: int) -> tuple[int, str]:
    proc = invoke(cluster, "matrix", "--slurm", "--slurm-dir", str(slurm_dir), "--kernels", KERNELS,
                  "--experiments", EXPERIMENTS, "--out", str(out), "--retry", str(retry))
    lines: list[str] = []
    cancel_mid_run(cluster, lines, 1)
    for line in proc.stdout:
        lines.append(line)
    proc.wait(timeout=1800)
    return proc.returncode, "".join(lines)


def test_a_task_cancelled_mid_run_is_error_naming_slurms_state(cluster, slurm_dir, local_grid, tmp_path):
    code, said = run_cancelling(cluster, slurm_dir, tmp_path / "report", retry=0)
    assert code == 1, said
    cells = json.loads((tmp_path / "report" / "matrix.json").read_text())["cells"]
    cancelled = [c for c in cells if c["kernel"] == "6.1"]
    assert {c["status"] for c in cancelled} == {"ERROR"}, said
    assert all("CANCELLED" in c["reason"] and "Slurm job" in c["reason"] for c in cancelled)
    kept = {f"{c['kernel']}/{c['experiment']}": c["status"] for c in cells if c["kernel"] == "5.4.286"}
    assert kept == {k: v for k, v in local_grid.items() if k.startswith("5.4.286/")}


def test_retry_recovers_the_cancelled_task(cluster, slurm_dir, local_grid, tmp_path):
    code, said = run_cancelling(cluster, slurm_dir, tmp_path / "report", retry=1)
    print(said)
    assert "[6.1] Slurm job" in said and "CANCELLED" in said and "ERROR, no report" in said
    assert "resubmitting 6.1 (retry 1 of 1)" in said
    assert statuses(tmp_path / "report") == local_grid
    assert code == (0 if set(local_grid.values()) <= {"PASS", "n/a"} else 1)
