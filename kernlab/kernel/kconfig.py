"""Configure a kernel from a base and fragments, then prove the result.

The kernel's own tools do the merge (``scripts/kconfig/merge_config.sh`` and
``olddefconfig``). Then every option the fragments ask for is compared with the
final ``.config``. ``olddefconfig`` silently drops an option whose dependencies are
unmet; here that fails the build with the reason, found by evaluating the tree's
Kconfig with kconfiglib, e.g.
``KPROBE_EVENTS=y was dropped: depends on KPROBES, which depends on MODULES (not set)``.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.util import scoped_environ

OPTIONAL_MARK = re.compile(r"^#\s*kernlab:\s*optional", re.IGNORECASE)
SET_LINE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
UNSET_LINE = re.compile(r"^#\s*CONFIG_([A-Za-z0-9_]+) is not set")


@dataclass(frozen=True)
class Request:
    """One option a fragment asks for."""

    name: str
    value: str  # "y", "m", "n" (not set), or a literal such as "\"-kernlab\"" or "32"
    fragment: str
    optional: bool


def parse_fragment(path: Path) -> list[Request]:
    """Options requested by a fragment; a `# kernlab: optional` line marks the next one."""
    requests = []
    optional_next = False
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if OPTIONAL_MARK.match(stripped):
            optional_next = True
            continue
        if match := SET_LINE.match(stripped):
            requests.append(Request(match.group(1), match.group(2), path.name, optional_next))
        elif match := UNSET_LINE.match(stripped):
            requests.append(Request(match.group(1), "n", path.name, optional_next))
        else:
            continue
        optional_next = False
    return requests


def requested_options(fragments: list[Path]) -> list[Request]:
    """All requests; a later fragment overrides an earlier one (as merge_config does)."""
    merged: dict[str, Request] = {}
    for fragment in fragments:
        for request in parse_fragment(fragment):
            merged[request.name] = request
    return list(merged.values())


def read_config(path: Path) -> dict[str, str]:
    """Final .config as {NAME: value}; unset options are absent or "n"."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if match := SET_LINE.match(line):
            values[match.group(1)] = match.group(2)
        elif match := UNSET_LINE.match(line):
            values[match.group(1)] = "n"
    return values


@dataclass
class Verification:
    ok: list[Request]
    not_applicable: list[Request]
    dropped: list[tuple[Request, str]]  # (request, explanation)

    def summary(self) -> str:
        return (f"{len(self.ok)} options verified, {len(self.not_applicable)} not applicable, "
                f"{len(self.dropped)} dropped")


def verify_config(
    requests: list[Request], config: Path, explain: Callable[[Request, str], str] | None = None,
    exists: Callable[[str], bool] | None = None,
) -> Verification:
    """Compare requests with the final .config; explain each mismatch."""
    final = read_config(config)
    result = Verification([], [], [])
    for request in requests:
        got = final.get(request.name, "n")
        if got == request.value:
            result.ok.append(request)
            continue
        if exists is not None and not exists(request.name):
            if request.optional:
                result.not_applicable.append(request)
                continue
            result.dropped.append((request, f"CONFIG_{request.name} does not exist in this kernel"))
            continue
        reason = explain(request, got) if explain else f"final value is {got}"
        result.dropped.append((request, reason))
    return result


def raise_if_dropped(result: Verification, config: Path) -> None:
    if not result.dropped:
        return
    lines = [f"{req.name}={req.value} ({req.fragment}) {why}" for req, why in result.dropped]
    first = lines[0]
    more = f" (and {len(lines) - 1} more, listed above)" if len(lines) > 1 else ""
    raise KernlabError(
        f"config check failed: {first}{more}; final config: {config}",
        "add the missing dependencies to a fragment in configs/ (or mark the option "
        "`# kernlab: optional` if this kernel may lack it)",
        details="\n".join(lines),
    )


# ---------------------------------------------------------------- explanations
MODERN_MODULES = re.compile(r"^(\s*)modules\s*$", re.MULTILINE)


def _kconfig_class():
    """kconfiglib.Kconfig that also reads the bare `modules` attribute of Linux >= 5.13."""
    import kconfiglib

    class ModernKconfig(kconfiglib.Kconfig):
        def _open(self, filename, mode):
            handle = super()._open(filename, mode)
            if "r" not in mode:
                return handle
            with handle:
                return io.StringIO(MODERN_MODULES.sub(r"\1option modules", handle.read()))

    return ModernKconfig


