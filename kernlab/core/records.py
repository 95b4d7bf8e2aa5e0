"""The records that cross stage boundaries, typed and frozen.

Each wraps the JSON file its stage writes (``build.json``, ``image.json``, ``vm.json``,
a bundle's ``manifest.json`` and ``result.json``) without changing it: ``from_json``
keeps the whole mapping and ``to_json`` gives it back as read, so a record written before
these classes existed round-trips unchanged. Properties name what callers need (``build.bzimage``) instead of
nested keys (``build["outputs"]["bzImage"]["path"]``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from kernlab.core.errors import KernlabError
from kernlab.core.util import read_json


def build_id(version: str, key: str) -> str:
    """A build's id, as ``--kernel`` takes it and its directory is named: ``<version>-<key12>``."""
    return f"{version}-{key[:12]}"


@dataclass(frozen=True, eq=False)
class _Record:
    """A stage's JSON record: the mapping as read (``data``), read through the typed
    properties of its subclass; not a mapping itself, so no caller reads keys by name."""

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

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.data == self.data  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

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
        """The build's id: its directory's name (``<version>-<key12>``, see ``build_id``)."""
        named = self.data.get("build_dir")
        return Path(named).name if named else build_id(self.version, self.key)

    @property
    def tree(self) -> Path | None:
        """The source tree it was built from (None when unrecorded or gone)."""
        tree = self.data.get("tree")
        return Path(tree) if tree and Path(tree).is_dir() else None

    @property
    def tree_named(self) -> str:
        """The source tree's path as recorded ('' when unrecorded)."""
        return str(self.data.get("tree") or "")

    @property
    def obj(self) -> Path:
        """The object directory (``<build_dir>/obj``)."""
        return self.build_dir / "obj"

    @property
    def patches(self) -> list[dict[str, Any]]:
        """The applied patches in order: ``{name, series, sha256}``."""
        return list(self.data.get("patches") or [])

    @property
    def fragments(self) -> list[dict[str, Any]]:
        """The config fragments: ``{path, sha256}``."""
        return list(self.data.get("fragments") or [])

    @property
    def symbols(self) -> dict[str, str]:
        """The kernel's name of each catalog symbol (gcc clones resolved)."""
        return dict(self.data.get("symbols") or {})

    @property
    def config_base(self) -> str:
        return str(self.data.get("config_base") or "")

    @property
    def config_sha256(self) -> str:
        return str(self.data.get("config_sha256") or "")

    @property
    def not_applicable(self) -> list[str]:
        """Config options the kernel's Kconfig lacks (recorded by the config check)."""
        return list((self.data.get("config_check") or {}).get("not_applicable", []))

    @property
    def compiler(self) -> str:
        return str(self.data.get("compiler") or "")

    @property
    def binutils(self) -> str:
        return str(self.data.get("binutils") or "")

    @property
    def duration_s(self) -> float:
        return float(self.data.get("duration_s") or 0.0)

    @property
    def verified_options(self) -> int:
        """How many config options the config check found as asked."""
        return int((self.data.get("config_check") or {}).get("verified", 0))

    @property
    def built_at(self) -> str:
        return str(self.data.get("built_at") or "?")

    @property
    def outputs(self) -> dict[str, Any]:
        """Every output by name: ``{path, sha256, size}`` (samples_bpf: ``{dir: {...}}``)."""
        return dict(self.data.get("outputs") or {})

    @property
    def kernelrelease(self) -> str:
        return str(self.data["kernelrelease"])

    @property
    def release(self) -> str:
        """The catalog release the build was made for ('' in records that lack it)."""
        return str(self.data.get("release") or "")

    @property
    def release_or_version(self) -> str:
        """The Linux release, or the version in records that lack it."""
        return self.release or self.version

    def output(self, name: str) -> Path:
        """The path of output ``name`` (``bzImage``, ``vmlinux``, ``System.map``, ``config``, ``headers``)."""
        return Path(self.data["outputs"][name]["path"])

    def output_sha256(self, name: str) -> str:
        return str(self.data["outputs"][name]["sha256"])

    def existing_output(self, name: str) -> Path | None:
        """The path of output ``name`` (a directory output's ``dir``) if recorded and present."""
        entry = self.outputs.get(name)
        if isinstance(entry, dict):
            entry = entry.get("path") or (entry.get("dir") or {}).get("path")
        return Path(entry) if entry and Path(entry).exists() else None

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
    def suite(self) -> str:
        """The Debian suite it was bootstrapped from."""
        return str(self.data["suite"])

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
    def kernel_key_or_none(self) -> str | None:
        """The booted build's key, None when the record names none."""
        key = (self.data.get("kernel") or {}).get("key")
        return str(key) if key else None

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

    @property
    def host(self) -> str:
        return str(self.data.get("host") or "127.0.0.1")

    @property
    def user(self) -> str:
        return str(self.data.get("user") or "root")

    @property
    def known_hosts(self) -> Path:
        return Path(self.data["known_hosts"])

    @property
    def qmp_socket(self) -> Path:
        return Path(self.data["qmp_socket"])

    @property
    def qemu_log(self) -> Path:
        return Path(self.data.get("qemu_log") or "")

    @property
    def overlay(self) -> Path:
        return Path(self.data["overlay"])

    @property
    def boot(self) -> str:
        """``cold`` or ``snapshot``."""
        return str(self.data.get("boot") or "cold")

    @property
    def snapshot(self) -> dict[str, str] | None:
        """The snapshot a restored guest came from (``key``, ``dir``); None: booted cold."""
        value = self.data.get("snapshot")
        return dict(value) if isinstance(value, dict) else None

    @property
    def kheaders(self) -> dict[str, Any] | None:
        """The kernel headers disk attached (``key``, ``path``, ...; ``key`` None: none could be made)."""
        value = self.data.get("kheaders")
        return dict(value) if isinstance(value, dict) else None

    @property
    def settle(self) -> str:
        """``pending`` until a restored guest's first command set its clock and seed, then ``done``."""
        return str(self.data.get("settle") or "")

    @property
    def argv(self) -> list[str]:
        return list(self.data.get("argv") or [])

    @property
    def client_key(self) -> Path:
        return Path(self.data["client_key"])

    @property
    def timeout_scale(self) -> float:
        """How much slower than KVM the accelerator is (TCG: several times)."""
        return float(self.data.get("timeout_scale") or 1.0)

    @property
    def ready_seconds(self) -> float:
        return float(self.data.get("ready_seconds") or 0.0)

    def with_fields(self, **fields: Any) -> Self:
        """A copy with ``fields`` set (the VM's record grows as it boots)."""
        return type(self).from_json({**self.data, **fields})

    @property
    def build_id(self) -> str:
        """The booted build's id ('VERSION' when the record names no kernel key)."""
        kernel = self.data.get("kernel") or {}
        return build_id(str(kernel["version"]), str(kernel["key"])) if kernel.get("key") else "VERSION"


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
        return float(self.data.get("seconds") or 0)

    @property
    def variables(self) -> dict[str, str]:
        """The experiment's variables as this kernel resolved them."""
        return dict(self.data.get("variables") or {})

    @property
    def splats(self) -> list[dict[str, Any]] | None:
        """Kernel splats the run's check found (``class``, ``line``, ``expected``); None when
        the run was not checked (a bundle from before the check, or n/a)."""
        found = self.data.get("splats")
        return [s for s in found if isinstance(s, dict)] if isinstance(found, list) else None

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

    @property
    def artifacts(self) -> dict[str, str]:
        """The registry digests (``kernel``, ``kheaders``, ``image``) of what the run used,
        where known (pulled or pushed on its machine): what `reproduce` pulls."""
        return dict(self.data.get("artifacts") or {})

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
