"""The kernel catalog: `configs/kernels.yaml`, validated on load.

A validation error names the file, the key and the problem, e.g.
``configs/kernels.yaml: kernels.5.4.sources[0]: unknown source type 'ftp'``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from kernlab.core import paths
from kernlab.core.errors import KernlabError, NotFound

SOURCE_TYPES = ("debian", "tarball", "file", "git")
BASES = ("tinyconfig", "defconfig")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SourceSpec:
    """One way to obtain a kernel tree."""

    kind: str
    options: dict[str, Any]

    def describe(self, mirror: str) -> str:
        if self.kind == "debian":
            return f"Debian package {self.options['package']} ({self.options.get('suite', '?')})"
        if self.kind == "tarball":
            sha = self.options.get("sha256") or "NOT PINNED"
            return f"{self.url(mirror)} sha256={sha}"
        if self.kind == "file":
            return f"local tarball {self.options['path']}"
        return f"git tree {self.options['path']} at {self.options.get('ref', 'HEAD')}"

    def url(self, mirror: str) -> str:
        return str(self.options["url"]).replace("{mirror}", mirror.rstrip("/"))


@dataclass(frozen=True)
class KernelSpec:
    """A catalog entry: how to obtain, patch, configure and build one kernel."""

    version: str
    release: str
    description: str
    sources: tuple[SourceSpec, ...]
    patches: tuple[str, ...]
    base: str
    fragments: tuple[str, ...]
    compiler: str
    samples_bpf: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    arch: str = "x86_64"


@dataclass
class Catalog:
    path: Path
    mirror: str
    default: str
    kernels: dict[str, KernelSpec] = field(default_factory=dict)

    def kernel(self, version: str) -> KernelSpec:
        """The entry for ``version`` or an error listing the known versions."""
        if version in self.kernels:
            return self.kernels[version]
        known = ", ".join(self.kernels)
        raise NotFound(
            f"unknown kernel version '{version}' (known: {known})",
            f"pick one of those or add an entry to {self.path}",
        )

    def effective_mirror(self) -> str:
        return os.environ.get("KERNLAB_MIRROR") or self.mirror


class _Validator:
    """Collects the first problem with file and key in the message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> KernlabError:
        return KernlabError(f"{self.path}: {key}: {problem}", "fix the catalog entry")

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a mapping, got {type(value).__name__}")
        return value

    def string(self, value: Any, key: str) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value:
            raise self.fail(key, "expected a non-empty string")
        return value

    def strings(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, "expected a list of strings")
        return tuple(self.string(item, f"{key}[{i}]") for i, item in enumerate(value))


def _source(v: _Validator, raw: Any, key: str) -> SourceSpec:
    raw = v.mapping(raw, key)
    if len(raw) != 1:
        raise v.fail(key, f"a source has exactly one type out of {', '.join(SOURCE_TYPES)}")
    kind, options = next(iter(raw.items()))
    if kind not in SOURCE_TYPES:
        raise v.fail(key, f"unknown source type '{kind}' (known: {', '.join(SOURCE_TYPES)})")
    options = v.mapping(options, f"{key}.{kind}")
    required = {"debian": ["package"], "tarball": ["url"], "file": ["path"], "git": ["path"]}
    for name in required[kind]:
        if name not in options:
            raise v.fail(f"{key}.{kind}", f"missing '{name}'")
    sha = options.get("sha256")
    if sha is not None and not SHA256.match(str(sha)):
        raise v.fail(f"{key}.{kind}.sha256", "expected 64 lowercase hex digits or null")
    return SourceSpec(kind, dict(options))


def _kernel(v: _Validator, version: str, raw: Any) -> KernelSpec:
    key = f"kernels.{version}"
    raw = v.mapping(raw, key)
    for name in ("release", "sources", "config", "compiler"):
        if name not in raw:
            raise v.fail(key, f"missing '{name}'")
    sources = raw["sources"]
    if not isinstance(sources, list) or not sources:
        raise v.fail(f"{key}.sources", "expected a non-empty list")
    config = v.mapping(raw["config"], f"{key}.config")
    base = v.string(config.get("base"), f"{key}.config.base")
    if base not in BASES:
        raise v.fail(f"{key}.config.base", f"'{base}' is not one of {', '.join(BASES)}")
    fragments = v.strings(config.get("fragments"), f"{key}.config.fragments")
    for i, name in enumerate(fragments):
        if not (paths.configs_dir() / name).is_file():
            raise v.fail(f"{key}.config.fragments[{i}]", f"no fragment {paths.configs_dir() / name}")
    return KernelSpec(
        version=version,
        release=v.string(raw["release"], f"{key}.release"),
        description=str(raw.get("description", "")),
        sources=tuple(_source(v, s, f"{key}.sources[{i}]") for i, s in enumerate(sources)),
        patches=v.strings(raw.get("patches"), f"{key}.patches"),
        base=base,
        fragments=fragments,
        compiler=v.string(raw["compiler"], f"{key}.compiler"),
        samples_bpf=v.strings(raw.get("samples_bpf"), f"{key}.samples_bpf"),
        symbols=v.strings(raw.get("symbols"), f"{key}.symbols"),
        arch=v.string(raw.get("arch", "x86_64"), f"{key}.arch"),
    )


def local_tarballs() -> dict[str, tuple[Path, str]]:
    """``KERNLAB_LOCAL_KERNELS``: {file name: (path, sha256)} from that folder's SHA256SUMS."""
    folder = os.environ.get("KERNLAB_LOCAL_KERNELS")
    if not folder:
        return {}
    sums = Path(folder).expanduser().resolve() / "SHA256SUMS"
    if not sums.is_file():
        raise KernlabError(f"KERNLAB_LOCAL_KERNELS={folder} has no SHA256SUMS file",
                           "point it at a folder holding the tarballs and their SHA256SUMS")
    table = {}
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and SHA256.match(parts[0].lower()):
            name = parts[1].lstrip("*")
            table[name] = (sums.parent / name, parts[0].lower())
    return table


def with_local_source(spec: KernelSpec, local: dict[str, tuple[Path, str]]) -> KernelSpec:
    """``spec`` with the local tarball of its release (pinned by SHA256SUMS) tried first."""
    found = local.get(f"linux-{spec.release}.tar.xz")
    if not found or not found[0].is_file():
        return spec
    path, sha = found
    first = SourceSpec("file", {"path": str(path), "sha256": sha})
    return replace(spec, sources=(first, *spec.sources))


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate the catalog; errors name file, key and problem."""
    path = path or paths.configs_dir() / "kernels.yaml"
    v = _Validator(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise KernlabError(f"no kernel catalog at {path}", "set KERNLAB_CONFIGS or restore it") from None
    except yaml.YAMLError as error:
        raise v.fail("(file)", f"invalid YAML: {error}".replace("\n", " ")) from None
    raw = v.mapping(raw, "(top level)")
    kernels = v.mapping(raw.get("kernels"), "kernels")
    catalog = Catalog(
        path=path,
        mirror=v.string(raw.get("mirror", "https://cdn.kernel.org/pub/linux/kernel"), "mirror"),
        default=v.string(raw.get("default", ""), "default") if raw.get("default") else "",
    )
    local = local_tarballs()
    for version, entry in kernels.items():
        spec = _kernel(v, str(version), entry)
        catalog.kernels[str(version)] = with_local_source(spec, local)
    if catalog.default and catalog.default not in catalog.kernels:
        raise v.fail("default", f"'{catalog.default}' is not in kernels")
    return catalog
