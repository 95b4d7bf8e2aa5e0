"""`invoke matrix` and `invoke ci`: every experiment on every kernel, compared.

Kernels run one at a time, each with one VM shared by its experiments. The report
(Markdown and HTML) has a pass/fail grid, the per-experiment differences between
kernels (expectations, resolved variables, trace sizes), and the histogram pictures
side by side. JUnit XML has one test case per (kernel, experiment).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kernlab.compare import atlas_report, network_report, splat_report
from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.progress import reporter
from kernlab.core.records import RunResult
from kernlab.core.util import atomic_write_json, atomic_write_text
from kernlab.core.validate import inside_path, plain_name
from kernlab.experiments.lanes import lane_count
from kernlab.experiments.suite import check_known, experiment_names
from kernlab.experiments.suiterun import run_suite
from kernlab.fanout import fleet
from kernlab.fanout.fleet import LOCAL, last_error
from kernlab.guest.vm import free_name
from kernlab.kernel.selection import choose_kernel

PASS, FAIL, NA, ERROR = "PASS", "FAIL", "n/a", "ERROR"
STATUSES = (PASS, FAIL, NA, ERROR)


@dataclass
class Cell:
    """One (kernel, experiment) outcome (the machine is the kernel's: ``Matrix.host``)."""

    kernel: str
    experiment: str
    status: str
    reason: str = ""
    bundle: Path | None = None
    result: RunResult | None = None  # its bundle's result.json (None: no readable bundle)


@dataclass
class Matrix:
    kernels: list[str]
    experiments: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)  # kernel -> runner, when not all local
    network: dict[str, str] = field(default_factory=dict)  # experiment -> its network hook and mode

    def cell(self, kernel: str, experiment: str) -> Cell:
        return self.cells[(kernel, experiment)]

    def host(self, kernel: str) -> str:
        """The machine that ran ``kernel``'s cells."""
        return self.hosts.get(kernel, LOCAL)

    def label(self, kernel: str) -> str:
        """The kernel's column title: ``6.1``, or ``6.1 @ lab2`` when a host ran it."""
        host = self.host(kernel)
        return kernel if host == LOCAL else f"{kernel} @ {host}"

    @property
    def ran(self) -> bool:
        """Some cell was run (or tried): a matrix of only n/a cells ran nothing."""
        return any(c.status != NA for c in self.cells.values())

    @property
    def passed(self) -> bool:
        return self.ran and all(c.status in (PASS, NA) for c in self.cells.values())

    def why_nothing_ran(self) -> str:
        reasons = sorted({c.reason for c in self.cells.values() if c.reason})
        return "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "") \
            if reasons else "no cells"


