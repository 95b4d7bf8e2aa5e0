"""Evidence from the build's source tree: where a function is defined and how.

Reads only text: the definition line (``static``, ``inline``, ``__always_inline``,
``notrace``, ``__kprobes``, ``__init``), a ``#define`` of the name (a macro),
``NOKPROBE_SYMBOL(name)``, ``SYSCALL_DEFINEn(name...)``, a Makefile that drops the ftrace
flags for the file's directory, the ``obj-$(CONFIG_X)`` line that gates a file not compiled
into this build, and the functions of the same file that call it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SPEC_WORDS = ("static", "inline", "__always_inline", "noinline", "notrace", "__kprobes", "__init",
              "__noinstr", "noinstr", "__used", "asmlinkage", "__visible")
SYSCALL_PREFIXES = ("__x64_sys_", "__ia32_sys_", "__se_sys_", "__do_sys_", "SyS_", "sys_")


@dataclass
class Definition:
    """Where and how the tree defines a function (or why it cannot be a symbol)."""

    file: str  # relative to the tree
    line: int
    text: str  # the definition's first line(s), as written
    words: set[str] = field(default_factory=set)  # the SPEC_WORDS it carries
    macro: bool = False
    syscall: bool = False
    compiled: bool = True  # the file has an object in this build
    nokprobe: bool = False  # NOKPROBE_SYMBOL(name) in the file
    notrace_dir: str = ""  # the Makefile that drops ftrace flags for the file ('' if none)
    gate: str = ""  # CONFIG_X an uncompiled file depends on
    callers: list[str] = field(default_factory=list)  # functions of the file calling it

    @property
    def header(self) -> bool:
        return self.file.endswith(".h")


def compiled_sources(tree: Path, obj: Path) -> list[Path]:
    """The .c files of ``tree`` that have an object file in ``obj``."""
    found = []
    for o_file in obj.rglob("*.o"):
        source = tree / o_file.relative_to(obj).with_suffix(".c")
        if source.is_file():
            found.append(source)
    return sorted(found)


def _definition_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"^(?P<spec>[A-Za-z_][\w \t\*]*?[\s\*])" + re.escape(name)
                      + r"\s*\((?P<args>[^;{}]*)\)\s*(?:__\w+(?:\([^)]*\))?\s*)*\{", re.MULTILINE)


def _syscall_pattern(name: str) -> re.Pattern[str] | None:
    for prefix in SYSCALL_PREFIXES:
        if name.startswith(prefix):
            return re.compile(r"^(COMPAT_)?SYSCALL_DEFINE\d\(" + re.escape(name[len(prefix):])
                              + r"\b", re.MULTILINE)
    return None


def _macro_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"^#\s*define\s+" + re.escape(name) + r"\(", re.MULTILINE)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _grep_files(tree: Path, name: str, where: list[str]) -> list[Path]:
    """Files under ``where`` (in ``tree``) naming ``name`` as a word (grep -rlw)."""
    dirs = [d for d in where if (tree / d).is_dir()]
    if not dirs:
        return []
    done = subprocess.run(["grep", "-rlw", "--include=*.c", "--include=*.h", name, *dirs],
                          cwd=tree, capture_output=True, text=True, check=False)
    return [tree / line for line in done.stdout.splitlines() if line]


def find_definition(tree: Path, obj: Path, name: str,
                    compiled: list[Path] | None = None) -> Definition | None:
    """The definition of ``name``: compiled .c files first, then headers, then the whole tree."""
    compiled = compiled_sources(tree, obj) if compiled is None else compiled
    compiled_set = set(compiled)
    word = _syscall_pattern(name) or re.compile(r"\b" + re.escape(name) + r"\b")
    candidates = [p for p in compiled if word.search(_read(p))]
    headers = _grep_files(tree, name, ["include", "arch/x86/include"])
    for path in candidates + headers:
        found = _define_in(tree, path, name)
        if found:
            found.compiled = path in compiled_set or path.suffix == ".h"
            return _complete(tree, obj, path, name, found)
    for path in _grep_files(tree, name, ["."]):
        if path in compiled_set or path in headers:
            continue
        found = _define_in(tree, path, name)
        if found:
            found.compiled = False
            return _complete(tree, obj, path, name, found)
    return None


def _define_in(tree: Path, path: Path, name: str) -> Definition | None:
    text = _read(path)
    relative = str(path.relative_to(tree))
    match = _definition_pattern(name).search(text)
    if match:
        spec = match.group("spec")
        words = {w for w in SPEC_WORDS if re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", spec)}
        first = text[match.start(): match.end()].split("\n")
        return Definition(relative, text.count("\n", 0, match.start()) + 1,
                          " ".join(s.strip() for s in first)[:160], words)
    syscall = _syscall_pattern(name)
    if syscall and (match := syscall.search(text)):
        line_end = text.find("\n", match.start())
        return Definition(relative, text.count("\n", 0, match.start()) + 1,
                          text[match.start(): line_end], syscall=True)
    match = _macro_pattern(name).search(text)
    if match:
        line_end = text.find("\n", match.start())
        return Definition(relative, text.count("\n", 0, match.start()) + 1,
                          text[match.start(): line_end], macro=True)
    return None


def _complete(tree: Path, obj: Path, path: Path, name: str, found: Definition) -> Definition:
    text = _read(path)
    found.nokprobe = bool(re.search(r"NOKPROBE_SYMBOL\(\s*" + re.escape(name) + r"\s*\)", text))
    found.notrace_dir = notrace_makefile(tree, path)
    if not found.compiled and path.suffix == ".c":
        found.gate = gating_option(tree, path)
    if not found.macro:
        found.callers = callers_in(text, name)
    return found


def notrace_makefile(tree: Path, path: Path) -> str:
    """The Makefile that removes CC_FLAGS_FTRACE for ``path`` (for the whole directory or the
    file's object), '' when none does."""
    makefile = path.parent / "Makefile"
    text = _read(makefile)
    obj = path.with_suffix(".o").name
    whole = re.search(r"^(ccflags-remove-\S*\s*\+?=.*CC_FLAGS_FTRACE|KBUILD_CFLAGS\s*=\s*\$\(subst "
                      r"\$\(CC_FLAGS_FTRACE\))", text, re.MULTILINE)
    one = re.search(r"^CFLAGS_REMOVE_" + re.escape(obj) + r"\s*[+:]?=.*FTRACE", text, re.MULTILINE)
    return str(makefile.relative_to(tree)) if whole or one else ""


def gating_option(tree: Path, path: Path) -> str:
    """CONFIG_X in ``obj-$(CONFIG_X) += file.o`` of the file's Makefile, or in the parent's
    ``obj-$(CONFIG_X) += dir/`` ('' if not found)."""
    text = _read(path.parent / "Makefile")
    obj = re.escape(path.with_suffix(".o").name)
    match = re.search(r"^\s*\w+-\$\((CONFIG_\w+)\)\s*[+:]?=.*\b" + obj, text, re.MULTILINE)
    if match:
        return match.group(1)
    parent = _read(path.parent.parent / "Makefile")
    match = re.search(r"^\s*obj-\$\((CONFIG_\w+)\)\s*[+:]?=.*\b" + re.escape(path.parent.name) + "/",
                      parent, re.MULTILINE)
    return match.group(1) if match else ""


FUNC_START = re.compile(r"^[A-Za-z_][\w \t\*]*?\b(\w+)\s*\([^;{}]*\)\s*(?:__\w+\s*)*\{", re.MULTILINE)


def callers_in(text: str, name: str) -> list[str]:
    """Functions defined in ``text`` whose body calls ``name(`` (a column-0 ``{``..``}`` reading)."""
    call = re.compile(r"\b" + re.escape(name) + r"\s*\(")
    callers = []
    for match in FUNC_START.finditer(text):
        end = text.find("\n}", match.end())
        body = text[match.end(): end if end > 0 else len(text)]
        if match.group(1) != name and call.search(body):
            callers.append(match.group(1))
    return callers
