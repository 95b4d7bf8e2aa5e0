"""The suite: which experiments there are, where they live, and how a name finds one.

The suite is ``experiments/`` (or ``KERNLAB_EXPERIMENTS``) plus the folders
``KERNLAB_EXPERIMENT_PATH`` and ``experiment-path.txt`` add; a folder given by path runs
from anywhere. Each folder is parsed by ``kernlab.experiments.spec``; ``experiments_table``
is `invoke list-experiments`.
"""

from __future__ import annotations

import os
from pathlib import Path

from kernlab.core import paths
from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.records import Manifest
from kernlab.core.validate import plain_name
from kernlab.experiments.fit import na_reason
from kernlab.experiments.spec import (
    FORMAT_DOC,
    PATH_ENV,
    PATH_FILE,
    SPEC_FILE,
    Experiment,
    parse_experiment,
)
from kernlab.kernel.selection import choose_kernel


def extra_folders() -> list[Path]:
    """Folders added to the suite: ``KERNLAB_EXPERIMENT_PATH`` (``:``-separated), then the
    lines of ``experiment-path.txt`` in the project root (relative to it; ``#`` comments).

    Each is an experiment folder itself or a folder of experiment folders.
    """
    entries = [Path(e).expanduser() for e in os.environ.get(PATH_ENV, "").split(os.pathsep) if e]
    listing = paths.root() / PATH_FILE
    if listing.is_file():
        for line in listing.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append(paths.root() / Path(line).expanduser())
    return entries


def _folders(root: Path | None) -> list[Path]:
    """Every candidate experiment folder: the suite's (or ``root``'s), then the added ones."""
    bases = [root or paths.experiments_dir()] + ([] if root else extra_folders())
    found: list[Path] = []
    for base in bases:
        if (base / SPEC_FILE).is_file():
            found.append(base)
        elif base.is_dir():
            found += sorted(p for p in base.iterdir() if p.is_dir()
                            and not p.name.startswith(("_", ".")) and p.name != "__pycache__")
    return found


def _by_name(root: Path | None) -> dict[str, Path]:
    """Name -> folder of every loadable-looking experiment (the first of a name wins)."""
    table: dict[str, Path] = {}
    for folder in _folders(root):
        if (folder / SPEC_FILE).is_file() and not plain_name(folder.name):  # names become
            table.setdefault(folder.name, folder)  # bundle folders: see scan_all
    return table


def experiment_names(root: Path | None = None) -> list[str]:
    return sorted(_by_name(root))


def experiment_folder(name: str) -> Path | None:
    """The folder experiment ``name`` (or the path ``name``) lives in, not parsed; None: none."""
    if is_path(name):
        folder = Path(name).expanduser()
        return folder if (folder / SPEC_FILE).is_file() else None
    return _by_name(None).get(name)


def is_path(name: str) -> bool:
    """``run-experiment PATH``: a folder holding experiment.yaml, named by a path."""
    return os.sep in name or name.startswith((".", "~")) or \
        (Path(name).is_dir() and (Path(name) / SPEC_FILE).is_file())


def load_path(folder: str | Path) -> Experiment:
    """The experiment in ``folder`` (anywhere); its name is the folder's name."""
    where = Path(folder).expanduser()
    file = where / SPEC_FILE
    if not file.is_file():
        problem = "does not exist" if not where.exists() else f"holds no {SPEC_FILE}"
        raise NotFound(f"{where} {problem}", "give a folder with an experiment.yaml "
                       "(`invoke new-experiment PATH --kind bpftrace` makes one)")
    if problem := plain_name(where.resolve().name):
        raise KernlabError(f"{where}: the folder name {problem}", "rename the folder")
    return parse_experiment(file.resolve())


def load_experiment(name: str, root: Path | None = None) -> Experiment:
    """The experiment called ``name`` (or in the folder ``name`` names); NotFound lists them."""
    if is_path(name):
        return load_path(name)
    folder = _by_name(root).get(name)
    if name.startswith("_") or plain_name(name) or folder is None:
        known = ", ".join(experiment_names(root)) or "(none)"
        raise NotFound(f"unknown experiment {name!r}",
                       f"known experiments: {known} (run `invoke list-experiments`), or "
                       "give the experiment's folder as a path")
    return parse_experiment(folder / SPEC_FILE)


