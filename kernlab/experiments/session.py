"""The run session: the kernel, image and VM of one command's runs (a ``guest.ensure.Target``),
the guest's facts and whether to keep the VM it booted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kernlab.core.records import BuildRecord, ImageRecord
from kernlab.guest import remote
from kernlab.guest.ensure import Target
from kernlab.guest.vm import Vm
from kernlab.kernel.selection import KernelChoice, choose_kernel


@dataclass
class Session:
    """The kernel, image, VM and SSH connection shared by the runs of one command.

    ``kernel`` is what the user named: a catalog version or a build id. The build is the
    one `build-kernel` made (see kernlab.builds); only an unbuilt version is built here.
    Getting them is ``kernlab.guest.ensure.Target``'s work; a session adds the guest's
    facts and whether to keep the VM it booted.
    """

    kernel: str
    keep_vm: bool = False
    vm_name: str = "default"
    recipe: str = "bookworm"
    guest: dict = field(default_factory=dict)
    choice: KernelChoice | None = None
    flag: str = "--kernel"  # the command's flag that picks a kernel (for notes)
    target: Target | None = None  # given: reuse what another step (reproduce) already found
    gdb_port: int | None = None  # `run-experiment --gdb`: the VM's gdbstub port (kernlab.guest.gdb)

    def __post_init__(self) -> None:
        if self.choice is None:
            self.choice = self.target.choice if self.target and self.target.choice else \
                choose_kernel(self.kernel)
        if self.target is None:
            self.target = Target(self.choice, self.recipe, self.vm_name, self.flag,
                                 vm_opts={"gdb_port": self.gdb_port} if self.gdb_port else {})

    @property
    def ensure(self) -> Target:
        assert self.target is not None
        return self.target

    @property
    def chosen(self) -> KernelChoice:
        """The kernel ``kernel`` names (resolved when the session is made)."""
        assert self.choice is not None
        return self.choice

    @property
    def build(self) -> BuildRecord | None:
        return self.ensure.build

    @property
    def image(self) -> ImageRecord | None:
        return self.ensure.image

    @property
    def vm(self) -> Vm | None:
        return self.ensure.vm

    @property
    def started_vm(self) -> bool:
        return self.ensure.started_vm

    @property
    def version(self) -> str:
        """The catalog version of the kernel (a bundle's ``<kernel>`` directory)."""
        return self.chosen.version

    @property
    def release(self) -> str:
        """The kernel's Linux release: the build's, or the catalog's before it is built."""
        return (self.build.release if self.build else "") or self.chosen.release

    def kernel_and_image(self) -> tuple[BuildRecord, ImageRecord]:
        return self.ensure.kernel_and_image()

    def connection(self) -> Any:
        """An open connection to a VM running this session's kernel and image."""
        return remote.connect(self.ensure.up())

    def check_vm(self) -> Vm | None:
        """The VM running as ``vm_name`` (None: none runs); VmRefused when it runs another kernel
        or image, or does not answer (kernlab.health); it is left as it is."""
        return self.ensure.running()

    def close(self) -> None:
        """Stop the VM if this session booted it and --keep-vm was not given."""
        self.ensure.close(self.keep_vm)