def run_matrix(kernels: list[str], experiments: list[str] | None = None, hosts_file: Path | None = None,
               out: Path | None = None, lanes: int | str | None = None) -> Matrix:
    """Run every experiment on every kernel (one kernel at a time per machine, its experiments
    in ``lanes`` VMs side by side: kernlab.experiments.lanes).

    With ``hosts_file``, kernels are shared out between this machine and the hosts it
    names; the hosts run theirs in parallel and their bundles land under ``out/hosts``.
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    if not kernels:
        raise KernlabError("no kernels to run", "name at least one kernel, e.g. --kernels 6.1")
    names = experiment_names() if experiments is None else list(experiments)
    if not names:
        raise KernlabError(f"no experiments to run in {paths.experiments_dir()}",
                           "add one (see experiments/README.md) or set KERNLAB_EXPERIMENTS")
    check_names(kernels, names)
    lane_count(lanes, 1)  # a bad --lanes or KERNLAB_LANES stops it before any work
    matrix = Matrix(kernels, names, network=network_report.network_hooks(names))
    if hosts_file is None:
        _run_local(matrix, kernels, names, lanes)
        return matrix
    config = fleet.load_hosts(hosts_file)
    plan = fleet.assign(kernels, config)
    matrix.hosts = {k: runner for runner, ks in plan.items() for k in ks}
    by_name = {h.name: h for h in config.hosts}
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = out or default_out()
    pool = ThreadPoolExecutor(max_workers=max(1, len(plan)))
    futures = []
    try:
        futures = [pool.submit(fleet.run_on_host, by_name[runner], ks, names, target, run_id)
                   for runner, ks in plan.items() if runner != LOCAL]
        _run_local(matrix, plan.get(LOCAL, []), names, lanes)
        for future in futures:
            _add_host_cells(matrix, future.result(), names)
    except KeyboardInterrupt:
        fleet.interrupt_all()  # else every host would run on to the end
        if wait(futures, timeout=fleet.INTERRUPT_GRACE).not_done:
            fleet.hang_up_all()
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return matrix


def check_names(kernels: list[str], names: list[str]) -> None:
    """Unknown kernels (versions or build ids) or experiments stop the run before any work.

    An experiment.yaml that does not load is not checked here: its cells FAIL with the
    loader's error and the other experiments run.
    """
    for kernel in kernels:
        choose_kernel(kernel)
    check_known(names)


def _run_local(matrix: Matrix, kernels: list[str], names: list[str],
               lanes: int | str | None = None) -> None:
    """This machine's kernels, one at a time, each on its lanes' VMs (``run_suite``).

    The suite gives every experiment a bundle: PASS, FAIL, or n/a with the reason.
    """
    for kernel in kernels:
        with reporter().step(f"kernel {kernel}: {len(names)} experiments"):
            try:
                with free_name(_vm_name(kernel)) as vm_name:  # another matrix's VM is never shared
                    bundles = run_suite(names, kernel, vm_name=vm_name, flag="--kernels", lanes=lanes)
            except KernlabError as error:
                for name in names:
                    matrix.cells[(kernel, name)] = Cell(kernel, name, ERROR, error.one_line())
                continue
        for bundle in bundles:
            status = PASS if bundle.passed else NA if bundle.skipped else FAIL
            matrix.cells[(kernel, bundle.experiment)] = Cell(
                kernel, bundle.experiment, status, bundle.reason, bundle.dir, bundle_result(bundle.dir))
        for name in names:  # an experiment the suite could not start at all
            matrix.cells.setdefault((kernel, name), Cell(kernel, name, ERROR, "did not run"))


def _vm_name(kernel: str) -> str:
    """The matrix's VM for ``kernel`` (a version or build id), within vm.NAME_RE."""
    return ("matrix-" + re.sub(r"[^a-z0-9_-]", "-", kernel.lower()))[:32]  # 5.4.286+no-notrace too


def _add_host_cells(matrix: Matrix, run: Any, names: list[str]) -> None:
    """Cells from a host's fetched matrix.json (bundle paths made local); the rest ERROR.

    The host's matrix.json is checked as a local one is (its names become folders and
    file names of the report): a damaged one reports no cell.
    """
    problem = _matrix_json_problem(run.matrix) if run.matrix is not None else ""
    for raw in (run.matrix or {}).get("cells", []) if not problem else []:
        if raw["kernel"] in run.kernels and raw["experiment"] in names:
            _add_cell(matrix, raw, _fetched_bundle(raw.get("bundle"), run.remote_out, run.local_dir))
    why = (run.error or (f"host {run.host.name}: its matrix.json is damaged: {problem}" if problem else "")
           or last_error(run) or f"host {run.host.name} did not report this cell; log {run.log}")
    for kernel in run.kernels:
        for name in names:
            matrix.cells.setdefault((kernel, name), Cell(kernel, name, ERROR, why))


def _add_cell(matrix: Matrix, raw: dict[str, Any], bundle: Path | None) -> None:
    """A cell as matrix.json records it, with its bundle's result.json when there is one."""
    matrix.cells[(raw["kernel"], raw["experiment"])] = Cell(
        raw["kernel"], raw["experiment"], raw["status"], raw.get("reason", ""), bundle, bundle_result(bundle))


def bundle_result(bundle: Path | None) -> RunResult | None:
    """A bundle's result.json, or None when there is no bundle or it has no readable result."""
    try:
        return RunResult.of(bundle) if bundle else None
    except KernlabError:
        return None


def _fetched_bundle(remote: str | None, remote_out: str, local_dir: Path) -> Path | None:
    """Where a host's bundle path landed locally (None when it was not under its run dir)."""
    if not remote or not remote.startswith(remote_out + "/") or inside_path(remote[len(remote_out) + 1:]):
        return None
    local = local_dir / remote[len(remote_out) + 1:]
    return local if local.is_dir() else None


