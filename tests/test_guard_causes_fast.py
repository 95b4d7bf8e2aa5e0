"""Issue 22 (22c): why a VM is gone, as every command names it (the real CLI, no guest: a VM
record whose QEMU pid is reaped). QEMU's words are this QEMU's only (qemu.log keeps every
launch of the run dir: a failed snapshot restore's "load of migration failed" was blamed for
a later cold boot's end), and a VM another kernlab command quit says which command.
The same with real guests, mid-run: tests/test_guard_causes.py."""

from __future__ import annotations

import json
from pathlib import Path

from test_bad_input import dead_vm, isolated_env, run_cli

RESTORE_THEN_COLD = ("$ qemu-system-x86_64 -incoming exec:cat ...\n"
                     "qemu-system-x86_64: load of migration failed: Invalid argument\n"
                     "# exit 1\n$ qemu-system-x86_64 -kernel bzImage ...\n")


def error_line(tmp_path: Path) -> str:
    done = run_cli(["vm.ssh", "-c", "true", "--name", "lab"], tmp_path, isolated_env(tmp_path))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_a_stale_qemu_log_line_of_an_earlier_launch_is_not_the_cause(tmp_path):
    dead_vm("booting\n", RESTORE_THEN_COLD)(tmp_path)
    line = error_line(tmp_path)
    assert line.startswith("kernlab: error: VM lab is not running: QEMU (pid ")
    assert " exited; boot it again" in line
    assert "load of migration" not in line


def test_a_vm_quit_by_another_command_names_it(tmp_path):
    dead_vm("booting\n", RESTORE_THEN_COLD)(tmp_path)
    run_dir = tmp_path / "state" / "vms" / "lab"
    pid = json.loads((run_dir / "vm.json").read_text())["pid"]
    note = {"qemu_pid": pid, "command": "invoke vm.down --name lab", "pid": 4242, "at": 0}
    (run_dir / "stopped-by.json").write_text(json.dumps(note))
    assert error_line(tmp_path).startswith(
        "kernlab: error: VM lab is not running: stopped by another command while in use: "
        f"`invoke vm.down --name lab` (pid 4242) quit its QEMU (pid {pid})")


def test_a_stopped_by_note_of_an_earlier_qemu_is_ignored(tmp_path):
    dead_vm("booting\n", "")(tmp_path)
    run_dir = tmp_path / "state" / "vms" / "lab"
    (run_dir / "stopped-by.json").write_text(json.dumps({"qemu_pid": 1, "command": "invoke vm.down",
                                                         "pid": 4242, "at": 0}))
    assert "stopped by another command" not in error_line(tmp_path)


# what the tests above cover, for tests/test_bad_input.py's count by kind
FAULTS = [("vm", "gone-stale-qemu-log-line"), ("vm", "gone-quit-by-another-command"),
          ("vm", "gone-stopped-by-note-of-an-earlier-qemu")]
