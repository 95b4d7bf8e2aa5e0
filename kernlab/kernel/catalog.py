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

from kernlab.core import paths
from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.spec import SpecFile, type_name
from kernlab.kernel import variant as variants
from kernlab.kernel.variant import VariantSpec

SOURCE_TYPES = ("debian", "tarball", "file", "git")
BASES = ("tinyconfig", "defconfig")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
TOP_KEYS = ("mirror", "default", "kernels", "variants")
VARIANT_KEYS = ("description", "set", "unset", "without_patches", "kernels")
KERNEL_KEYS = ("release", "description", "sources", "patches", "config", "compiler", "samples_bpf",
               "symbols", "arch")
CONFIG_KEYS = ("base", "fragments")
SOURCE_KEYS = {"debian": ("package", "suite"), "tarball": ("url", "sha256"), "file": ("path", "sha256"),
               "git": ("path", "ref")}


def normalise_sha256(value: object, what: str) -> str:
    """``value`` as 64 lower-case hex digits; upper case is accepted, anything else is malformed."""
    text = str(value).strip().lower()
    if SHA256.match(text):
        return text
    shown = str(value) if len(str(value)) <= 80 else f"{str(value)[:77]}..."
    problem = (f"{len(text)} characters" if re.fullmatch(r"[0-9a-f]*", text)
               else "not hexadecimal")
    raise KernlabError(f"{what} {shown!r} is malformed: a sha256 is 64 hex digits ({problem})",
                       "pass the 64-hex-digit sum that `sha256sum FILE` prints")


@dataclass(frozen=True)
class SourceSpec:
    """One way to obtain a kernel tree."""

    kind: str
    options: dict[str, Any]

    def describe(self, mirror: str) -> str:
        """One line naming where the tree comes from and its pinned checksum, if any."""
        if self.kind in ("tarball", "file"):
            return f"{self.where(mirror)} sha256={self.options.get('sha256') or 'NOT PINNED'}"
        return self.where(mirror)

    def where(self, mirror: str) -> str:
        """Where the tree comes from, without checksums."""
        if self.kind == "debian":
            return f"Debian package {self.options['package']} ({self.options.get('suite', '?')})"
        if self.kind == "tarball":
            return self.url(mirror)
        if self.kind == "file":
            return f"local tarball {self.options['path']}"
        return f"git tree {self.options['path']} at {self.options.get('ref', 'HEAD')}"

    def url(self, mirror: str) -> str:
        return str(self.options["url"]).replace("{mirror}", mirror.rstrip("/"))

    def pin(self, locked: dict[str, Any] | None = None) -> str:
        """What pins this source ('' when nothing does); ``locked`` is its kernlab.lock entry."""
        if self.kind == "file" and self.options.get("sha256"):
            return f"sha256={self.options['sha256'][:12]} (the folder's SHA256SUMS or --sha256)"
        if self.kind == "debian":
            deb = (locked or {}).get("debian") or {}
            if deb.get("package") == self.options["package"]:
                return f"kernlab.lock {deb['version']} .deb sha256={deb['deb_sha256'][:12]}"
            return ""
        if self.kind == "git":
            ref = str(self.options.get("ref", "HEAD"))
            return f"commit {ref[:12]}" if COMMIT.match(ref) else ""
        sha = self.options.get("sha256")
        return f"sha256={sha[:12]}" if sha else ""

    def unpinned(self) -> str:
        """What kernlab does with this source while nothing pins it."""
        if self.kind == "debian":
            return "NOT PINNED: apt's current version is used and recorded; `invoke lock` pins it"
        if self.kind == "git":
            return "NOT PINNED: the ref's commit at build time is recorded"
        return "NOT PINNED: refused unless --sha256 SUM or --allow-unverified"


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
    variant: VariantSpec | None = None  # set on VERSION+NAME (kernlab.kernel.variant)

    @property
    def base_version(self) -> str:
        """The catalog entry a variant is made from (its source, tree and lock pins); the
        version itself otherwise."""
        return variants.split(self.version)[0]


@dataclass
class Catalog:
    path: Path
    mirror: str
    default: str
    kernels: dict[str, KernelSpec] = field(default_factory=dict)
    variants: dict[str, VariantSpec] = field(default_factory=dict)

    def kernel(self, version: str) -> KernelSpec:
        """The entry for ``version`` (``VERSION+VARIANT``: that entry as the variant changes
        it) or an error listing the known versions or variants."""
        base, name = variants.split(version)
        if base not in self.kernels:
            known = ", ".join(self.kernels)
            raise NotFound(
                f"unknown kernel version '{base}' (known: {known})",
                f"pick one of those or add an entry to {self.path}",
            )
        if not name:
            return self.kernels[base]
        return self._variant_of(self.kernels[base], name)

    def _variant_of(self, spec: KernelSpec, name: str) -> KernelSpec:
        chosen = self.variants.get(name)
        if chosen is None:
            known = ", ".join(self.variants) or "none"
            raise NotFound(f"unknown variant '{name}' of kernel {spec.version} (variants: {known})",
                           f"pick one of those, or add it under variants: in {self.path}")
        if chosen.kernels and spec.version not in chosen.kernels:
            raise NotFound(f"variant '{name}' is not made for kernel {spec.version} (only "
                           f"{', '.join(chosen.kernels)})",
                           f"use {spec.version} itself, or add it to variants.{name}.kernels in {self.path}")
        return replace(spec, version=f"{spec.version}{variants.SEPARATOR}{name}",
                       description=chosen.description or spec.description, variant=chosen)

    def effective_mirror(self) -> str:
        return os.environ.get("KERNLAB_MIRROR") or self.mirror


