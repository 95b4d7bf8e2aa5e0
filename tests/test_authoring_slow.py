"""Issue 15's whole story on real kernels: an experiment written from `new-experiment` in a
folder outside the checkout, checked with `check-experiment` (which catches a planted
undefined variable and a bpftrace type error before any boot), then PASS with
`run-experiment PATH` on 4.15 and 6.1. The real CLI, real builds, real TCG guests; the
kernels must be built (4.15 and 6.1; ``lab_kernel`` builds 6.1 if needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from guests import ci_build, own_vm

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=1800, env=env)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {**os.environ, "KERNLAB_RESULTS": str(tmp_path / "results"), "KERNLAB_PLAIN": "1"}


@pytest.fixture(scope="module")
def kernel_415() -> object:
    """4.15, the other kernel these checks and runs name (built in CI, skipped elsewhere)."""
    return ci_build("4.15")


def test_fresh_experiment_checked_then_passes_on_415_and_61(tmp_path, env, lab_kernel, lab_image,
                                                             kernel_415):
    folder = tmp_path / "research" / "readsize"
    made = cli("new-experiment", str(folder), "--kind", "bpftrace", env=env)
    assert made.returncode == 0, made.stderr
    spec, program = folder / "experiment.yaml", folder / "count.bt"
    good_spec, good_program = spec.read_text(), program.read_text()

    spec.write_text(good_spec.replace("data.bin ${ROUNDS}", "data.bin ${ROUND}"))
    planted = cli("check-experiment", str(folder), "--kernels", "6.1,4.15", env=env)
    assert planted.returncode == 1 and "${ROUND} is not defined" in planted.stderr
    spec.write_text(good_spec)

    program.write_text(good_program.replace('printf("workload reached the end of a file\\n");',
                                            'printf("%d\\n", @reads);'))
    typed = cli("check-experiment", str(folder), "--kernels", "6.1,4.15", env=env)
    assert typed.returncode == 1
    fails = [line for line in typed.stdout.splitlines() if line.startswith("  FAIL")]
    assert len(fails) == 2 and all("printf: %d specifier expects a value of type integer" in f
                                   for f in fails), typed.stdout
    program.write_text(good_program)

    clean = cli("check-experiment", str(folder), "--kernels", "6.1,4.15", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.count("host bpftrace --emit-elf") == 2

    for kernel in ("4.15", "6.1"):
        run = cli("run-experiment", str(folder), "--kernel", kernel, env=env)
        assert run.stdout.strip().endswith("PASS"), run.stdout[-3000:] + run.stderr[-3000:]
        bundle = Path(run.stdout.strip().splitlines()[-1].split()[0])
        result = json.loads((bundle / "result.json").read_text())
        assert result["source"]["source"] == str(folder) and result["source"]["origin"] == "folder"
        assert json.loads((bundle / "manifest.json").read_text())["experiment"]["hash"] == \
            result["source"]["hash"]
        log = (bundle / "steps" / "trace.log").read_text()
        assert "kernlab: all 2 probes attached" in log and "@reads: " in log
        maps = json.loads((bundle / "artifacts" / "bpftrace-trace.json").read_text())["maps"]
        assert maps["@bytes"]["type"] == "hist"
        assert (bundle / "artifacts" / "bpftrace-trace-bytes.svg").read_text().startswith("<svg")


@pytest.fixture(scope="module")
def auth_vm(lab_kernel, lab_image):
    """This module's own 6.1 TCG guest (t-auth), for the kinds and the guest check."""
    yield from own_vm(lab_kernel, lab_image, "t-auth")


@pytest.mark.parametrize("kind", ["libbpf", "bcc", "shell"])
def test_every_kind_passes_as_generated_on_61(tmp_path, env, auth_vm, kind):
    folder = tmp_path / f"my-{kind}"
    assert cli("new-experiment", str(folder), "--kind", kind, env=env).returncode == 0
    run = cli("run-experiment", str(folder), "--kernel", "6.1", "--vm-name", auth_vm.name, env=env)
    assert run.stdout.strip().endswith("PASS"), run.stdout[-3000:] + run.stderr[-3000:]


def test_tracepoint_program_is_checked_in_the_running_guest(tmp_path, env, auth_vm, kernel_415):
    """The host's bpftrace cannot see the kernel's tracepoint formats; the VM's can."""
    folder = tmp_path / "opens"
    assert cli("new-experiment", str(folder), "--kind", "bpftrace", env=env).returncode == 0
    program = folder / "count.bt"
    program.write_text(program.read_text() + '\ntracepoint:syscalls:sys_enter_openat '
                       '/comm == "workload"/ { printf("open %d\\n", args->no_such_field); }\n')
    checked = cli("check-experiment", str(folder), "--kernels", "6.1,4.15", env=env)
    assert checked.returncode == 1
    on_61, on_415 = [line for line in checked.stdout.splitlines() if "dry run" in line]
    assert on_61.startswith("  FAIL") and "no_such_field" in on_61
    assert on_415.startswith("  --") and "no VM of this kernel runs" in on_415
