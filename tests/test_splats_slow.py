"""Kernel splats provoked for real: a tiny out-of-tree module (tests/data/splatmod, built on
the host against the 6.1 build with `make -C BUILD/obj M=DIR`, loaded with insmod in a TCG
guest) runs WARN_ON(1). The run must FAIL naming the WARNING and its first line, with the
report in splats.txt; the same experiment declaring `splats: {expected: [warning]}` PASSes
with the splat recorded; `vm.status` shows the splats of the VM.

No kernel is built here: the 6.1 build must exist (`invoke build-kernel --version 6.1`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from guests import ci_build

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "tests" / "data" / "splatmod"
pytestmark = pytest.mark.slow


def splat_experiment(root: Path, name: str, **extra: object) -> None:
    """An experiment that builds kl_splat.ko on the host and loads it in the guest."""
    folder = root / name
    shutil.copytree(MODULE, folder / "mod")
    (folder / "experiment.yaml").write_text(yaml.safe_dump({
        "title": name, "description": "loads a module whose init runs WARN_ON(1)",
        "build": [{"host": 'make -C "$KERNEL_BUILD/obj" M="$PWD/mod" modules'}],
        "run": {"timeout": 300, "steps": [
            {"name": "load", "cmd": "insmod mod/kl_splat.ko && rmmod kl_splat && echo loaded"}]},
        "capture": {"trace_pipe": False},
        "expect": [{"contains": "^loaded", "in": "step:load"}], **extra}))


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=900, check=False)


def result_of(stdout: str) -> tuple[Path, dict]:
    bundle = Path(stdout.strip().splitlines()[-1].split()[0])
    return bundle, json.loads((bundle / "result.json").read_text())


def test_a_warn_on_in_the_guest_fails_the_run_unless_declared_expected(tmp_path, lab_image,
                                                                        vm_name) -> None:
    ci_build("6.1")
    root = tmp_path / "experiments"
    splat_experiment(root, "splatwarn")
    splat_experiment(root, "splatok", splats={"expected": ["warning"],
                                              "reason": "the module warns on purpose"})
    env = {**os.environ, "KERNLAB_EXPERIMENTS": str(root), "KERNLAB_RESULTS": str(tmp_path / "results"),
           "KERNLAB_PLAIN": "1", "KERNLAB_ACCEL": os.environ.get("KERNLAB_ACCEL", "tcg")}
    name = vm_name("splat")
    try:
        bad = cli("run-experiment", "splatwarn", "--kernel", "6.1", "--keep-vm", "--vm-name", name, env=env)
        print(bad.stdout, bad.stderr[-3000:])
        assert bad.returncode == 1, bad.stderr[-3000:]
        bundle, result = result_of(bad.stdout)
        assert bad.stdout.strip().endswith("FAIL")
        assert result["reason"].startswith("kernel splat: warning: WARNING: CPU: "), result["reason"]
        assert "kl_splat_init" in result["reason"]
        assert "FAIL no unexpected kernel splat: warning: WARNING: CPU:" in bad.stdout
        assert result["splats"] == [{"class": "warning", "line": result["splats"][0]["line"],
                                     "expected": False}]
        report = (bundle / "splats.txt").read_text()
        assert "==> warning (unexpected: fails the run) <==" in report
        assert "kl_splat_init" in report and "Call Trace" in report and "---[ end trace" in report
        assert "kl_splat_init" in (bundle / "dmesg.txt").read_text()
        assert result["kmsg_mark"] not in (bundle / "dmesg.txt").read_text()  # only what came after

        good = cli("run-experiment", "splatok", "--kernel", "6.1", "--keep-vm", "--vm-name", name, env=env)
        assert good.returncode == 0, good.stdout + good.stderr[-3000:]
        _, result = result_of(good.stdout)
        assert [s["expected"] for s in result["splats"]] == [True]  # this run's splat only
        assert "ok   no unexpected kernel splat: only expected splats: 1 warning" in good.stdout

        status = cli("vm.status", "--name", name, env=env)
        assert "kernel splats: 2 warning (first: WARNING: CPU: " in status.stdout, status.stdout
    finally:
        cli("vm.down", "--name", name, env=env)
