"""Evidence from the build's source tree: where a function is defined and how.

Reads only text: the declaration's specifiers wherever they are written (the line above
the name too: ``static __always_inline`` / ``size_t name(...)``; ``static``, ``inline``,
``__always_inline``, ``notrace``, ``__kprobes``, ``__init``, and the same spelled as
``__attribute__((always_inline))`` or through a macro the file defines), a ``#define`` of
the name (a macro),
``NOKPROBE_SYMBOL(name)``, ``SYSCALL_DEFINEn(name...)``, a Makefile that drops the ftrace
flags for the file's directory, the ``obj-$(CONFIG_X)`` line that gates a file not compiled
into this build, and the functions of the same file that call it (or pass it on as a
step function). Compiled files come first, the core kernel's (lib/, fs/, mm/, kernel/) before
the rest, so a driver's ``static`` function of the same name never hides the core one.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SPEC_WORDS = ("static", "inline", "__always_inline", "noinline", "notrace", "__kprobes", "__init",
              "__noinstr", "noinstr", "__used", "asmlinkage", "__visible")
# GNU attributes that mean a SPEC_WORD when spelled out (the kernel's macros expand to them)
ATTRIBUTE_WORDS = {"always_inline": "__always_inline", "noinline": "noinline",
                   "no_instrument_function": "notrace", "used": "__used"}
CORE_DIRS = ("lib/", "fs/", "mm/", "kernel/")  # searched first: the core kernel
LATE_DIRS = ("drivers/", "sound/", "arch/", "samples/", "tools/")  # searched last
ATTRIBUTE = r"__attribute__\s*\(\((?:[^;{}()]|\([^;{}()]*\))*\)\)"  # __attribute__((a, b(1)))
SPEC_LINE = re.compile(r"^[A-Za-z_][\w \t\*]*(?:__attribute__\s*\(\(.*\)\)[\w \t\*]*)*$")
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
    others: list[str] = field(default_factory=list)  # other files defining a function of that name
    spec_lines: int = 0  # lines above ``line`` that hold its specifiers (``static __always_inline``)

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


def core_first(files: list[Path], tree: Path) -> list[Path]:
    """``files`` with the core kernel's first (lib/, fs/, mm/, kernel/), drivers and arch last."""
    def rank(path: Path) -> int:
        relative = str(path.relative_to(tree)) if path.is_relative_to(tree) else str(path)
        if relative.startswith(CORE_DIRS):
            return 0
        if relative.startswith("arch/x86/") or not relative.startswith(LATE_DIRS):
            return 1
        return 2
    return sorted(files, key=lambda p: (rank(p), str(p)))


