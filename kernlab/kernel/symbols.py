"""The catalog's ``symbols:``: names that must be in System.map after a build, and why one is not.

A build whose System.map lacks one fails (a ``--no-patch`` variant only warns: it left out a
patch on purpose), with the reason read from the build itself:

- gcc ignored a ``noinline`` (``ignoring attribute 'noinline' because it conflicts with
  attribute 'always_inline'`` in make's log): the series' patch cannot work as written;
- the tree defines it in a compiled file as ``static``/``inline``/``__always_inline``: gcc
  inlined it (no patch of the series makes it ``noinline``);
- its file is not compiled in this build;
- no compiled file defines it: renamed or removed in this release (the probe atlas names
  the successor: ``invoke probes NAME --kernels OTHER,V``).

A ``noinline`` gcc ignored fails the build even for a name not in ``symbols:``: a lab
patch meant it, and the function stays inlined.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

IGNORED = re.compile(r"^(?P<file>[^\s:]+\.[ch]):(?P<line>\d+):\d+: warning: ignoring attribute 'noinline' "
                     r"because it conflicts with attribute 'always_inline'")
WORDS = ("static", "inline", "__always_inline")


@dataclass(frozen=True)
class Ignored:
    """A ``noinline`` gcc ignored: where, and the function it was meant for."""

    file: str  # relative to the tree
    line: int
    function: str

    def describe(self) -> str:
        return (f"gcc ignored `noinline` on {self.function} ({self.file}:{self.line}): it conflicts with "
                "`__always_inline`, so the function is still inlined")


def ignored_noinline(make_log: Path, tree: Path) -> list[Ignored]:
    """Every ``noinline`` gcc reported ignoring in ``make_log``, once each."""
    found: dict[tuple[str, int], Ignored] = {}
    try:
        text = make_log.read_text(errors="replace")
    except OSError:
        return []
    for raw in text.splitlines():
        match = IGNORED.match(raw.split("] ", 1)[-1].strip() if raw.startswith("[") else raw.strip())
        if not match:
            continue
        file = _relative(match.group("file"), tree)
        line = int(match.group("line"))
        found.setdefault((file, line), Ignored(file, line, _function_at(tree / file, line)))
    return list(found.values())


def _relative(name: str, tree: Path) -> str:
    """A path from the compiler (absolute, or relative to the tree or the kernel's ``/kernlab/src``)."""
    for prefix in (f"{tree}/", "/kernlab/src/", "../"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _function_at(path: Path, line: int) -> str:
    """The function whose declaration is at (or just after) ``line`` of ``path``."""
    try:
        lines = path.read_text(errors="replace").split("\n")
    except OSError:
        return "?"
    for text in lines[line - 1: line + 4]:
        if match := re.search(r"\b(\w+)\s*\(", text):
            return match.group(1)
    return "?"


def why_missing(name: str, tree: Path, obj: Path) -> str:
    """Why ``name`` is not in System.map, from the tree and the objects this build made."""
    head = re.compile(r"^(?P<spec>(?:[A-Za-z_][\w \t\*]*?[\s\*])?)" + re.escape(name)
                      + r"\s*\([^;{}]*\)\s*\{", re.MULTILINE)
    defined = []
    for source in _defining_files(tree, name):
        text = source.read_text(errors="replace")
        if not (match := head.search(text)):
            continue
        number = text.count("\n", 0, match.start()) + 1
        above = text.split("\n")[max(0, number - 2)] if number > 1 else ""
        spec = f"{above if not above.rstrip().endswith((';', '}', '{', '*/')) else ''} {match.group('spec')}"
        words = " ".join(w for w in WORDS if re.search(r"(?<!\w)" + w + r"(?!\w)", spec))
        relative = source.relative_to(tree)
        if (obj / relative).with_suffix(".o").is_file():
            return (f"{relative}:{number} defines it{' ' + words if words else ''} and gcc inlined it "
                    "(no patch of the series makes it noinline)")
        defined.append(f"{relative}:{number}")
    if defined:
        return f"{', '.join(defined)} defines it, but this build does not compile that file"
    return ("no file this build compiles defines it: renamed or removed in this release "
            f"(`invoke probes {name} --kernels OTHER,V` names its successor)")


def _defining_files(tree: Path, name: str) -> list[Path]:
    """The tree's .c files naming ``name`` under the core directories first, then the rest."""
    done = subprocess.run(["grep", "-rlw", "--include=*.c", name, "lib", "fs", "mm", "kernel", "arch/x86",
                           "block", "net", "ipc", "init", "security", "drivers"],
                          cwd=tree, capture_output=True, text=True, check=False)
    return [tree / line for line in done.stdout.splitlines() if line]
