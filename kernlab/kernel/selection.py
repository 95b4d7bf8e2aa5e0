"""Which kernel build a command uses, chosen from what `build-kernel` made.

`build-kernel` writes each build to ``<work>/build/<version>-<key12>/build.json``; that
directory's name is the build's id. Every other command (run-experiment, vm.up, matrix,
ci, reproduce, lock, kernel-info) takes the build from here and never resolves sources
again, whether the build came from the catalog, --tarball, --git or --url. ``--kernel``
accepts a catalog version (``5.4.286``) or a build id (``5.4.286-1a2b3c4d5e6f``, or a
unique prefix of one that reaches past the version's ``-``). Of several builds of one
version the one `build-kernel` made or confirmed last (``<work>/latest/<version>.json``)
is used, else the newest; a note names it and how to pick another. Only a version with
no build at all is built, from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kernlab.core import lock, oci, paths
from kernlab.core.errors import BuildInputError, KernlabError, NotFound
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.core.util import read_json, sha256_file
from kernlab.kernel import build as kernel_build  # build_kernel looked up at call time (tests replace it)
from kernlab.kernel import variant
from kernlab.kernel.build import complete_record, make_plan
from kernlab.kernel.catalog import Catalog, KernelSpec, load_catalog
from kernlab.kernel.variant import VariantSpec


@dataclass(frozen=True)
class BuildRef:
    """One complete build under ``<work>/build``."""

    id: str
    record: BuildRecord

    @property
    def version(self) -> str:
        return self.record.version

    @property
    def release(self) -> str:
        return self.record.release_or_version

    @property
    def origin(self) -> str:
        source = self.record.source
        return str(source.get("origin") or source.get("kind") or "unknown source")

    @property
    def built_at(self) -> str:
        return self.record.built_at

    def line(self) -> str:
        """``5.4.286-1a2b3c4d5e6f (5.4.286, from ORIGIN, built TIME)``."""
        return f"{self.id} ({self.release}, from {self.origin}, built {self.built_at})"


@dataclass(frozen=True)
class KernelChoice:
    """What ``--kernel X`` means: a catalog version and the build to use (None: build it)."""

    asked: str
    version: str
    release: str
    build: BuildRef | None
    builds: int = 0  # how many complete builds the version has
    stale: tuple[str, ...] | None = None  # what of today's catalog recipe the build lacks (None: unchecked)

    @property
    def record(self) -> BuildRecord | None:
        return self.build.record if self.build else None


def build_root() -> Path:
    return paths.work_dir() / "build"


def complete_builds() -> list[BuildRef]:
    """Every complete build (record written, bzImage, vmlinux and System.map present)."""
    found = []
    for record_path in sorted(build_root().glob("*/build.json")):
        record = complete_record(record_path)
        if record is not None:
            found.append(BuildRef(record_path.parent.name, record))
    return found


def builds_of(version: str, every: list[BuildRef] | None = None) -> list[BuildRef]:
    """``version``'s builds, the one to use first: built from today's catalog patches and
    fragments, then the latest pointer, then the newest."""
    return _ordered(version, complete_builds() if every is None else every, catalog_recipe(version))


def _ordered(version: str, every: list[BuildRef], today: dict[str, list[str]] | None) -> list[BuildRef]:
    """``builds_of`` with today's catalog recipe of ``version`` already made."""
    mine = [b for b in every if b.version == version]
    mine.sort(key=lambda b: b.built_at, reverse=True)
    pointed = _latest_pointer(version)
    mine.sort(key=lambda b: b.id != pointed)  # stable: the pointed build first, rest by time
    if today is not None:
        mine.sort(key=lambda b: bool(recipe_differences(b.record, today)))
    return mine


def catalog_recipe(version: str, catalog: Catalog | None = None) -> dict[str, list[str]] | None:
    """The patch and fragment hashes the catalog asks for today (no sources resolved);
    None when ``version`` is not in the catalog or its files are missing."""
    if catalog is not None and in_catalog(catalog, version) is None:
        return None
    try:
        plan = make_plan(version, catalog=catalog)
    except KernlabError:
        return None
    return {"patches": [p.record()["sha256"] for p in plan.patches],
            "fragments": [sha256_file(f) for f in plan.fragments]}


def recipe_differences(build: BuildRecord, today: dict[str, list[str]] | None) -> list[str]:
    """What of today's catalog recipe the build was not made with ([] when the same)."""
    if today is None:
        return []
    made = {"patches": [p.get("sha256") for p in build.patches],
            "fragments": [f.get("sha256") for f in build.fragments]}
    return [kind for kind in ("patches", "fragments") if made[kind] != today[kind]]