def _definition_pattern(name: str) -> re.Pattern[str]:
    """A definition of ``name``: specifiers (maybe none on this line: they may sit on the
    line above), the name, arguments, attributes, then ``{``."""
    return re.compile(r"^(?P<spec>(?:[A-Za-z_](?:" + ATTRIBUTE + r"|[\w \t\*])*?[\s\*])?)" + re.escape(name)
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
    candidates = core_first([p for p in compiled if word.search(_read(p))], tree)
    headers = _grep_files(tree, name, ["include", "arch/x86/include"])
    for path in candidates + headers:
        found = _define_in(tree, path, name)
        if found:
            found.compiled = path in compiled_set or path.suffix == ".h"
            return _complete(tree, obj, path, name, found)
    elsewhere = [p for p in core_first(_grep_files(tree, name, ["."]), tree)
                 if p not in compiled_set and p not in headers]
    defined = [(p, d) for p in elsewhere if (d := _define_in(tree, p, name))]
    if not defined:
        return None
    path, found = defined[0]
    found.compiled = False
    found.others = [d.file for _, d in defined[1:]]
    return _complete(tree, obj, path, name, found)


def compiled_definition(tree: Path, obj: Path, name: str) -> Definition | None:
    """The definition of ``name`` in the .c files ``obj`` compiled (no header, no grep of the
    whole tree: cheap enough to ask of every other build)."""
    word = re.compile(r"\b" + re.escape(name) + r"\b")
    for path in core_first([p for p in compiled_sources(tree, obj) if word.search(_read(p))], tree):
        found = _define_in(tree, path, name)
        if found and not found.macro and not found.syscall:
            return _complete(tree, obj, path, name, found)
    return None


def _specifier_lines(lines: list[str], index: int) -> int:
    """How many lines above line ``index`` hold the declaration's specifiers
    (``static __always_inline`` above ``size_t name(...)``)."""
    count = 0
    while index - count - 1 >= 0:
        above = lines[index - count - 1].strip()
        if not above or above.startswith("#") or not SPEC_LINE.match(above):
            break
        count += 1
    return count


def spec_words(spec: str, text: str = "") -> set[str]:
    """The SPEC_WORDS a declaration's specifiers carry, spelled as words, as GNU attributes
    (``__attribute__((always_inline))``) or through a macro ``text`` defines."""
    spelled = spec
    for macro in re.findall(r"\b(__\w+|\w+_inline\w*)\b", spec):
        if macro not in SPEC_WORDS and (m := re.search(r"^#\s*define\s+" + macro + r"\s+(.*)$", text,
                                                         re.MULTILINE)):
            spelled += " " + m.group(1)
    words = {w for w in SPEC_WORDS if re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", spelled)}
    for attribute in re.findall(r"__attribute__\s*\(\((.*?)\)\)", spelled):
        for item in re.split(r"[,\s]+", attribute):
            word = ATTRIBUTE_WORDS.get(item.strip("_") if item.startswith("__") else item)
            if word:
                words.add(word)
    return words


def _define_in(tree: Path, path: Path, name: str) -> Definition | None:
    text = _read(path)
    relative = str(path.relative_to(tree))
    for match in _definition_pattern(name).finditer(text):
        index = text.count("\n", 0, match.start())
        lines = text.split("\n")
        above = _specifier_lines(lines, index)
        if not match.group("spec").strip() and not above:
            continue  # `name(...) {` alone at the start of a line is no definition
        spec = " ".join([*(line.strip() for line in lines[index - above: index]), match.group("spec")])
        first = [*lines[index - above: index], *text[match.start(): match.end()].split("\n")]
        return Definition(relative, index + 1, " ".join(s.strip() for s in first)[:160],
                          spec_words(spec, text), spec_lines=above)
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
COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)


def function_bodies(text: str) -> dict[str, tuple[int, str, str]]:
    """Each function ``text`` defines: {name: (line, its head, its body without comments)},
    read the kernel's way (the head starts a line, the body ends at a column-0 ``}``)."""
    bodies: dict[str, tuple[int, str, str]] = {}
    for match in FUNC_START.finditer(text):
        name = match.group(1)
        if name in ("if", "for", "while", "switch", "return", "sizeof") or name in bodies:
            continue
        end = text.find("\n}", match.end())
        body = COMMENT.sub(" ", text[match.end(): end if end > 0 else len(text)])
        bodies[name] = (text.count("\n", 0, match.start()) + 1, match.group(0), body)
    return bodies


def callers_in(text: str, name: str) -> list[str]:
    """Functions defined in ``text`` whose body calls ``name`` or passes it on (as the step
    function of an iterator, say): a column-0 ``{``..``}`` reading, comments left out."""
    used = re.compile(r"\b" + re.escape(name) + r"\b")
    return [caller for caller, (_, _, body) in function_bodies(text).items()
            if caller != name and used.search(body)]


def patch_defines(text: str, name: str) -> bool:
    """Whether a patch's added lines define ``name`` (a definition head, not a comment, a call
    or a prototype): a comment that mentions ``name()`` does not make a patch the fix."""
    head = re.compile(r"^\+(?![ \t]*(?:/?\*|//))[A-Za-z_][\w \t\*]*?[\s\*]" + re.escape(name)
                      + r"\s*\([^;]*$")
    return any(head.match(line) for line in text.splitlines())
