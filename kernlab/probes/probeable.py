"""`invoke make-probeable FUNCTION --version V`: a patch that makes a static or inlined
function a real, probe-able symbol on that kernel, in the shape of the copyout patch.

The patch is made against the tree of V's build (its catalog patches already applied), so
it applies last in the series, and is pinned in kernlab.lock for the versions that use the
series (nothing else of their entries changes: `--update-lock` would also move a Debian
source to the archive's newest upload): the definition loses ``static``/``inline`` and gains
``noinline`` (a global function is never replaced by a ``.isra``/``.constprop`` clone), a
``static`` prototype of it in the same file loses ``static``. Refused, with the reason,
where that cannot work: a macro, an ``__always_inline`` or header function (the attribute
read wherever the declaration puts it: gcc ignores a ``noinline`` next to it), a function
kprobes refuse anyway (NOKPROBE_SYMBOL, ``__kprobes``, ``__init``), one already a symbol,
one whose file this build does not compile, a name another global function already has, a
function gone from this release (named with its successor).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlab.core import lock, paths
from kernlab.core.errors import KernlabError
from kernlab.core.util import atomic_write_text, sha256_file
from kernlab.kernel.catalog import load_catalog
from kernlab.kernel.patch import series_dir
from kernlab.probes import dwarf
from kernlab.probes.atlas import Kernel, existing_patch, resolve_kernel
from kernlab.probes.source import Definition
from kernlab.probes.successor import successor

DROPPED = ("static", "inline", "__inline", "__inline__")


@dataclass
class MadePatch:
    path: Path
    series: Path
    function: str
    file: str
    inlined_into: list[str]

    locked: list[str] = field(default_factory=list)  # kernlab.lock entries that now pin it

    def summary(self, version: str) -> str:
        pinned = f"; pinned in kernlab.lock for {', '.join(self.locked)}" if self.locked else ""
        return (f"{self.path} (added to {self.series}{pinned})\n"
                f"build it: `invoke build-kernel --version {version}`, "
                f"then `invoke probes {self.function} --kernels {version} --live`")


def refusal(kernel: Kernel, name: str, found: Definition | None) -> str:
    """Why ``name`` cannot be made probe-able on this kernel ('' when it can)."""
    if gone := _gone(kernel, name, found):
        return gone
    if found is None:
        return f"{name} is not defined in the {kernel.version} tree ({kernel.tree})"
    where = f"{found.file}:{found.line}"
    if found.macro:
        return f"{name} is a macro ({where}): there is no function to keep"
    if found.syscall:
        return f"{name} is made by SYSCALL_DEFINE ({where}): it is a symbol already under its wrapper name"
    if "__always_inline" in found.words:
        return (f"{name} is __always_inline ({where}): a hot path its callers rely on being inlined, "
                "and gcc ignores a `noinline` beside it")
    if found.header:
        return f"{name} is defined in a header ({where}): each includer gets its own inlined copy"
    if found.nokprobe or "__kprobes" in found.words:
        return f"{name} is on the kprobe blacklist ({where}): kprobes would refuse it as a symbol too"
    if "__init" in found.words:
        return f"{name} is __init ({where}): its text is freed after boot"
    if not found.compiled:
        return f"{found.file} is not compiled into this build (gated by {found.gate or 'an option'})"
    return _refusal_of_symbol(kernel, name, found, where)


def _gone(kernel: Kernel, name: str, found: Definition | None) -> str:
    """Why ``name`` cannot be kept when it is gone from this release ('' when it is not)."""
    if (found is not None and found.compiled) or kernel.tree is None:
        return ""
    home = kernel.former_home(name)
    if home is None or not kernel.compiles(home.file):
        return ""
    after = successor(name, kernel.tree, home)
    instead = f"; its successor is {after.name}, which {after.via} uses in its place" if after else ""
    return (f"{name} is gone from Linux {kernel.release}: {home.file} no longer defines it "
            f"({home.describe()}){instead}. There is no function to keep: a patch in "
            f"patches/{kernel.version}/ must bring it back (as 6.12's copyout patch does)")


def _refusal_of_symbol(kernel: Kernel, name: str, found: Definition, where: str) -> str:
    """The refusals that look at the build's symbols and series."""
    symbols = kernel.facts.symbols
    if symbols.is_text(name):
        return f"{name} is a symbol already ({symbols.by_name[name][1]} in System.map): nothing to do"
    if symbols.by_name.get(name, ("", ""))[1] in ("T", "W"):
        return f"another global {name} exists: making this one global would clash at link time"
    patch = existing_patch(kernel, name)
    if patch:
        return f"{patch} already makes {name} probe-able; build with it"
    return ""


