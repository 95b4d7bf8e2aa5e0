"""Test helpers for real guests and real builds: a module's own TCG guest (fresh at the
start, stopped at the end), the build of a kernel (built in CI, else skipped when absent)
and a patch series as the build must apply it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernlab.core.errors import NotFound
from kernlab.guest.vm import Vm, find_vm, start_vm
from kernlab.kernel.build import build_kernel
from kernlab.kernel.selection import find_build

ROOT = Path(__file__).resolve().parent.parent
CI_BUILDS = ("4.15", "5.4.286", "5.4.286+no-notrace", "6.1", "6.12")  # built when CI is set; 5.10 if built


def ci_build(version: str) -> Any:
    """The build record of ``version``: built when ``CI`` is set and it is one of CI_BUILDS
    (a fresh clone must not skip what it can build), else skipped when absent."""
    if os.environ.get("CI") and version in CI_BUILDS:
        return build_kernel(version)
    try:
        return find_build(version)
    except NotFound:
        pytest.skip(f"kernel {version} is not built here: `invoke build-kernel --version "
                    f"{version}` builds it (CI builds {', '.join(CI_BUILDS)}; 4.15 and "
                    "5.4.286 from KERNLAB_LOCAL_KERNELS)")


def series_of(version: str) -> list[str]:
    """The patch names of patches/VERSION/series, in the order the build applies them."""
    lines = (ROOT / "patches" / version / "series").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def own_vm(build: Any, image: Any, name: str) -> Iterator[Vm]:
    """For a module fixture (``yield from own_vm(...)``): a VM called ``name`` booted anew
    (one left by an earlier session is stopped first; other modules' VMs come and go)."""
    stale = find_vm(name)
    if stale:
        stale.stop()
    vm = start_vm(build, image, name)
    try:
        yield vm
    finally:
        vm.stop()
