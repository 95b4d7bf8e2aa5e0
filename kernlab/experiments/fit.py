"""Does an experiment fit a kernel: per-version variables, n/a reasons, and a build's
config options, symbols (or their gcc clones) and outputs against the experiment's needs."""

from __future__ import annotations

from pathlib import Path

from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.experiments.expect import substitute
from kernlab.experiments.spec import CONFIG_KEY, Experiment, version_tuple
from kernlab.kernel.kconfig import defines_option, read_config
from kernlab.kernel.variant import VariantSpec


def resolve_vars(exp: Experiment, version: str, config: dict[str, str] | None = None) -> dict[str, str]:
    """Per-kernel variables: a ``CONFIG_X=v`` entry the kernel's ``config`` matches (the first
    in the file), else the entry with the highest min version <= ``version``."""
    have = version_tuple(version)
    chosen: dict[str, str] = {}
    for name, table in exp.variables.items():
        by_config = [k for k in table if CONFIG_KEY.match(k) and config is not None
                     and _config_has(config, k)]
        if by_config:
            chosen[name] = table[by_config[0]]
            continue
        fits = [k for k in table if not CONFIG_KEY.match(k) and version_tuple(k) <= have]
        if not fits:
            raise KernlabError(
                f"{exp.spec_path}: vars.{name} has no value for kernel {version}",
                f"add an entry whose key is <= {version}")
        chosen[name] = table[max(fits, key=version_tuple)]
    return chosen


def _config_has(config: dict[str, str], key: str) -> bool:
    """``CONFIG_X=v`` against a .config's values (an option absent from it is ``n``)."""
    option, _, value = key.removeprefix("CONFIG_").partition("=")
    return config.get(option, "n") == value


def na_reason(exp: Experiment, release: str, variant: VariantSpec | None = None) -> str:
    """Why ``exp`` cannot run on Linux ``release`` ('' when it can), or on that kernel's
    ``variant``: a config option the experiment needs that the variant unsets.

    e.g. ``needs bpf_probe_read_user (Linux 5.5); kernel 5.4.286 is older``.
    """
    if variant is not None and (removed := [o for o in exp.config if o in variant.unset]):
        return (f"needs {', '.join('CONFIG_' + o for o in removed)}, which variant {variant.name} "
                "unsets")
    have = version_tuple(release)
    missing = [f"{name} (Linux {added})" for name, added in exp.features.items()
               if have < version_tuple(added)]
    if missing:
        return f"needs {', '.join(missing)}; kernel {release} is older"
    if exp.kernel_min and have < version_tuple(exp.kernel_min):
        return f"needs Linux {exp.kernel_min} ({exp.kernel_reason}); kernel {release} is older"
    top = version_tuple(exp.kernel_max) if exp.kernel_max else None
    if top and have[: len(top)] > top:
        return f"supports Linux up to {exp.kernel_max} ({exp.kernel_reason}); kernel {release} is newer"
    return ""


def _system_map_names(system_map: Path) -> set[str]:
    names = set()
    with open(system_map) as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 3:
                names.add(parts[2])
    return names


def resolve_symbol(build: BuildRecord, names: set[str], symbol: str) -> str | None:
    """Exact kernel name for ``symbol`` (copyout, or a gcc clone copyout.isra.0)."""
    recorded = build.symbols.get(symbol)
    if recorded and (not names or recorded in names):
        return recorded
    if symbol in names:
        return symbol
    clones = sorted(n for n in names if n.startswith(symbol + "."))
    return clones[0] if clones else None


def _absent_from_kernel(build: BuildRecord, option: str) -> bool:
    """True (with a note) if this kernel's Kconfig has no ``option`` at all: skip it.

    The build's config check already lists optional options its version lacks
    (``config_check.not_applicable``); any other is looked up in the build's tree.
    """
    release, tree = build.release_or_version, build.tree_named
    absent = (option in build.not_applicable
              or (bool(tree) and defines_option(Path(tree), option) is False))
    if absent:
        reporter().note(f"CONFIG_{option}: Linux {release} has no such option; skipped")
        return True
    return False


def check_needs(exp: Experiment, build: BuildRecord, variables: dict[str, str]) -> dict[str, str]:
    """Check config options, symbols and outputs; return {symbol: exact name}."""
    version = build.version
    for out in exp.outputs:
        if build.existing_output(out) is None:
            raise KernlabError(
                f"{exp.name} needs the kernel build output {out!r}, absent from the "
                f"{version} build", f"rebuild with `invoke build-kernel --version {version}`")
    config_file = build.existing_output("config")
    if exp.config and config_file:
        have = read_config(config_file)
        for option in exp.config:
            if have.get(option) not in ("y", "m") and not _absent_from_kernel(build, option):
                raise KernlabError(
                    f"CONFIG_{option} is not set in the {version} kernel ({config_file})",
                    f"add CONFIG_{option}=y to the lab config fragment in configs/ and run "
                    f"`invoke build-kernel --version {version}`")
    system_map = build.existing_output("System.map")
    names = _system_map_names(system_map) if system_map else set()
    found = {}
    for raw, hint in exp.symbols.items():
        symbol = substitute(raw, variables)
        exact = resolve_symbol(build, names, symbol)
        if exact is None:
            fix = hint.replace("<v>", version).replace("<version>", version) if hint else (
                f"use a kernel that has it, or patch it in under patches/{version}/")
            raise KernlabError(f"{symbol} is not in kallsyms of the {version} kernel", fix)
        found[symbol] = exact
    return found