def rewrite(text: str, name: str, found: Definition) -> str:
    """``text`` with the definition (and a static prototype) of ``name`` made noinline, global."""
    lines = text.split("\n")
    index = found.line - 1
    first = index - found.spec_lines  # specifiers may sit on the lines above the name
    head = lines[index]
    spec, rest = head.split(name + "(", 1) if name + "(" in head else (head, "")
    spec = " ".join([*lines[first:index], spec])
    words = [w for w in spec.split() if w not in DROPPED and w != "noinline"]
    comment = [
        "/*",
        f" * kernlab: {name}() is a real, probe-able symbol (not inlined, not a clone) so",
        " * that kprobes can attach to it.",
        " */",
    ]
    joined = " ".join(["noinline", *words])
    new_head = joined + ("" if joined.endswith("*") else " ") + name + "(" + rest
    lines[first: index + 1] = [*comment, new_head]
    index = first
    prototype = re.compile(r"^static\s+(?:inline\s+)?(.*\b" + re.escape(name) + r"\s*\([^;{]*\)\s*;)")
    return "\n".join(prototype.sub(r"\1", line) if i < index else line for i, line in enumerate(lines))


def header(kernel: Kernel, name: str, found: Definition, callers: list[str], release: str) -> str:
    subsystem = found.file.rsplit(".", 1)[0]
    words = " ".join(w for w in ("static", "inline") if w in found.words) or "static"
    into = ", ".join(callers) or "its callers"
    return f"""kernlab: {subsystem}: make {name}() a real, probe-able symbol

Kernel:  {kernel.version} (written for {release})
Why:     {name}() is `{words}` and gcc inlines it into {into}
         ({found.file}), so it is absent from /proc/kallsyms and
         `p:... {name}` in kprobe_events fails.
What:    drop `{words}` and mark it `noinline` (a global function is never
         replaced by a {name}.isra.0/.constprop.0 clone). Not exported and no
         prototype added: only kprobes need the symbol.
Upstream: none (lab-only change; not for submission).
Check:   after the build, System.map must show `T {name}`, and
         `invoke probes {name} --kernels {kernel.version} --live` says attachable.
Made by: invoke make-probeable {name} --version {kernel.version}

"""


def _series_for(version: str) -> Path:
    """The version's own series directory (the first of its catalog patches: patches/5.4 for 5.4.286)."""
    names = load_catalog().kernel(version).patches
    if not names:
        raise KernlabError(f"kernel {version} has no patch series in the catalog",
                           f"add `patches: [\"{version}\"]` to its entry in configs/kernels.yaml")
    return series_dir(names[0])


def make_probeable(function: str, version: str) -> MadePatch:
    """Write the patch into the version's series (series file updated); refuse with the reason."""
    if not function or not version:
        raise KernlabError("make-probeable needs FUNCTION and --version V",
                           "e.g. `invoke make-probeable file_ppos --version 5.4.286`")
    if not re.match(r"^[A-Za-z_]\w*$", function):
        raise KernlabError(f"{function!r} is not a C function name",
                           "give the function's name, e.g. file_ppos")
    build = resolve_kernel(version)
    kernel = Kernel(build)
    if kernel.tree is None:
        raise KernlabError(f"the source tree of build {kernel.id} is gone ({build.tree_named})",
                           f"rebuild it: `invoke build-kernel --version {version}`")
    found = kernel.definition(function)
    why = refusal(kernel, function, found)
    if why:
        fix = (f"probe it as it is: `invoke probes {function} --kernels {version}`" if "nothing to do" in why
               else "probe a caller instead (`invoke probes` lists them), or pick another function")
        raise KernlabError(f"cannot make {function} probe-able on {kernel.version}: {why}", fix)
    assert found is not None
    callers = found.callers
    if kernel.facts.has_dwarf:
        callers = dwarf.inlined_into(build.vmlinux, kernel.id,
                                     found.file, function) or callers
    original = (kernel.tree / found.file).read_text()
    changed = rewrite(original, function, found)
    diff = "".join(difflib.unified_diff(original.splitlines(True), changed.splitlines(True),
                                        f"a/{found.file}", f"b/{found.file}", n=3))
    series = _series_for(kernel.version)
    number = 1 + max([int(p.name[:4]) for p in series.glob("[0-9][0-9][0-9][0-9]-*.patch")] or [0])
    slug = re.sub(r"[^A-Za-z0-9]+", "-", found.file.rsplit(".", 1)[0]).strip("-")
    path = series / f"{number:04d}-{slug}-make-{function.replace('_', '-')}-probe-able.patch"
    atomic_write_text(path, header(kernel, function, found, callers, kernel.release) + diff)
    listed = (series / "series").read_text() if (series / "series").is_file() else ""
    atomic_write_text(series / "series", listed.rstrip("\n") + f"\n{path.name}\n")
    users = [v for v, spec in load_catalog().kernels.items() if series.name in spec.patches]
    locked = lock.add_patch(users, path.name, sha256_file(path))
    return MadePatch(path.relative_to(paths.root()), series.relative_to(paths.root()), function,
                     found.file, callers, locked)


def describe(made: MadePatch) -> dict[str, Any]:
    return {"patch": str(made.path), "series": str(made.series), "function": made.function,
            "file": made.file, "inlined_into": made.inlined_into, "locked": made.locked}
