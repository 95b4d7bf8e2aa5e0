"""Issue 22 (22c): the cause in a bundle is the real one. Real QEMU guests (the 6.1 build),
the real CLI: the run's VM quit by `invoke vm.down` from another terminal mid-run (it was
blamed on QEMU's last qemu.log line, stale from an earlier boot), and the guest's disk
filled by a step (it was "the guest driver did not finish"; the ENOSPC was only in
logs/remote.log). A step kernlab had to kill: tests/test_guard_stop.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import test_guard_causes_fast
import yaml
from guests import ci_build
from test_faults_vm import Background, bundle_of, cli, experiment, qemu_pids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernel() -> object:
    return ci_build("6.1")


@pytest.fixture
def env(tmp_path: Path, lab_image) -> dict[str, str]:
    """The CLI's environment: this session's state and builds, bundles and experiments in tmp."""
    root = tmp_path / "experiments"
    experiment(root, "longrun", "echo working; sleep 600")
    return {**os.environ, "KERNLAB_EXPERIMENTS": str(root), "KERNLAB_RESULTS": str(tmp_path / "results"),
            "KERNLAB_PLAIN": "1", "KERNLAB_ACCEL": os.environ.get("KERNLAB_ACCEL", "tcg")}

FILL = ("mkdir -p /root/fill; i=0; for s in 64M 1M 4K; do while fallocate -l $s /root/fill/$i "
        "2>/dev/null; do i=$((i+1)); done; done; true")


def write(root: Path, name: str, steps: list[dict]) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "experiment.yaml").write_text(yaml.safe_dump({
        "title": name, "description": "a cause test", "run": {"steps": steps},
        "expect": [{"contains": "finished", "in": "step:work"}]}))


def test_a_vm_quit_by_vm_down_mid_run_names_that_command(kernel, env, tmp_path, vm_name) -> None:
    name = vm_name("c-down")
    run = Background(["run-experiment", "longrun", "--kernel", "6.1", "--vm-name", name], env, tmp_path)
    run.wait_for("> run longrun in the guest")
    time.sleep(2)
    down = cli("vm.down", "--name", name, env=env)
    assert down.returncode == 0, down.stderr
    code, out, err = run.finish(timeout=90)
    assert code == 1 and "Traceback" not in err, err
    reason = json.loads((bundle_of(out) / "result.json").read_text())["reason"]
    assert reason.startswith(f"VM {name} is not running: stopped by another command while in use: "
                             f"`invoke -r "), reason
    assert f"vm.down --name {name}` (pid " in reason
    assert "load of migration" not in reason and not qemu_pids(name)


def test_a_full_guest_disk_is_the_cause(kernel, env, tmp_path, vm_name) -> None:
    root = Path(env["KERNLAB_EXPERIMENTS"])
    write(root, "diskfull", [{"name": "fill", "cmd": FILL},
                             {"name": "work", "cmd": "for i in $(seq 1 2000); do echo line $i; done; "
                                                     "echo finished"}])
    name = vm_name("c-disk")
    done = cli("run-experiment", "diskfull", "--kernel", "6.1", "--vm-name", name, env=env, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    reason = json.loads((bundle_of(done.stdout) / "result.json").read_text())["reason"]
    assert reason.startswith("the guest's disk is full (") and "No space left on device" in reason, reason
    assert f"reason: {reason}" in done.stdout and not qemu_pids(name)


# what the tests above cover, for tests/test_bad_input.py's count by kind
FAULTS = [("run-fault", "vm-down-mid-run"), ("run-fault", "guest-disk-full"), *test_guard_causes_fast.FAULTS]
