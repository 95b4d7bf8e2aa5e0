"""Shared pytest fixtures."""

from __future__ import annotations

import os
import signal

import pytest

from kernlab.core.records import BuildRecord, ImageRecord

# The tests build to test building: a registry of the user's (or CI's) must not stand in;
# tests/test_registry*.py start their own and name it explicitly.
for _name in ("KERNLAB_REGISTRY", "KERNLAB_REGISTRY_TOKEN", "KERNLAB_REGISTRY_USER",
              "KERNLAB_REGISTRY_INSECURE"):
    os.environ.pop(_name, None)


# A shell starts a background job with SIGINT ignored, and a process started with SIGINT
# ignored keeps it so, children included: Python then never raises KeyboardInterrupt, and
# the Ctrl-C tests' SIGINT to a child did nothing (a replica started as `.ci/run &` failed
# three of them). Python's own handler here is reset to the default in every child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ---------------------------------------------------------------- image and VM
@pytest.fixture(scope="session")
def lab_image() -> ImageRecord:
    """The real bookworm lab image (built once; later sessions reuse the cached one)."""
    from kernlab.guest.image import build_image

    return build_image("bookworm")


@pytest.fixture(scope="session")
def lab_kernel() -> BuildRecord:
    """The real 6.1 build record: built once (about 10 minutes cold), then cached."""
    from kernlab.kernel.build import build_kernel

    return build_kernel("6.1")


@pytest.fixture(scope="session")
def vm_name():
    """VM names unique to this test session: test runs that overlap (two engineers, CI)
    share the state dir, so fixed names would stop each other's guests."""
    import os
    import shutil

    from kernlab.guest.vm import find_vm, vms_dir

    suffix = f"-{os.getpid()}"
    prefix = os.environ.get("KERNLAB_TEST_VM_PREFIX", "t")  # a machine's rule for VM names
    yield lambda what: f"{prefix}-{what}{suffix}"
    for run_dir in vms_dir().glob(f"{prefix}-*{suffix}"):  # logs of this session's guests
        if find_vm(run_dir.name) is None:
            shutil.rmtree(run_dir, ignore_errors=True)
            (vms_dir() / f".{run_dir.name}.lock").unlink(missing_ok=True)


@pytest.fixture(scope="session")
def lab_vm(lab_kernel: BuildRecord, lab_image: ImageRecord, vm_name):
    """One real TCG guest (6.1 + bookworm) shared by the VM tests, stopped at the end."""
    from kernlab.guest.vm import start_vm

    vm = start_vm(lab_kernel, lab_image, vm_name("lab"))
    yield vm
    vm.stop()