def load_matrix(matrix_json: Path) -> Matrix:
    """A finished run again, from its matrix.json and bundles (to re-render or merge its report).

    A bundle is looked for where it sits relative to the report when the report's
    directory has moved with it (a CI artifact, a copied results tree), else where recorded.
    """
    data = read_matrix_json(matrix_json)
    here = matrix_json.parent.resolve()
    matrix = Matrix(list(data["kernels"]), list(data["experiments"]), hosts=dict(data.get("hosts") or {}),
                    network={str(k): str(v) for k, v in (data.get("network") or {}).items()})
    for raw in data["cells"]:
        _add_cell(matrix, raw, find_bundle(raw.get("bundle"), data.get("out"), here))
    missing = [(k, e) for k in matrix.kernels for e in matrix.experiments if (k, e) not in matrix.cells]
    if missing:
        raise _not_a_matrix(matrix_json, f"no cell for kernel {missing[0][0]}, experiment {missing[0][1]}")
    return matrix


_EARLIER_RUN = "pass the --out directory of an earlier `invoke matrix`"


def read_matrix_json(path: Path) -> dict[str, Any]:
    """matrix.json's data, checked: a missing, unreadable, malformed or empty file is a KernlabError."""
    if not path.parent.is_dir():
        raise KernlabError(f"no directory {path.parent}", _EARLIER_RUN)
    if not path.is_file():
        raise KernlabError(f"no matrix run in {path.parent} (no matrix.json)", _EARLIER_RUN)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise KernlabError(f"{path} is unreadable ({error})",
                           "rerun the matrix that wrote it, or leave that directory out") from None
    problem = _matrix_json_problem(data)
    if problem:
        raise _not_a_matrix(path, problem)
    if not data["cells"]:
        raise KernlabError(f"{path} has no cells (its run ran nothing)",
                           "pass the --out directory of a matrix run with at least one kernel and experiment")
    return data


def _not_a_matrix(path: Path, problem: str) -> KernlabError:
    return KernlabError(f"{path} is not a kernlab matrix.json: {problem}",
                        "rerun the matrix that wrote it, or leave that directory out")


def _matrix_json_problem(data: Any) -> str:
    """What is wrong with matrix.json's data ('' when nothing): its lists, hosts and cells."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    for key in ("kernels", "experiments", "cells"):
        if not isinstance(data.get(key), list):
            return f"'{key}' is not a list"
    for key in ("kernels", "experiments"):
        if not all(isinstance(item, str) and item for item in data[key]):
            return f"'{key}' holds something other than names"
        if problem := next((p for p in map(plain_name, data[key]) if p), None):
            return f"'{key}' holds {problem}"  # each becomes a folder of a merged report
    hosts = data.get("hosts") or {}
    if not isinstance(hosts, dict) or not all(isinstance(v, str) for v in hosts.values()):
        return "'hosts' is not a mapping of kernel to host name"
    if problem := next((p for p in map(plain_name, hosts.values()) if p), None):
        return f"'hosts' holds {problem}"
    return next((p for p in (_cell_problem(raw, data) for raw in data["cells"]) if p), "")


def _cell_problem(raw: Any, data: dict[str, Any]) -> str:
    """What is wrong with one entry of matrix.json's cells ('' when nothing)."""
    if not isinstance(raw, dict):
        return "a cell is not a JSON object"
    if raw.get("kernel") not in data["kernels"] or raw.get("experiment") not in data["experiments"]:
        return f"cell {raw.get('kernel')!r}/{raw.get('experiment')!r} is not in 'kernels' x 'experiments'"
    if raw.get("status") not in STATUSES:
        return f"cell {raw['kernel']}/{raw['experiment']} has status {raw.get('status')!r}"
    if not isinstance(raw.get("reason", ""), str) or not isinstance(raw.get("bundle"), str | None):
        return f"cell {raw['kernel']}/{raw['experiment']} has a reason or bundle that is not text"
    if raw.get("bundle") and (problem := plain_name(Path(raw["bundle"]).name)):
        return f"cell {raw['kernel']}/{raw['experiment']}: the bundle's folder name {problem}"
    return ""