def _latest_pointer(version: str) -> str:
    """The build id ``<work>/latest/<version>.json`` names ('' when none)."""
    pointer = paths.work_dir() / "latest" / f"{version}.json"
    try:
        return Path(read_json(pointer)["build_dir"]).name
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def choose_kernel(asked: str | None) -> KernelChoice:
    """Resolve a version or build id (None: the catalog's default); no build is made.
    Unknown names raise NotFound. The catalog is loaded and planned at most once; a build
    id that names a build exactly needs neither."""
    every = complete_builds()
    exact = [b for b in every if b.id == asked]
    if exact:
        return _choice(asked or "", exact[0], every, None)
    catalog = load_catalog()
    asked = asked or catalog.default
    versions = {v: spec.release for v, spec in catalog.kernels.items()}
    today = catalog_recipe(asked, catalog)
    mine = _ordered(asked, every, today)
    if mine:
        return _choice(asked, mine[0], every, tuple(recipe_differences(mine[0].record, today)))
    if spec := in_catalog(catalog, asked):
        return KernelChoice(asked, asked, spec.release, None, 0)
    prefixed = [b for b in every if "-" in asked and b.id.startswith(asked)]
    if len(prefixed) == 1:
        found = prefixed[0]
        made = recipe_differences(found.record, catalog_recipe(found.version, catalog))
        return _choice(asked, found, every, tuple(made))
    if prefixed:
        raise KernlabError(f"build id prefix {asked!r} matches {len(prefixed)} builds: "
                           f"{', '.join(b.id for b in prefixed)}", "give more of the id")
    if variant.SEPARATOR in asked:
        catalog.kernel(asked)  # an unknown variant or base: the catalog's error names the known ones
    raise NotFound(f"unknown kernel version {asked!r} (catalog: {', '.join(versions) or 'none'})",
                   "give a catalog version or a build id (`invoke list-kernels` shows both)")


def variant_of(version: str) -> VariantSpec | None:
    """The variant ``version`` names (``5.4.286+no-notrace``); None for a plain version, a
    build id or a name the catalog does not know."""
    if variant.SEPARATOR not in version:
        return None
    spec = in_catalog(load_catalog(), version)
    return spec.variant if spec is not None else None


def in_catalog(catalog: Catalog, version: str) -> KernelSpec | None:
    """The catalog's kernel ``version`` (an entry, or ``VERSION+VARIANT``), else None."""
    try:
        return catalog.kernel(version)
    except NotFound:
        return None


def _choice(asked: str, build: BuildRef, every: list[BuildRef],
            stale: tuple[str, ...] | None) -> KernelChoice:
    count = sum(b.version == build.version for b in every)
    return KernelChoice(asked, build.version, build.release, build, count, stale)


def announce(choice: KernelChoice, flag: str = "--kernel") -> None:
    """One note line: which build is used and, when there are others, how to pick one;
    another when the build's patches or fragments are not the catalog's of today."""
    if choice.build is None:
        return
    line = f"kernel {choice.asked}: build {choice.build.line()}"
    if choice.builds > 1 and choice.asked != choice.build.id:
        line += (f"; {choice.builds} builds of {choice.version}: {flag} BUILD_ID picks another "
                 "(`invoke list-kernels`)")
    reporter().note(line)
    stale = choice.stale
    if stale is None:  # chosen by its exact id: checked only now, when it is announced
        stale = tuple(recipe_differences(choice.build.record, catalog_recipe(choice.version)))
    if stale:
        reporter().note(f"build {choice.build.id} was made with other {' and '.join(stale)} "
                        f"than the catalog's today; `invoke build-kernel --version "
                        f"{choice.version}` makes one with them")


def select_build(asked: str, flag: str = "--kernel") -> BuildRecord:
    """The build record ``asked`` names; NotFound (fix: build-kernel) when unbuilt."""
    choice = choose_kernel(asked)
    if choice.record is None:
        raise NotFound(f"kernel {asked} is not built",
                       f"run `invoke build-kernel --version {choice.version}`")
    announce(choice, flag)
    return choice.record