class KconfigModel:
    """The tree's Kconfig evaluated against a final .config (via kconfiglib)."""

    def __init__(self, tree: Path, config: Path, arch: str = "x86_64", cc: str = "gcc") -> None:
        import kconfiglib

        srcarch = "x86" if arch in ("x86_64", "i386", "x86") else arch
        env = {"srctree": str(tree.resolve()), "ARCH": arch, "SRCARCH": srcarch, "CC": cc, "LD": "ld",
               "HOSTCC": "gcc", "HOSTCXX": "g++", "KERNELVERSION": "kernlab", "CC_VERSION_TEXT":
               "kernlab", "RUSTC": "rustc", "BINDGEN": "bindgen", "PAHOLE": "pahole",
               "srcdir": str(tree), "objtree": str(tree)}
        with scoped_environ(env), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            self.kconf = _kconfig_class()(str(tree.resolve() / "Kconfig"), warn=False)
            self.kconf.load_config(str(config))
        self.kconfiglib = kconfiglib

    def exists(self, name: str) -> bool:
        sym = self.kconf.syms.get(name)
        return bool(sym and sym.nodes)

    def explain(self, request: Request, got: str) -> str:
        sym = self.kconf.syms[request.name]
        chain = self._why_off(sym, depth=0, seen=set())
        if request.value in ("y", "m") and got in ("n", ""):
            return f"was dropped: {chain}" if chain else "was dropped by olddefconfig"
        if request.value == "n" and _rev_dep_value_is_set(sym):
            return f"ended up as {got}: selected by {self.kconfiglib.expr_str(sym.rev_dep)}"
        return f"ended up as {got}" + (f": {chain}" if chain else "")

    def _why_off(self, sym, depth: int, seen: set[str]) -> str:
        if sym.name in seen or depth > 6:
            return ""
        seen.add(sym.name)
        unmet = self._unmet(sym.direct_dep)
        if unmet:
            parts = []
            for item in unmet[:3]:
                if isinstance(item, str):
                    parts.append(item)
                    continue
                deeper = self._why_off(item, depth + 1, seen)
                parts.append(f"{item.name}, which {deeper}" if deeper else f"{item.name} (not set)")
            return "depends on " + " and ".join(parts)
        if not any(node.prompt for node in sym.nodes) and not _rev_dep_value_is_set(sym):
            return "has no prompt and nothing that selects it is enabled"
        return ""

    def _unmet(self, expr) -> list:
        k = self.kconfiglib
        if self.kconfiglib.expr_value(expr):
            return []
        if isinstance(expr, k.Symbol):
            return [expr] if not expr.is_constant else []
        if isinstance(expr, tuple) and expr[0] == k.AND:
            return self._unmet(expr[1]) + self._unmet(expr[2])
        return [k.expr_str(expr)]


def _rev_dep_value_is_set(sym) -> bool:
    import kconfiglib

    return bool(kconfiglib.expr_value(sym.rev_dep))


def load_model(tree: Path, config: Path, arch: str) -> KconfigModel | None:
    """kconfiglib's view of the tree, or None (with a note) if it cannot parse it."""
    try:
        return KconfigModel(tree, config, arch)
    except Exception as error:  # kconfiglib may not know a newer Kconfig syntax
        reporter().warn(f"cannot evaluate Kconfig to explain drops ({type(error).__name__}: "
                        f"{str(error)[:120]}); mismatches are reported without the reason")
        return None


def defines_option(tree: Path, name: str) -> bool | None:
    """Whether a Kconfig file in ``tree`` defines CONFIG_``name`` (None: cannot tell).

    For options no fragment asked for (so the build's config check has no verdict),
    e.g. IKHEADERS, which Linux 4.15 does not have.
    """
    if not (tree / "Kconfig").is_file():
        return None
    pattern = rf"^[[:space:]]*(menu)?config[[:space:]]+{re.escape(name)}[[:space:]]*$"
    done = subprocess.run(["grep", "-rqE", "--include=Kconfig*", pattern, str(tree)],
                          capture_output=True, check=False)
    return {0: True, 1: False}.get(done.returncode)
