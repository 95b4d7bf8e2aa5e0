"""`invoke matrix --merge DIR...`: the reports of several matrix runs as one; and a Slurm
run's tasks' reports as one (`invoke matrix --slurm`: ``slurm_run``).

Each DIR is the ``--out`` directory of an earlier `invoke matrix` or `invoke ci`, for
example one CI runner's kernel. Their cells go side by side in one grid (one
kernel and experiment may come from one DIR only), their bundles are copied under
``OUT/bundles`` so that the merged report, its pictures and `invoke reproduce` work
from OUT alone, and the report is written by the matrix's own writer.
"""

from __future__ import annotations

import contextlib
import glob
import re
import shutil
from pathlib import Path

from kernlab.compare.matrix import (
    ERROR,
    NA,
    Cell,
    Matrix,
    check_names,
    load_matrix,
    report_text,
    write_report,
)
from kernlab.core import inuse, paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.validate import new_output
from kernlab.experiments.suite import experiment_names
from kernlab.fanout import slurm

GLOB_CHARS = "*?["


def input_dirs(values: list[str]) -> list[Path]:
    """The DIRs that --merge names: repeated flags, comma-separated lists and quoted glob patterns."""
    dirs: list[Path] = []
    for item in (part.strip() for value in values for part in value.split(",")):
        if not item:
            continue
        found = [Path(item)] if not any(c in item for c in GLOB_CHARS) else _matching_dirs(item)
        dirs += [d for d in found if d.resolve() not in {seen.resolve() for seen in dirs}]
    if not dirs:
        raise KernlabError("--merge names no directory",
                           "pass the --out directories of earlier matrix runs, e.g. --merge out/4.15,out/5.4")
    return dirs


def _matching_dirs(pattern: str) -> list[Path]:
    """The directories a glob pattern matches, sorted; none is an error."""
    found = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
    if not found:
        raise KernlabError(f"no directory matches {pattern}", "check the pattern or name the directories")
    return found


def merge_runs(dirs: list[Path]) -> Matrix:
    """One matrix of the runs in ``dirs``: kernels oldest first, experiments as first seen."""
    merged = Matrix([], [])
    source: dict[tuple[str, str], Path] = {}
    for directory in dirs:
        run = load_matrix(directory / "matrix.json")
        for key, cell in run.cells.items():
            if key in source:
                raise KernlabError(f"kernel {key[0]}, experiment {key[1]} is in both {source[key]} and "
                                   f"{directory}", "merge each kernel and experiment once: leave one out")
            source[key] = directory
            merged.cells[key] = cell
        merged.kernels += [k for k in run.kernels if k not in merged.kernels]
        merged.experiments += [e for e in run.experiments if e not in merged.experiments]
        merged.hosts.update(run.hosts)
        merged.network.update(run.network)
    merged.kernels.sort(key=kernel_order)
    _fill_gaps(merged)
    return merged


def kernel_order(kernel: str) -> tuple[tuple[int, ...], str]:
    """4.15 before 5.4.286 before 5.10 (a glob lists 5.10 first); build ids by their version."""
    numbers = re.match(r"^\d+(?:\.\d+)*", kernel)
    return (tuple(int(p) for p in numbers.group(0).split(".")) if numbers else (), kernel)


def _fill_gaps(merged: Matrix) -> None:
    """n/a for a kernel and experiment that no merged run had (runs of different experiments)."""
    for kernel in merged.kernels:
        for name in merged.experiments:
            merged.cells.setdefault((kernel, name), Cell(kernel, name, NA, "not run: no merged run has it"))


def write_merged(merged: Matrix, out: Path) -> dict[str, Path]:
    """Copy the bundles under ``out/bundles``, then write the report as `invoke matrix` does."""
    out = out.resolve()
    try:
        for cell in merged.cells.values():
            cell.bundle = _copy_bundle(cell, out / "bundles")
        return write_report(merged, out)
    except OSError as error:
        raise KernlabError(f"cannot write the merged report to {out} ({error})",
                           "pass a writable --out") from None


