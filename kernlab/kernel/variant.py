"""Kernel variants: a catalog kernel with options set or unset and patches left out.

A variant is named in configs/kernels.yaml under ``variants:`` and asked for as
``VERSION+NAME`` (``5.4.286+no-notrace``). It is a kernel of its own everywhere a kernel
is named (``--kernel``, ``--version``, ``matrix --kernels``, the report): its own build
key, and a build id that says what it is (``5.4.286+no-notrace-<key12>``). What it
changes is one more config fragment, written from the catalog and merged after the
entry's own, so kconfig's verification checks every option it sets or unsets: an unset
option that another option selects is reported with what selects it, not kept silently.
The source, its tree and kernlab.lock's pins are the base kernel's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kernlab.core import paths
from kernlab.core.util import atomic_write_text

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")  # goes into build ids and paths
OPTION_RE = re.compile(r"^[A-Z0-9_]+$")  # without CONFIG_
VALUE_RE = re.compile(r'^(y|m|n|-?[0-9]+|0x[0-9a-fA-F]+|"[^"\n]*")$')
SEPARATOR = "+"


@dataclass(frozen=True)
class VariantSpec:
    """One ``variants:`` entry: what it changes and for which kernels (all when empty)."""

    name: str
    description: str = ""
    set: tuple[tuple[str, str], ...] = ()  # (OPTION, value) without CONFIG_
    unset: tuple[str, ...] = ()
    without_patches: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()

    def fragment_text(self) -> str:
        """The fragment merged after the entry's own: what the variant sets, then unsets."""
        lines = [f"# kernlab variant {self.name}: written from configs/kernels.yaml, do not edit"]
        lines += [f"CONFIG_{name}={value}" for name, value in self.set]
        lines += [f"# CONFIG_{name} is not set" for name in self.unset]
        return "\n".join(lines) + "\n"

    def changes(self) -> list[str]:
        """``+OPT=y``, ``-OPT``, ``-patch NAME``: for list-kernels and reports."""
        return ([f"+{name}={value}" for name, value in self.set] + [f"-{name}" for name in self.unset]
                + [f"-patch {name}" for name in self.without_patches])


def split(version: str) -> tuple[str, str]:
    """``("5.4.286", "no-notrace")`` for ``5.4.286+no-notrace``; ``(version, "")`` without one."""
    base, _, name = version.partition(SEPARATOR)
    return base, name


def fragment_path(variant: VariantSpec) -> Path:
    """The variant's fragment, (re)written from the catalog into the work area. Its content
    is in the build key (fragments are hashed), so the file's place is not."""
    path = paths.work_dir() / "variants" / f"variant-{variant.name}.config"
    text = variant.fragment_text()
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path
