"""Shared pytest fixtures."""

from __future__ import annotations

import pytest


# ---------------------------------------------------------------- image and VM
@pytest.fixture(scope="session")
def lab_image() -> dict:
    """The real bookworm lab image (built once; later sessions reuse the cached one)."""
    from kernlab.image import build_image

    return build_image("bookworm")


@pytest.fixture(scope="session")
def lab_kernel() -> dict:
    """The real 6.1 build record: built once (about 10 minutes cold), then cached."""
    from kernlab.build import build_kernel

    return build_kernel("6.1")


@pytest.fixture(scope="session")
def lab_vm(lab_kernel: dict, lab_image: dict):
    """One real TCG guest (6.1 + bookworm) shared by the VM tests, stopped at the end."""
    from kernlab.vm import find_vm, start_vm

    stale = find_vm("t-lab")
    if stale:
        stale.stop()
    vm = start_vm(lab_kernel, lab_image, "t-lab")
    yield vm
    vm.stop()
