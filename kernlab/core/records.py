"""The records that cross stage boundaries, typed and frozen.

Each wraps the JSON file its stage writes (``build.json``, ``image.json``, ``vm.json``,
``result.json``) without changing it: ``from_json`` keeps the whole mapping and
``to_json`` gives it back as read, so a record written before these classes existed
round-trips unchanged. Properties name what callers need (``build.bzimage``) instead of
nested keys (``build["outputs"]["bzImage"]["path"]``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from kernlab.core.util import read_json


@dataclass(frozen=True)
class _Record:
    """A stage's JSON record: the mapping as read, plus typed accessors in subclasses."""

    data: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The record of an already parsed JSON object (kept whole, copied)."""
        return cls(copy.deepcopy(data))

    @classmethod
    def load(cls, path: Path) -> Self:
        """The record in the JSON file ``path``."""
        return cls.from_json(read_json(path))

    def to_json(self) -> dict[str, Any]:
        """The JSON object, exactly as read (a copy: records stay frozen)."""
        return copy.deepcopy(self.data)


@dataclass(frozen=True)
class BuildRecord(_Record):
    """``<work>/build/<version>-<key12>/build.json``: one kernel build and its outputs."""

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def key(self) -> str:
        return str(self.data["key"])

    @property
    def build_dir(self) -> Path:
        return Path(self.data["build_dir"])

    @property
    def id(self) -> str:
        """The build's id: its directory's name (``<version>-<key12>``)."""
        return self.build_dir.name

    @property
    def kernelrelease(self) -> str:
        return str(self.data["kernelrelease"])

    def output(self, name: str) -> Path:
        """The path of output ``name`` (``bzImage``, ``vmlinux``, ``System.map``, ``config``, ``headers``)."""
        return Path(self.data["outputs"][name]["path"])

    def output_sha256(self, name: str) -> str:
        return str(self.data["outputs"][name]["sha256"])

    @property
    def bzimage(self) -> Path:
        return self.output("bzImage")

    @property
    def vmlinux(self) -> Path:
        return self.output("vmlinux")

    @property
    def system_map(self) -> Path:
        return self.output("System.map")

    @property
    def config(self) -> Path:
        return self.output("config")

    @property
    def headers(self) -> Path:
        return self.output("headers")


@dataclass(frozen=True)
class ImageRecord(_Record):
    """``<state>/images/<recipe>-<key12>/image.json``: one guest disk image."""

    @property
    def recipe(self) -> str:
        return str(self.data["recipe"])

    @property
    def key(self) -> str:
        return str(self.data["key"])

    @property
    def disk(self) -> Path:
        """The root filesystem image the VM boots from (an overlay is put on top)."""
        return Path(self.data["image"]["path"])

    @property
    def disk_sha256(self) -> str:
        return str(self.data["image"]["sha256"])

    @property
    def client_key(self) -> Path:
        return Path(self.data["client_key"])

    @property
    def host_key_pub(self) -> str:
        return str(self.data["host_key_pub"])

    @property
    def packages(self) -> dict[str, str]:
        """``{name: version}`` of the installed packages (listed as ``name=version``)."""
        return dict(p.split("=", 1) for p in self.data.get("packages", []) if "=" in p)


@dataclass(frozen=True)
class VmRecord(_Record):
    """``<state>/vms/<name>/vm.json``: one running guest and how to reach it."""

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def pid(self) -> int:
        return int(self.data["pid"])

    @property
    def ssh_port(self) -> int:
        return int(self.data["ssh_port"])

    @property
    def console_log(self) -> Path:
        return Path(self.data["console_log"])

    @property
    def accel(self) -> str:
        return str(self.data["accel"])


@dataclass(frozen=True)
class RunResult(_Record):
    """``<bundle>/result.json``: one experiment run's verdict and its evidence."""

    @property
    def experiment(self) -> str:
        return str(self.data["experiment"])

    @property
    def kernel(self) -> str:
        return str(self.data["kernel"])

    @property
    def status(self) -> str:
        """PASS, FAIL, ERROR or n/a."""
        return str(self.data["status"])

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", ""))

    @property
    def seconds(self) -> float:
        return float(self.data["seconds"])
