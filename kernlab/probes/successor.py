"""A function gone from a kernel: where it lived before, and what took its place.

When a name is in neither a build's System.map nor the files that build compiles, another
build may still define it (an older release): the file it lived in and the functions of
that file that called it. Those callers, read in this build's tree, now call (or pass on as
a step function) a function of the same file they did not use before: its successor. With
several, the one whose parameter types overlap the old function's most comes first, e.g.
6.1's ``copyout(void __user *to, const void *from, size_t n)``, called from
``_copy_to_iter``, is ``copy_to_user_iter`` on 6.12 (``_copy_to_iter`` passes it to
``iterate_and_advance``), not ``memcpy_to_iter`` (no ``__user`` pointer).

Without another build, the lab's own patches may still say where the name lived (a patch
whose lines define it names the file): the atlas then says it is gone, without a successor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kernlab.probes.source import compiled_definition, function_bodies

IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*\b")
C_WORDS = {"const", "volatile", "restrict", "__restrict", "struct", "union", "enum", "register"}


@dataclass(frozen=True)
class Peer:
    """Another build's tree, to look a name up in."""

    release: str
    build: str  # its id
    tree: Path
    obj: Path


@dataclass(frozen=True)
class FormerHome:
    """Where another release defines the name, and what called it there."""

    release: str
    build: str  # the build whose tree says so ('' when a patch does)
    file: str
    line: int
    params: tuple[str, ...]  # parameter types, e.g. ('void __user *', 'void *', 'size_t')
    callers: tuple[str, ...]
    tree: Path | None = None  # that build's tree (None when a patch says so)

    def describe(self) -> str:
        called = f"; called from {', '.join(self.callers)}" if self.callers else ""
        where = f"build {self.build}" if self.build else "the lab's patches"
        return f"{self.release} defines it in {self.file}:{self.line} ({where}{called})"


@dataclass(frozen=True)
class Successor:
    """The function the old callers use in the gone function's place."""

    name: str
    via: str  # the old caller that uses it now
    file: str
    line: int
    shared: int  # parameter types it shares with the gone function
    others: tuple[str, ...] = ()  # further candidates, best first


def param_types(head: str, name: str) -> tuple[str, ...]:
    """The parameter types of ``name``'s definition head: names, qualifiers and spacing
    dropped (``const void *from`` → ``void *``)."""
    match = re.search(re.escape(name) + r"\s*\(([^)]*)\)", head, re.DOTALL)
    if not match or match.group(1).strip() in ("", "void"):
        return ()
    types = []
    for param in match.group(1).split(","):
        words = [w for w in re.findall(r"[A-Za-z_]\w*|\*", param) if w not in C_WORDS]
        if len(words) > 1 and words[-1] != "*":
            words = words[:-1]  # the parameter's own name
        types.append(" ".join(w for w in words if w != "*") + (" " + "*" * words.count("*") if "*" in words
                                                                else ""))
    return tuple(t.strip() for t in types)


def shared_types(mine: tuple[str, ...], theirs: tuple[str, ...]) -> int:
    """How many of ``theirs`` (with repeats) ``mine`` also has."""
    left = list(mine)
    count = 0
    for kind in theirs:
        if kind in left:
            left.remove(kind)
            count += 1
    return count


def former_home(name: str, peers: list[Peer]) -> FormerHome | None:
    """The first peer whose compiled .c files define ``name`` as a function."""
    for peer in peers:
        found = compiled_definition(peer.tree, peer.obj, name)
        if found is None:
            continue
        bodies = function_bodies((peer.tree / found.file).read_text(errors="replace"))
        head = bodies[name][1] if name in bodies else found.text
        return FormerHome(peer.release, peer.build, found.file, found.line, param_types(head, name),
                          tuple(found.callers), peer.tree)
    return None


def home_in_patches(name: str, patches: list[Path]) -> FormerHome | None:
    """A lab patch whose lines define ``name`` (context, removed or added): its file and the
    release its header names. The lines may be anywhere in a hunk."""
    definition = re.compile(r"^[ +-](?![ \t]*(?:/?\*|//))(?P<head>[A-Za-z_][\w \t\*]*?[\s\*]"
                            + re.escape(name) + r"\s*\([^;]*)$")
    for patch in patches:
        text = patch.read_text(errors="replace")
        kernel = re.search(r"^Kernel:\s+(\d+\.\d+\S*)", text, re.MULTILINE)
        current, line = "", 0
        for row in text.splitlines():
            if row.startswith("--- a/"):
                current = row[6:].split("\t")[0]
            elif hunk := re.match(r"^@@ -(\d+)", row):
                line = int(hunk.group(1)) - 1
            elif current and (match := definition.match(row)):
                return FormerHome(kernel.group(1) if kernel else "another release", "", current, line + 1,
                                  param_types(match.group("head"), name), ())
            if row.startswith((" ", "-")):
                line += 1
    return None


def successor(name: str, tree: Path, home: FormerHome) -> Successor | None:
    """What ``home``'s callers use in ``tree`` instead of ``name`` (see the module's doc)."""
    if home.tree is None or not (tree / home.file).is_file():
        return None
    now = function_bodies((tree / home.file).read_text(errors="replace"))
    before = function_bodies((home.tree / home.file).read_text(errors="replace"))
    found: dict[str, tuple[int, str, int]] = {}  # name: (shared types, via, order)
    for caller in home.callers:
        if caller not in now:
            continue
        old = set(IDENTIFIER.findall(before[caller][2])) if caller in before else set()
        for ident in IDENTIFIER.findall(now[caller][2]):
            if ident in now and ident not in old and ident not in (caller, name) and ident not in found:
                shared = shared_types(param_types(now[ident][1], ident), home.params)
                found[ident] = (shared, caller, len(found))
    if not found:
        return None
    ranked = sorted(found, key=lambda n: (-found[n][0], found[n][2]))
    best = ranked[0]
    return Successor(best, found[best][1], home.file, now[best][0], found[best][0], tuple(ranked[1:]))
