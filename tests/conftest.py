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
    """The real 6.1 build record; the VM tests need `invoke build-kernel --version 6.1`."""
    from kernlab.build import find_build
    from kernlab.errors import NotFound

    try:
        return find_build("6.1")
    except NotFound as error:
        pytest.skip(f"no 6.1 kernel: {error}")


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
