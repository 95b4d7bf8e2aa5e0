"""A test module's own TCG guest: fresh at the start, stopped at the end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from kernlab.guest.vm import Vm, find_vm, start_vm


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