class _Validator(SpecFile):
    """The catalog as a SpecFile: its errors name file and key and end in "fix the catalog entry"."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "fix the catalog entry")

    def fail(self, key: str, problem: str, fix: str = "") -> KernlabError:  # type: ignore[override]
        """The error (raised by the caller: ``raise v.fail(...)``)."""
        return KernlabError(f"{self.path}: {key or '(top level)'}: {problem}", fix or self.fix)

    def known_keys(self, value: dict[str, Any], key: str, known: tuple[str, ...]) -> None:
        self.known(value, known, key)

    def mapping(self, value: Any, key: str, allowed: Any = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {type_name(type(value))}")
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
    v.known_keys(options, f"{key}.{kind}", SOURCE_KEYS[kind])
    options = dict(options)
    if options.get("sha256") is not None:
        try:
            options["sha256"] = normalise_sha256(options["sha256"], "sha256")
        except KernlabError as error:
            raise v.fail(f"{key}.{kind}.sha256", f"{error.cause}, or null") from None
    return SourceSpec(kind, options)


def _kernel(v: _Validator, version: str, raw: Any) -> KernelSpec:
    key = f"kernels.{version}"
    raw = v.mapping(raw, key)
    v.known_keys(raw, key, KERNEL_KEYS)
    for name in ("release", "sources", "config", "compiler"):
        if name not in raw:
            raise v.fail(key, f"missing '{name}'")
    sources = raw["sources"]
    if not isinstance(sources, list) or not sources:
        raise v.fail(f"{key}.sources", "expected a non-empty list")
    config = v.mapping(raw["config"], f"{key}.config")
    v.known_keys(config, f"{key}.config", CONFIG_KEYS)
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


def _variant(v: _Validator, name: str, raw: Any, catalog: Catalog) -> VariantSpec:
    """One ``variants:`` entry, each option and kernel checked (names go into build ids)."""
    key = f"variants.{name}"
    if not variants.NAME_RE.match(name):
        raise v.fail(key, f"'{name}' is not a variant name (lowercase letters, digits and -, "
                          "at most 32)")
    raw = v.mapping(raw, key)
    v.known_keys(raw, key, VARIANT_KEYS)
    options = {str(k): v.string(val if not isinstance(val, bool) else ("y" if val else "n"),
                                f"{key}.set.{k}")
               for k, val in v.mapping(raw.get("set") or {}, f"{key}.set").items()}
    unset = v.strings(raw.get("unset"), f"{key}.unset")
    for option in [*options, *unset]:
        if not variants.OPTION_RE.match(option.removeprefix("CONFIG_")):
            raise v.fail(key, f"'{option}' is not a config option name (like KPROBE_EVENTS_ON_NOTRACE)")
    for option, value in options.items():
        if not variants.VALUE_RE.match(value):
            raise v.fail(f"{key}.set.{option}", f"'{value}' is not a config value (y, m, n, a number "
                                                "or a quoted string)")
    kernels = v.strings(raw.get("kernels"), f"{key}.kernels")
    for i, version in enumerate(kernels):
        if version not in catalog.kernels:
            raise v.fail(f"{key}.kernels[{i}]", f"'{version}' is not in kernels")
    if not (options or unset or raw.get("without_patches")):
        raise v.fail(key, "changes nothing: give set, unset or without_patches")
    return VariantSpec(
        name=name, description=str(raw.get("description", "")),
        set=tuple((k.removeprefix("CONFIG_"), val) for k, val in options.items()),
        unset=tuple(o.removeprefix("CONFIG_") for o in unset),
        without_patches=v.strings(raw.get("without_patches"), f"{key}.without_patches"),
        kernels=kernels)


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
    if not path.is_file():
        raise KernlabError(f"no kernel catalog at {path}", "set KERNLAB_CONFIGS or restore it")
    raw = v.mapping(v.load(), "(top level)")
    v.known_keys(raw, "", TOP_KEYS)
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
    for name, entry in v.mapping(raw.get("variants") or {}, "variants").items():
        catalog.variants[str(name)] = _variant(v, str(name), entry, catalog)
    if catalog.default and catalog.default not in catalog.kernels:
        raise v.fail("default", f"'{catalog.default}' is not in kernels")
    return catalog