def find_bundle(recorded: str | None, recorded_out: str | None, here: Path) -> Path | None:
    """A cell's bundle: next to the report directory ``here`` when it moved there with the
    report (recorded relative to ``recorded_out``, where the report was written), else as recorded."""
    if not recorded:
        return None
    path = Path(recorded)
    if recorded_out and path.is_absolute():
        moved = Path(os.path.normpath(here / os.path.relpath(path, recorded_out)))
        if moved.is_dir():
            return moved
    return path


# ---------------------------------------------------------------- comparison
def expectation_map(cell: Cell) -> dict[str, bool]:
    return {name: bool(passed) for name, passed in cell.result.expectations.items()} if cell.result else {}


def differences(matrix: Matrix, experiment: str) -> list[str]:
    """How one experiment's outcome differs between kernels, in plain lines."""
    cells = [matrix.cell(k, experiment) for k in matrix.kernels]
    lines = []
    statuses = {c.kernel: c.status for c in cells}
    if len(set(statuses.values())) > 1:
        lines.append("status: " + ", ".join(f"{k} {s}" for k, s in statuses.items()))
    expectations = {c.kernel: expectation_map(c) for c in cells if c.result}
    names = sorted({n for e in expectations.values() for n in e})
    for name in names:
        values = {k: e.get(name) for k, e in expectations.items()}
        if len({v for v in values.values()}) > 1:
            shown = ", ".join(f"{k} {'pass' if v else ('fail' if v is False else 'absent')}"
                              for k, v in values.items())
            lines.append(f"expectation `{name}`: {shown}")
    variables = {c.kernel: c.result.variables for c in cells if c.result}
    for var in sorted({v for d in variables.values() for v in d}):
        values = {k: d.get(var) for k, d in variables.items()}
        if len(set(map(str, values.values()))) > 1:
            lines.append(f"variable `{var}`: " + ", ".join(f"{k} = {v}" for k, v in values.items()))
    sizes = {c.kernel: _trace_lines(c) for c in cells if c.bundle}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{k} {'none' if v is None else v}" for k, v in sizes.items())
        lines.append(f"trace lines: {shown}")
    return lines


def _trace_lines(cell: Cell) -> int | None:
    trace = cell.bundle / "trace.txt" if cell.bundle else None
    return len(trace.read_text(errors="replace").splitlines()) if trace and trace.is_file() else None


def pictures(cell: Cell) -> list[Path]:
    return sorted(cell.bundle.glob("artifacts/*.svg")) if cell.bundle else []