def build_for(choice: KernelChoice, flag: str = "--kernel") -> BuildRecord:
    """The chosen build, or (none exists) a catalog build; errors tell to build it first."""
    if choice.record is not None:
        announce(choice, flag)
        return choice.record
    near = _same_series(choice.release)
    hint = f" ({', '.join(near)} is built: {flag} {near[0]} uses it)" if near else ""
    where = "pulling it from the registry, else building it" if oci.configured() else "building it"
    reporter().note(f"kernel {choice.version} is not built{hint}: {where} from the catalog")
    try:
        return kernel_build.build_kernel(choice.version)
    except KernlabError as error:
        raise build_first(error, choice.version) from None


def _same_series(release: str) -> list[str]:
    """Built versions of the same X.Y series as ``release`` (5.4.286 for 5.4.302)."""
    series = release.split(".")[:2]
    return sorted({b.version for b in complete_builds() if b.release.split(".")[:2] == series})


def build_first(error: KernlabError, version: str) -> KernlabError:
    """``error`` from a build made on the way, its fix restated as a `build-kernel` command.

    The command at hand (run-experiment, matrix, ...) lacks build-kernel's flags, so a
    fix that names them becomes "build it first: `invoke build-kernel --version V ...`".
    """
    if isinstance(error, BuildInputError) and error.flags:
        first, *others = error.flags
        fix = f"build it first: `invoke build-kernel --version {version} {first}`"
        fix += f" (or build-kernel with {', '.join(others)})" if others else ""
        fix = f"{error.other_fix}, or {fix}" if error.other_fix else fix
    elif " --" in f" {error.fix}" and "invoke " not in error.fix:
        fix = f"build it first with `invoke build-kernel --version {version}` and what it needs ({error.fix})"
    else:
        return error
    return KernlabError(error.cause, fix, error.details)


def builds_table() -> str:
    """Every build, one line each, the one each version uses marked (for list-kernels)."""
    every = complete_builds()
    if not every:
        return "builds: none (`invoke build-kernel --version V`)"
    used = {builds_of(v, every)[0].id for v in {b.version for b in every}}
    width = max(len(b.id) for b in every)
    lines = ["builds (--kernel takes a version or a build id; * = used for its version):"]
    for b in sorted(every, key=lambda b: (b.version, b.built_at)):
        mark = "*" if b.id in used else " "
        lines.append(f"{mark} {b.id:<{width}}  {b.release:<10} {b.built_at}  {b.origin}")
    return "\n".join(lines)


def find_build(kernel: str, flag: str = "--kernel") -> BuildRecord:
    """The build ``kernel`` (a version or build id) names, announced (see ``select_build``)."""
    return select_build(kernel, flag)


def built_versions() -> list[str]:
    """Catalog versions that have a complete build."""
    built = {b.version for b in complete_builds()}
    return [version for version in load_catalog().kernels if version in built]


def catalog_table() -> str:
    """`invoke list-kernels`: each version, its default source and what pins it, the build
    it uses, then every build."""
    catalog = load_catalog()
    every = complete_builds()
    locked = lock.read_lock()["kernels"]
    rows = [f"{'version':<8} {'release':<10} {'build used':<24} description"]
    for version, spec in catalog.kernels.items():
        mine = builds_of(version, every)
        used = mine[0].id if mine else "-"
        mark = " (default)" if version == catalog.default else ""
        rows.append(f"{version:<8} {spec.release:<10} {used:<24} {spec.description}{mark}")
        source = spec.sources[0]
        pin = source.pin(locked.get(version)) or source.unpinned()
        rows.append(f"{'':<8} source: {source.where(catalog.effective_mirror())}")
        rows.append(f"{'':<8} pinned: {pin}")
    return "\n".join(rows + variants_table(catalog, every)) + "\n\n" + builds_table()


def variants_table(catalog: Catalog, every: list[BuildRef]) -> list[str]:
    """`list-kernels`' variants: each one's changes and kernels, and the builds made of it."""
    if not catalog.variants:
        return []
    rows = ["", "variants (ask for VERSION+NAME, e.g. "
                f"{next(iter(catalog.kernels))}{variant.SEPARATOR}{next(iter(catalog.variants))}):"]
    for name, each in catalog.variants.items():
        built = sorted(b.version for b in every if b.version.endswith(f"{variant.SEPARATOR}{name}"))
        rows.append(f"  {name}: {' '.join(each.changes())}; kernels: {', '.join(each.kernels) or 'any'}"
                    + (f"; built: {', '.join(dict.fromkeys(built))}" if built else ""))
        if each.description:
            rows.append(f"    {each.description}")
    return rows
