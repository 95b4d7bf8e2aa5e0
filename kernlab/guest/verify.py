"""`invoke vm.verify`: run the pytest-testinfra guest checks against a running VM."""

from __future__ import annotations

import sys
from pathlib import Path

from kernlab.core.errors import KernlabError
from kernlab.core.proc import run_logged
from kernlab.core.progress import reporter
from kernlab.guest import health
from kernlab.guest.vm import Vm

CHECKS = Path(__file__).resolve().parents[1] / "checks"
SHOWN = ("PASSED", "FAILED", "SKIPPED", "ERROR")


def verify_vm(vm: Vm) -> Path:
    """Run the guest checks; the full pytest output goes to ``<run dir>/verify.log``."""
    log = vm.run_dir / "verify.log"
    log.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", str(CHECKS), "-v", "-rs", "-p", "no:cacheprovider",
           "-o", "addopts=", "--rootdir", str(CHECKS), "--color=no"]

    def show(line: str) -> None:
        if any(word in line for word in SHOWN) and "::" in line:
            reporter().note(line.split("::", 1)[1].strip())

    with reporter().step(f"verify VM {vm.name} (testinfra)"):
        try:
            run_logged(cmd, log, what="guest checks", timeout=1800, on_line=show,
                       env={"KERNLAB_VM_JSON": str(vm.run_dir / "vm.json"),
                            "PYTHONPATH": str(CHECKS.parent.parent)},
                       fix="see which check failed in the log", watch=lambda: _down(vm))
        except health.GuestDown:
            raise
        except KernlabError as error:
            health.require(vm)  # a check may have failed because the VM froze or its SSH went
            raise KernlabError(f"guest checks failed for VM {vm.name}; log: {log}",
                               "see which check failed above", details=error.details) from None
    return log


def _down(vm: Vm) -> health.GuestDown | None:
    """The VM's fault while the checks run (frozen, panicked, gone), if it has one."""
    found = health.quick_state(vm, qmp=False)
    return None if found.ok else health.GuestDown(vm, found)