# ---------------------------------------------------------------- reports
def write_report(matrix: Matrix, out: Path) -> dict[str, Path]:
    """report.md, report.html, the pictures they show, junit.xml and matrix.json in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    shown = _copy_pictures(matrix, out)
    written = {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "junit": out / "junit.xml",
        "json": out / "matrix.json",
    }
    atomic_write_text(written["markdown"], markdown(matrix, shown))
    atomic_write_text(written["html"], html_report(matrix, shown))
    atomic_write_text(written["junit"], junit_xml(matrix))
    atomic_write_json(written["json"], {
        "kernels": matrix.kernels, "experiments": matrix.experiments, "passed": matrix.passed,
        "hosts": matrix.hosts, "network": matrix.network,
        "out": str(out.resolve()),  # to find the bundles after the directory moves
        "cells": [{"kernel": c.kernel, "experiment": c.experiment, "status": c.status, "reason": c.reason,
                   "host": matrix.host(c.kernel), "bundle": str(c.bundle) if c.bundle else None}
                  for c in matrix.cells.values()],
    })
    return written


def _copy_pictures(matrix: Matrix, out: Path) -> dict[tuple[str, str], list[str]]:
    shown: dict[tuple[str, str], list[str]] = {}
    for (kernel, experiment), cell in matrix.cells.items():
        for svg in pictures(cell):
            name = f"{experiment}-{kernel}-{svg.name}"
            shutil.copyfile(svg, out / name)
            shown.setdefault((kernel, experiment), []).append(name)
    return shown


def _rel(cell: Cell, out_hint: str = "") -> str:
    return str(cell.bundle) if cell.bundle else out_hint


def markdown(matrix: Matrix, shown: dict[tuple[str, str], list[str]]) -> str:
    head = "| experiment | " + " | ".join(matrix.label(k) for k in matrix.kernels) + " |"
    rule = "|---|" + "---|" * len(matrix.kernels)
    rows = [f"| {name} | " + " | ".join(_md_status(matrix.cell(k, name)) for k in matrix.kernels) + " |"
            for name in matrix.experiments]
    parts = [f"# kernlab matrix: {', '.join(matrix.kernels)}", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             f"Overall: **{'PASS' if matrix.passed else 'FAIL'}**.", "", head, rule, *rows, "",
             "## Differences between kernels", ""]
    for name in matrix.experiments:
        diff = differences(matrix, name)
        parts.append(f"### {name}")
        parts += [f"- {line}" for line in diff] if diff else ["- no difference"]
        for kernel in matrix.kernels:
            cell = matrix.cell(kernel, name)
            if cell.status not in (PASS,) and cell.reason:
                parts.append(f"- {kernel}: {cell.reason}")
        pics = [(k, p) for k in matrix.kernels for p in shown.get((k, name), [])]
        if pics:
            parts += ["", "| " + " | ".join(k for k, _ in pics) + " |", "|" + "---|" * len(pics),
                      "| " + " | ".join(f"![{name} on {k}]({p})" for k, p in pics) + " |"]
        parts.append("")
    parts += network_report.markdown_section(matrix)
    parts += splat_report.markdown_section(matrix)
    parts += atlas_report.markdown_sections(matrix)
    return "\n".join(parts) + "\n"


def _md_status(cell: Cell) -> str:
    mark = {PASS: "✅ PASS", FAIL: "❌ FAIL", NA: "n/a", ERROR: "⚠️ ERROR"}[cell.status]
    return mark


def html_report(matrix: Matrix, shown: dict[tuple[str, str], list[str]]) -> str:
    esc = html.escape
    colour = {PASS: "#d8f0d8", FAIL: "#f6d5d5", NA: "#eeeeee", ERROR: "#fbe9c8"}
    titles = "".join(f"<th>{esc(matrix.label(k))}</th>" for k in matrix.kernels)
    grid = [f"<table><tr><th>experiment</th>{titles}</tr>"]
    for name in matrix.experiments:
        cells = []
        for kernel in matrix.kernels:
            cell = matrix.cell(kernel, name)
            title = esc(cell.reason or str(cell.bundle or ""))
            cells.append(f'<td style="background:{colour[cell.status]}" title="{title}">{cell.status}</td>')
        grid.append(f"<tr><td>{esc(name)}</td>{''.join(cells)}</tr>")
    grid.append("</table>")
    sections = []
    for name in matrix.experiments:
        diff = differences(matrix, name)
        items = "".join(f"<li>{esc(line)}</li>" for line in diff) or "<li>no difference</li>"
        pics = "".join(f'<figure><img src="{esc(p)}"><figcaption>{esc(k)}</figcaption></figure>'
                       for k in matrix.kernels for p in shown.get((k, name), []))
        sections.append(f"<h3>{esc(name)}</h3><ul>{items}</ul>"
                        + (f'<div class="pics">{pics}</div>' if pics else ""))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:4px 10px;"
             "border:1px solid #ccc}table{border-collapse:collapse}.pics{display:flex;gap:1em;"
             "flex-wrap:wrap}figure{margin:0}td small{color:#555}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kernlab matrix</title>"
            f"<style>{style}</style></head><body><h1>kernlab matrix: {esc(', '.join(matrix.kernels))}</h1>"
            f"<p>Overall: <b>{'PASS' if matrix.passed else 'FAIL'}</b></p>{''.join(grid)}"
            f"<h2>Differences between kernels</h2>{''.join(sections)}"
            f"{network_report.html_section(matrix)}{splat_report.html_section(matrix)}"
            f"{atlas_report.html_sections(matrix)}</body></html>\n")


def junit_xml(matrix: Matrix) -> str:
    suites = ET.Element("testsuites", name="kernlab")
    for kernel in matrix.kernels:
        cells = [matrix.cell(kernel, n) for n in matrix.experiments]
        suite = ET.SubElement(suites, "testsuite", name=f"kernel-{kernel}", tests=str(len(cells)),
                              hostname=matrix.host(kernel),
                              failures=str(sum(c.status == FAIL for c in cells)),
                              errors=str(sum(c.status == ERROR for c in cells)),
                              skipped=str(sum(c.status == NA for c in cells)))
        for cell in cells:
            case = ET.SubElement(suite, "testcase", classname=f"kernel-{kernel}", name=cell.experiment,
                                 time=str(cell.result.seconds if cell.result else 0))
            if cell.status == FAIL:
                ET.SubElement(case, "failure", message=cell.reason).text = str(cell.bundle or "")
            elif cell.status == ERROR:
                ET.SubElement(case, "error", message=cell.reason)
            elif cell.status == NA:
                ET.SubElement(case, "skipped", message=cell.reason)
            if cell.bundle:
                ET.SubElement(case, "system-out").text = f"bundle: {cell.bundle}"
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def junit_counts(path: Path) -> dict[str, int]:
    """Test cases, failures, errors and skips in a JUnit XML file (all 0 when unreadable)."""
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return counts
    for case in root.iter("testcase"):
        counts["tests"] += 1
        for kind, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
            counts[kind] += case.find(tag) is not None
    return counts


def run_and_report(kernels: list[str], experiments: list[str] | None, hosts_file: Path | None,
                   out: Path, lanes: int | str | None = None) -> tuple[Matrix, str]:
    """`invoke matrix`/`ci`: run the cells, write the report to ``out``; (result, what to print)."""
    result = run_matrix(kernels, experiments, hosts_file, out, lanes)
    return result, report_text(result, write_report(result, out))


def nothing_ran(matrix: Matrix) -> KernlabError:
    """Every cell is n/a: the error that says why (the report is still written)."""
    return KernlabError(f"nothing ran: all {len(matrix.cells)} cells are n/a ({matrix.why_nothing_ran()})",
                        "pick kernels the experiments support (see `invoke list-experiments --kernel K`)")


def report_text(matrix: Matrix, written: dict[str, Path]) -> str:
    """The grid, then the files of the report."""
    return "\n".join([grid_text(matrix), *(f"{kind:<9}{path}" for kind, path in written.items())])


def grid_text(matrix: Matrix) -> str:
    """The grid, then one line per cell that did not pass: kernel, experiment, why."""
    width = max(len(n) for n in [*matrix.experiments, "experiment"]) + 2
    cols = {k: max(8, len(matrix.label(k)) + 2) for k in matrix.kernels}
    lines = ["experiment".ljust(width) + "".join(matrix.label(k).ljust(cols[k]) for k in matrix.kernels)]
    for name in matrix.experiments:
        statuses = "".join(matrix.cell(k, name).status.ljust(cols[k]) for k in matrix.kernels)
        lines.append(name.ljust(width) + statuses)
    reasons = [f"{c.status:<5} {c.kernel} {c.experiment}: {c.reason}"
               for k in matrix.kernels for n in matrix.experiments
               if (c := matrix.cell(k, n)).status != PASS and c.reason]
    return "\n".join(lines + (["", *reasons] if reasons else []) + network_report.text_lines(matrix)
                     + splat_report.text_lines(matrix))


def report_mode(kernels: str, experiments: str, out: str, hosts: str, rerender: bool,
                merge: list[str] | None) -> str:
    """What `invoke matrix` does with these flags: ``merge`` earlier reports, ``rerender`` one,
    or ``run`` the cells; flags that do not go together are refused here."""
    if merge:
        if kernels or hosts or rerender or experiments not in ("", "all"):
            raise KernlabError("--merge runs nothing",
                               "drop --kernels, --experiments, --hosts and --rerender")
        return "merge"
    if rerender:
        if not out:
            raise KernlabError("--rerender needs --out DIR", "name the report directory to rewrite")
        return "rerender"
    if not kernels:
        raise KernlabError("no kernels given", "pass --kernels, e.g. --kernels 5.4,6.1")
    return "run"


def out_dir(out: str) -> Path:
    """The report directory ``--out`` names (default: a new one under results/matrix/)."""
    target = Path(out).resolve() if out else default_out()
    if target.exists() and not target.is_dir():
        raise KernlabError(f"--out {out} is a file, not a directory", "give --out a directory")
    return target


def default_out() -> Path:
    return paths.results_dir() / "matrix" / time.strftime("%Y%m%d-%H%M%S")