def recorded_experiment(manifest: Manifest, copies: list[Path]) -> tuple[Experiment, bool]:
    """The experiment a bundle's manifest records, found by its content hash, never by name.

    Tried in order: the folder it ran from, then ``copies`` (the bundle's own copy, a pack's);
    for a manifest older than recorded folders, the suite's folder of that name, taken only
    when its content hash is the recorded one.
    Returns (experiment, True) for the first whose hash is the recorded one; (the recorded
    folder as it is now, False) when it changed and no copy has the recorded hash.
    """
    source = manifest.experiment.get("source")
    candidates = ([Path(source)] if source else []) + copies
    same_name = experiment_folder(manifest.experiment_name) if not source else None
    changed: list[Experiment] = []
    for folder in candidates + ([same_name] if same_name else []):
        if not (folder / SPEC_FILE).is_file():
            continue
        try:
            exp = parse_experiment(folder / SPEC_FILE)
        except KernlabError:
            continue  # a folder that no longer loads cannot be the recorded one
        if exp.content_hash() == manifest.experiment_hash:
            return exp, True
        if folder in candidates:  # a folder found by name alone only counts with the same hash
            changed.append(exp)
    if changed:
        return changed[0], False
    raise NotFound(f"experiment {manifest.experiment_name} is gone from {source or 'its folder'} "
                   "and the bundle keeps no copy of it",
                   "restore its folder (git checkout the commit the bundle was made with)")


def check_known(names: list[str], root: Path | None = None) -> None:
    """Stop on a name that is no experiment (NotFound lists the known ones).

    Whether each experiment.yaml is valid is left to loading it: a suite records an
    invalid one as a failed run and goes on.
    """
    known = set(experiment_names(root))
    for name in names:
        if name not in known:
            load_experiment(name, root)  # raises NotFound


def load_all(root: Path | None = None) -> list[Experiment]:
    return [load_experiment(n, root) for n in experiment_names(root)]


def scan_all(root: Path | None = None) -> tuple[list[Experiment], list[tuple[str, KernlabError]]]:
    """Every experiment folder: (the ones that load, [(name, error)] for the broken ones).

    A folder without experiment.yaml counts as broken; ``_lib`` and hidden folders are not
    experiments; two folders of one name (the suite's and an added one) are an error on
    the second. One broken folder never hides the others.
    """
    good: list[Experiment] = []
    broken: list[tuple[str, KernlabError]] = []
    seen: dict[str, Path] = {}
    for folder in _folders(root):
        if problem := plain_name(folder.name):
            broken.append((folder.name, KernlabError(f"{folder}: the folder name {problem}",
                                                     "rename the folder")))
            continue
        if not (folder / SPEC_FILE).is_file():
            broken.append((folder.name, KernlabError(f"{folder}: no {SPEC_FILE}",
                                                     f"add one ({FORMAT_DOC}) or remove the folder")))
            continue
        if folder.name in seen:
            broken.append((folder.name, KernlabError(
                f"{folder}: another experiment has the name {folder.name} ({seen[folder.name]})",
                "rename one of the folders")))
            continue
        seen[folder.name] = folder
        try:
            good.append(parse_experiment(folder / SPEC_FILE))
        except KernlabError as error:
            broken.append((folder.name, error))
    return good, broken


def experiments_table(kernel: str = "") -> tuple[str, KernlabError | None]:
    """`invoke list-experiments`: the table (name, what it shows, kernels or fit to ``kernel``,
    needs), and the error naming the folders whose experiment.yaml does not load (listed
    as BROKEN; the others still list). No experiments at all is an error at once."""
    experiments, broken = scan_all()
    if not experiments and not broken:
        raise KernlabError(f"no experiments in {paths.experiments_dir()}",
                           "add one (experiments/README.md describes the format) or set "
                           "KERNLAB_EXPERIMENTS to a folder of experiments")
    if kernel:
        release = choose_kernel(kernel).release
        fits = [("n/a: " + na_reason(e, release)) if na_reason(e, release) else "runs"
                for e in experiments]
        rows = [("name", "shows", f"on {kernel}" + (f" ({release})" if release != kernel else ""),
                 "needs")]
    else:
        fits = [e.kernels_summary() for e in experiments]
        rows = [("name", "shows", "kernels", "needs")]
    rows += [(e.name, e.title, fit, e.needs_summary()) for e, fit in zip(experiments, fits, strict=True)]
    rows += [(name, "BROKEN", "-", error.one_line()) for name, error in broken]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    text = "\n".join("  ".join(row[i].ljust(widths[i]) for i in range(3)) + "  " + row[3] for row in rows)
    if not broken:
        return text, None
    names = ", ".join(name for name, _ in broken)
    return text, KernlabError(f"{len(broken)} experiment folder(s) broken: {names} (the others are usable)",
                              "fix each one as its row says")
