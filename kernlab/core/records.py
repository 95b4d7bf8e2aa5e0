"""The records that cross stage boundaries, typed and frozen.

Each wraps the JSON file its stage writes (``build.json``, ``image.json``, ``vm.json``,
a bundle's ``manifest.json`` and ``result.json``) without changing it: ``from_json``
keeps the whole mapping and ``to_json`` gives it back as read, so a record written before
these classes existed round-trips unchanged. Properties name what callers need (``build.bzimage``) instead of
nested keys (``build["outputs"]["bzImage"]["path"]``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from kernlab.core.errors import KernlabError
from kernlab.core.util import read_json


@dataclass(frozen=True, eq=False)  # equal as mappings: a record equals its JSON object
class _Record(Mapping[str, Any]):
    """A stage's JSON record: the mapping as read, plus typed accessors in subclasses.

    It is also a read-only mapping of the top-level keys (``record["version"]``,
    ``record.get("source")``), so code that reads a plain field keeps working; nested
    fields are read through the properties.
    """

    data: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The record of an already parsed JSON object (kept whole, copied); a record
        of the same kind is returned as it is (records are frozen)."""
        if isinstance(data, cls):
            return data
        if isinstance(data, _Record):
            data = data.data
        return cls(copy.deepcopy(dict(data)))

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @classmethod
    def load(cls, path: Path) -> Self:
        """The record in the JSON file ``path``."""
        return cls.from_json(read_json(path))

    def to_json(self) -> dict[str, Any]:
        """The JSON object, exactly as read (a copy: records stay frozen)."""
        return copy.deepcopy(self.data)


@dataclass(frozen=True, eq=False)
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

    @property
    def release(self) -> str:
        """The catalog release the build was made for ('' in records that lack it)."""
        return str(self.data.get("release") or "")

    def output(self, name: str) -> Path:
        """The path of output ``name`` (``bzImage``, ``vmlinux``, ``System.map``, ``config``, ``headers``)."""
        return Path(self.data["outputs"][name]["path"])

    def output_sha256(self, name: str) -> str:
        return str(self.data["outputs"][name]["sha256"])

    def has_output(self, name: str) -> bool:
        """Whether the record names output ``name`` with its sha256."""
        outputs = self.data.get("outputs")
        made = outputs.get(name) if isinstance(outputs, dict) else None
        return isinstance(made, dict) and bool(made.get("sha256"))

    @property
    def source(self) -> dict[str, Any]:
        """Where the tree came from: kind, origin, sha256, tree_sha256 ({} when unrecorded)."""
        value = self.data.get("source")
        return dict(value) if isinstance(value, dict) else {}

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

    @property
    def samples_bpf(self) -> Path | None:
        """The built samples/bpf directory (None: the build did not make them)."""
        made = self.data["outputs"].get("samples_bpf")
        return Path(made["dir"]["path"]) if made else None


@dataclass(frozen=True, eq=False)
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


@dataclass(frozen=True, eq=False)
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

    @property
    def kernel_key(self) -> str:
        """The input key of the build the guest booted."""
        return str(self.data["kernel"]["key"])

    @property
    def kernelrelease(self) -> str:
        """The Linux release of the kernel the guest booted."""
        return str(self.data["kernel"]["kernelrelease"])

    @property
    def image_key(self) -> str:
        """The input key of the image the guest's overlay sits on."""
        return str(self.data["image"]["key"])

    @property
    def ssh_config(self) -> Path:
        return Path(self.data["ssh_config"])


@dataclass(frozen=True, eq=False)
class RunResult(_Record):
    """``<bundle>/result.json``: one experiment run's verdict and its evidence."""

    @property
    def experiment(self) -> str:
        return str(self.data["experiment"])

    @property
    def kernel(self) -> str:
        return str(self.data.get("kernel") or "")

    @property
    def status(self) -> str:
        """PASS, FAIL, ERROR or n/a ('' in a result that lacks it)."""
        return str(self.data.get("status") or "")

    @property
    def passed(self) -> bool:
        return bool(self.data["passed"])

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", ""))

    @property
    def seconds(self) -> float:
        return float(self.data["seconds"])

    @property
    def expectations(self) -> dict[str, bool | None]:
        """``{name: passed}`` of every expectation checked."""
        return {str(e["name"]): e.get("passed") for e in self.data.get("expectations", [])}

    @classmethod
    def of(cls, bundle: Path) -> Self:
        """``<bundle>/result.json`` (one-line errors for a missing or damaged file)."""
        return cls.from_json(bundle_file(bundle, "result.json"))


@dataclass(frozen=True, eq=False)
class Manifest(_Record):
    """``<bundle>/manifest.json``: the experiment, build, image and VM one run used."""

    @property
    def experiment(self) -> dict[str, Any]:
        """Name, title, content hash, the folder it ran from (``source``) and the bundle's
        own copy of it (``copy``, relative; bundles before copies lack it)."""
        value = self.data.get("experiment")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def experiment_name(self) -> str:
        return str(self.experiment.get("name") or "")

    @property
    def experiment_hash(self) -> str:
        return str(self.experiment.get("hash") or "")

    @property
    def build(self) -> BuildRecord | None:
        value = self.data.get("build")
        return BuildRecord.from_json(value) if isinstance(value, dict) else None

    @property
    def image(self) -> ImageRecord | None:
        value = self.data.get("image")
        return ImageRecord.from_json(value) if isinstance(value, dict) else None

    @property
    def image_named(self) -> bool:
        """Whether the manifest has an ``image`` entry at all (null: the run had none)."""
        return self.data.get("image") is not None

    @classmethod
    def of(cls, bundle: Path) -> Self:
        """``<bundle>/manifest.json`` (one-line errors for a missing or damaged file)."""
        return cls.from_json(bundle_file(bundle, "manifest.json"))


def bundle_file(bundle: Path, name: str) -> dict[str, Any]:
    """The JSON object in ``bundle/name``; KernlabError when missing, damaged or not an object."""
    if not (bundle / name).is_file():
        raise KernlabError(f"{bundle} is not a complete results bundle (no {name})",
                           "pass a directory under results/<experiment>/<kernel>/")
    try:
        data = read_json(bundle / name)
    except (ValueError, OSError) as error:
        raise KernlabError(f"{bundle / name} is damaged ({' '.join(str(error).split())[:100]})",
                           "pass another bundle; this one cannot be reproduced") from None
    if not isinstance(data, dict):
        raise KernlabError(f"{bundle / name} is not a bundle's {name} (not a JSON object)",
                           "pass another bundle; this one cannot be reproduced")
    return data
