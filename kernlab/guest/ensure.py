"""The one path that makes sure a kernel build, an image and a VM running them exist.

``Target`` is what `run-experiment`, `suite`, `matrix`, `reproduce` and `vm.up` share:
it finds (or builds) the kernel a ``--kernel`` names, finds (or builds) the image, then
finds a VM running both or boots one. What it got is kept, and a kernel or image that
could not be had is not tried again. A VM the command did not start is either refused
when it runs something else (``restart=False``: a run never stops a VM of the user's) or
restarted (``restart=True``: `vm.up` was asked for exactly that VM).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from kernlab.core import inuse
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord, ImageRecord
from kernlab.guest import health
from kernlab.guest.image import build_image
from kernlab.guest.vm import Vm, answering, claim, find_vm, mismatch, release, run_dir_of, start_vm
from kernlab.kernel.selection import KernelChoice, build_for, select_build


class VmRefused(KernlabError):
    """The VM a run would use, which the user started, runs another kernel or image, or is
    frozen or silent: refused before any bundle, and left as it is."""


@dataclass
class Target:
    """The kernel, image and VM of one command, each found or made once.

    ``build_missing``: an unbuilt catalog version is built (runs) or refused with the
    `build-kernel` command (vm.up). ``vm_opts`` go to ``start_vm`` (append, memory, ...).
    """

    choice: KernelChoice | None
    recipe: str = "bookworm"
    vm_name: str = "default"
    flag: str = "--kernel"  # the command's flag that picks a kernel (for notes)
    build_missing: bool = True
    restart: bool = False
    vm_opts: dict[str, Any] = field(default_factory=dict)
    build: BuildRecord | None = None
    image: ImageRecord | None = None
    vm: Vm | None = None
    started_vm: bool = False
    error: KernlabError | None = None
    claimed: bool = False
    marks: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        run_dir_of(self.vm_name)  # a bad VM name fails before any build

    def kernel_and_image(self) -> tuple[BuildRecord, ImageRecord]:
        """The build and the image, found or made (once; a failure is remembered)."""
        if self.error is not None:
            raise self.error
        try:
            if self.build is None:
                self.build = self._kernel()
            if self.image is None:
                with reporter().step(f"image {self.recipe}"):
                    self.image = build_image(self.recipe)
        except KernlabError as error:
            self.error = error
            raise
        return self.build, self.image

    def _kernel(self) -> BuildRecord:
        if self.choice is None:
            raise KernlabError("no kernel named", "give --kernel VERSION")
        if not self.build_missing:
            return select_build(self.choice.asked, self.flag)
        with reporter().step(f"kernel {self.choice.asked}"):
            return build_for(self.choice, self.flag)

    def claim(self) -> None:
        """Hold VM ``vm_name`` until ``close()``: one command's runs per VM at a time (a
        second command waits, naming this one). The kernel build it boots is marked in use
        meanwhile (`clean` leaves it, even before the VM runs)."""
        if not self.claimed:
            claim(self.vm_name)
            self.claimed = True
            if self.build is not None:
                self.marks.enter_context(inuse.using(self.build.build_dir, f"VM {self.vm_name}"))

    def up(self) -> Vm:
        """A VM running this kernel and image: the one already there, or one booted now."""
        build, image = self.kernel_and_image()
        self.claim()
        if self.vm is not None and self.vm.alive():
            return self.vm
        running = self.running()
        if running is not None:
            if running is not self.vm:  # (running() takes a VM it checked as this target's)
                reporter().note(f"VM {self.vm_name} already runs this kernel and image "
                                f"(port {running.ssh_port})" + ("" if self.restart else
                                                                ": using it, and leaving it running"))
                self.vm, self.started_vm = running, False
            return running
        # a run's first command settles a restored guest (vm.up's VM is settled at once)
        self.vm = start_vm(build, image, self.vm_name, **{"defer_settle": not self.restart,
                                                          **self.vm_opts})
        self.started_vm = True
        return self.vm

    def running(self) -> Vm | None:
        """The VM running as ``vm_name`` with this kernel and image, answering; None: none runs
        (or, with ``restart``, one that did not fit was stopped). Else VmRefused. Without
        ``restart`` the VM is checked by opening its SSH connection and becomes this
        target's VM (not started by it: left running)."""
        build, image = self.kernel_and_image()
        self.claim()
        vm = find_vm(self.vm_name)
        if vm is None:
            return None
        differs = mismatch(vm, build, image)
        if self.restart:
            return vm if not differs and self._answers(vm) else self._stopped(vm, differs)
        if differs:
            raise VmRefused(f"VM {self.vm_name} {self._differs(vm, differs)}, and this command did "
                            "not start it",
                            f"stop it first: `invoke vm.down --name {self.vm_name}`, or use another "
                            "VM: --vm-name NAME")
        if self.vm is not None and self.vm.pid == vm.pid:
            vm = self.vm  # this target's own: its open connection is kept
        try:
            answering(vm)  # the SSH connection the command goes on to use is the check
        except health.GuestDown as down:
            raise VmRefused(down.cause, down.fix) from None
        if self.vm is None:
            reporter().note(f"VM {self.vm_name} already runs this kernel and image "
                            f"(port {vm.ssh_port}): using it, and leaving it running")
            self.vm, self.started_vm = vm, False
        return vm

    def _answers(self, vm: Vm) -> bool:
        if health.state(vm).ok:
            return True
        reporter().note(f"VM {self.vm_name} does not answer over SSH: restarting it")
        return False

    def _stopped(self, vm: Vm, differs: str) -> None:
        if differs:
            reporter().note(f"VM {self.vm_name} runs another kernel or image: restarting it")
        vm.stop()
        return None

    def _differs(self, vm: Vm, differs: str) -> str:
        build, image = self.kernel_and_image()
        theirs = f"{vm.info.build_id} with image {vm.info.image_key[:12]}"
        ours = f"{build.id} with image {image.key[:12]}"
        return (f"is running {theirs}, not {ours}" if differs != "kernel headers disk"
                else f"runs {theirs} without this build's kernel headers disk")

    def close(self, keep_vm: bool = False) -> None:
        """Stop the VM if this target booted it and ``keep_vm`` is not set; let go of it."""
        try:
            if self.vm is not None and self.started_vm and not keep_vm:
                with reporter().step(f"stop VM {self.vm_name}"):
                    self.vm.stop()
            elif self.vm is not None:
                reporter().note(f"VM {self.vm_name} left running (port {self.vm.ssh_port})")
        finally:
            self.marks.close()
            if self.claimed:
                self.claimed = False
                release(self.vm_name)


def ensure_vm(build: BuildRecord, image: ImageRecord, name: str = "default", **opts: Any) -> Vm:
    """Reuse VM ``name`` if it runs this kernel and image and answers; else (re)start it."""
    target = Target(None, vm_name=name, restart=True, vm_opts=opts, build=build, image=image)
    return target.up()