def _copy_bundle(cell: Cell, into: Path) -> Path | None:
    """The cell's bundle copied to ``into/<experiment>/<kernel>/<name>`` (as in results/)."""
    if cell.bundle is None:
        return None
    if not cell.bundle.is_dir():
        reporter().warn(f"{cell.experiment} on {cell.kernel}: bundle {cell.bundle} not found; "
                        "the report names it but cannot show its pictures")
        return cell.bundle
    if not (cell.bundle / "result.json").is_file():
        reporter().warn(f"{cell.experiment} on {cell.kernel}: {cell.bundle} is not a results bundle "
                        "(no result.json); not copied")
        return cell.bundle
    target = into / cell.experiment / cell.kernel / cell.bundle.name
    if not target.resolve().is_relative_to(into.resolve()):  # load_matrix checked the names
        raise KernlabError(f"{cell.experiment} on {cell.kernel}: bundle {cell.bundle} would be copied "
                           f"outside {into}", "leave that run out of the merge")
    if target.resolve() != cell.bundle.resolve():
        shutil.copytree(cell.bundle, target, symlinks=True, dirs_exist_ok=True)
    return target


def merge_reports(values: list[str], out: Path) -> tuple[Matrix, dict[str, Path]]:
    """`invoke matrix --merge`: the merged matrix and the report files written to ``out``."""
    dirs = input_dirs(values)
    if out.resolve() in {d.resolve() for d in dirs}:
        raise KernlabError(f"--out {out} is one of the merged directories",
                           "write the merged report to a directory of its own")
    new_output(out, "--out")  # an earlier report there is never overwritten
    merged = merge_runs(dirs)
    with inuse.temporary(out, f"merged report {out.name}") if not out.exists() else contextlib.nullcontext():
        return merged, write_merged(merged, out)  # a failed or stopped merge leaves no half --out


# ---------------------------------------------------------------- a Slurm run's tasks
def slurm_run(kernels: list[str], experiments: list[str] | None, out: Path,
              options: slurm.SlurmOptions) -> tuple[Matrix, dict[str, Path], slurm.SlurmRun]:
    """`matrix --slurm`: one Slurm array task per kernel (kernlab.fanout.slurm), their reports
    merged as --merge merges runs, into ``out``; a task without one gives ERROR cells that
    name Slurm's state and reason."""
    names = experiment_names() if experiments is None else list(experiments)
    if not names:
        raise KernlabError(f"no experiments to run in {paths.experiments_dir()}",
                           "add one (see experiments/README.md) or set KERNLAB_EXPERIMENTS")
    with slurm.shared_areas(options.slurm_dir):  # a build id is the shared work area's
        check_names(kernels, names)
    done = slurm.run_array(kernels, names, options)
    merged = merge_tasks(done, names)
    return merged, write_merged(merged, out), done


def slurm_report(kernels: list[str], experiments: list[str] | None, out: Path,
                 options: slurm.SlurmOptions) -> tuple[Matrix, str, bool]:
    """`invoke matrix --slurm` / `ci --slurm`: the merged matrix, what to print (the grid, the
    report's files, the run folder), and whether Ctrl-C cut the run short."""
    merged, written, done = slurm_run(kernels, experiments, out, options)
    return merged, report_text(merged, written) + f"\n{'slurm':<9}{done.run_dir}", done.interrupted


def merge_tasks(done: slurm.SlurmRun, names: list[str]) -> Matrix:
    """The tasks' reports as one matrix, kernels in the order asked; each kernel's column
    names the node that ran it."""
    reports = done.reports()
    merged = merge_runs(reports) if reports else Matrix([], [])
    for task, why in done.failed():
        merged.cells.update({(task.kernel, n): Cell(task.kernel, n, ERROR, why) for n in names})
    merged.kernels = [t.kernel for t in done.tasks]
    merged.experiments += [n for n in names if n not in merged.experiments]
    merged.hosts.update({t.kernel: t.node for t in done.tasks if t.node})
    _fill_gaps(merged)
    return merged
