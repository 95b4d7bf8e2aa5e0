"""Two sections of the matrix report: the probe atlas (every target the matrix's experiments
attach to × its kernels, with verdicts) and the verifier (for experiments that expect a
rejection, each kernel's verifier message and the instruction it rejected, side by side,
normalized so that format changes between releases do not count as differences).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernlab.core.errors import KernlabError
from kernlab.core.records import Manifest
from kernlab.experiments.fit import na_reason, resolve_vars
from kernlab.experiments.probecheck import experiment_targets
from kernlab.experiments.suite import load_experiment
from kernlab.probes.atlas import Kernel, Row, resolve_kernel, rows_kept
from kernlab.probes.target import Target

Matrix = Any  # compare.matrix.Matrix (which imports this module): kernels, experiments, cells
INSN = re.compile(r"^(\d+): (\([0-9a-f]{2}\) .*?)(?:\s{2,};.*)?$")
NOISE = re.compile(r"^(;|\s*R\d+(?:_w)?=|\d+: R\d|\d+: \(|last_idx|regs=|parent |from \d+ to \d+|"
                   r"processed \d+|propagating|verification time|stack depth|mark_precise|\s*$)")


# ---------------------------------------------------------------- probes
def probe_rows(matrix: Matrix) -> tuple[list[Row], dict[str, list[str]]]:
    """The atlas rows of every experiment's targets on every kernel of the matrix, and which
    experiments use each target (kernels without a build here are left out)."""
    rows: list[Row] = []
    used: dict[str, list[str]] = {}
    for name in matrix.kernels:
        build_id = _build_that_ran(matrix, name)
        if build_id is None:
            continue
        try:
            build = resolve_kernel(build_id)
            release = Kernel(build).release
        except (KernlabError, OSError):
            continue
        targets: list[Target] = []
        for experiment in matrix.experiments:
            for target in _targets_of(experiment, release):
                used.setdefault(str(target), [])
                if experiment not in used[str(target)]:
                    used[str(target)].append(experiment)
                if target not in targets:
                    targets.append(target)
        for row in rows_kept(targets, build):  # the verdicts the runs' own checks kept
            row.kernel = name  # the matrix's column
            rows.append(row)
    return rows, used


def _targets_of(experiment: str, release: str) -> list[Target]:
    """``experiment``'s targets on a kernel of ``release``; none where it is n/a or broken."""
    try:
        exp = load_experiment(experiment)
        if na_reason(exp, release):  # n/a there: its targets are not asked for
            return []
        return experiment_targets(exp, resolve_vars(exp, release))
    except KernlabError:
        return []


def _build_that_ran(matrix: Matrix, kernel: str) -> str | None:
    """The id of the build the column's bundles ran on (their manifests name it), so the atlas
    describes that kernel and no other; None when no bundle of the column names one."""
    for (column, _), cell in sorted(matrix.cells.items()):
        if column != kernel or cell.bundle is None:
            continue
        try:
            build = Manifest.of(Path(cell.bundle)).build
        except KernlabError:
            continue
        if build is not None and build.data.get("build_dir"):
            return build.build_dir.name
    return None


# ---------------------------------------------------------------- verifier
@dataclass
class Rejection:
    experiment: str
    step: str
    kernel: str
    message: str = ""  # normalized
    instruction: str = ""  # normalized, without its index
    index: str = ""  # the instruction's index in that kernel's log
    raw: str = ""  # the message as the kernel wrote it


def _hex(text: str) -> str:
    return re.sub(r"0x[0-9a-f]{6,}", "0x…", text)


def normalize_message(line: str) -> str:
    """A verifier message without register-state details, long addresses or spacing changes."""
    text = re.sub(r"\((?:id|off|ks|imm|umin|smin|var_off)=[^()]*\)", "", line)
    return re.sub(r"\s+", " ", _hex(text)).strip()


def parse_rejection(log: str) -> tuple[str, str, str, str]:
    """(message, instruction, index, raw message) of a verifier log ('' each when none)."""
    if "BEGIN PROG LOAD LOG" in log:
        log = log.split("BEGIN PROG LOAD LOG", 1)[1].split("END PROG LOAD LOG", 1)[0]
    instruction = index = ""
    for line in log.splitlines()[1:]:
        match = INSN.match(line)
        if match:
            index, instruction = match.group(1), re.sub(r"\s+", " ", _hex(match.group(2))).strip()
            continue
        if instruction and not NOISE.match(line):
            return normalize_message(line), instruction, index, line.strip()
    return "", instruction, index, ""


def rejections(matrix: Matrix) -> list[Rejection]:
    """Every expected rejection of the matrix's experiments, on each kernel that ran it."""
    found = []
    for experiment in matrix.experiments:
        try:
            steps = [e.step for e in load_experiment(experiment).expectations if e.kind == "rejected"]
        except KernlabError:
            continue
        for step in steps:
            for kernel in matrix.kernels:
                cell = matrix.cells.get((kernel, experiment))
                log = Path(cell.bundle) / "steps" / f"{step}.log" if cell and cell.bundle else None
                item = Rejection(experiment, step, kernel)
                if log is not None and log.is_file():
                    item.message, item.instruction, item.index, item.raw = parse_rejection(log.read_text())
                found.append(item)
    return found


def _groups(items: list[Rejection]) -> dict[tuple[str, str], list[Rejection]]:
    groups: dict[tuple[str, str], list[Rejection]] = {}
    for item in items:
        groups.setdefault((item.experiment, item.step), []).append(item)
    return groups


def agreement(group: list[Rejection]) -> str:
    seen = [g for g in group if g.message]
    if not seen:
        return "no verifier log"
    if len({(g.message, g.instruction) for g in seen}) == 1:
        return f"same on {len(seen)} kernel(s) after normalization"
    return "DIFFERS between kernels"


# ---------------------------------------------------------------- rendering
def markdown_sections(matrix: Matrix) -> list[str]:
    rows, used = probe_rows(matrix)
    parts = ["## Probe atlas", "",
             "Every target the experiments attach to, on each kernel (static: the build's System.map, "
             "__mcount_loc, kprobe blacklist, DWARF and source; `invoke probes` shows the evidence).", ""]
    kernels = list(dict.fromkeys(r.kernel for r in rows))
    cell = {(r.target, r.kernel): r for r in rows}
    parts += ["| target | used by | " + " | ".join(kernels) + " |", "|---|---|" + "---|" * len(kernels)]
    for target, experiments in used.items():
        shown = [cell[(target, k)].shown if (target, k) in cell else "not used" for k in kernels]
        parts.append(f"| `{target}` | {', '.join(experiments)} | " + " | ".join(shown) + " |")
    parts += [""] + [f"- `{r.target}` on {r.kernel}: {r.reason}" + (f" — fix: {r.fix}" if r.fix else "")
                     for r in rows if not r.attachable] + ["", "## Verifier", ""]
    for (experiment, step), group in _groups(rejections(matrix)).items():
        parts += [f"### {experiment}: {step} — {agreement(group)}", "",
                  "| kernel | message (normalized) | rejected instruction |", "|---|---|---|"]
        parts += [f"| {g.kernel} | `{g.message or '-'}` | `{g.instruction or '-'}` (#{g.index or '-'}) |"
                  for g in group]
        parts.append("")
    return parts


def html_sections(matrix: Matrix) -> str:
    esc = html.escape
    rows, used = probe_rows(matrix)
    kernels = list(dict.fromkeys(r.kernel for r in rows))
    cell = {(r.target, r.kernel): r for r in rows}
    colour = {"attachable": "#d8f0d8", "clone": "#e6f0c8", "no": "#f6d5d5"}
    head = "".join(f"<th>{esc(k)}</th>" for k in kernels)
    lines = [f"<h2 id=\"probe-atlas\">Probe atlas</h2><table><tr><th>target</th><th>used by</th>{head}</tr>"]
    for target, experiments in used.items():
        tds = []
        for kernel in kernels:
            row = cell.get((target, kernel))
            if row is None:
                tds.append('<td style="color:#888">not used</td>')
                continue
            note = ("" if row.attachable
                    else f"<br><small>{esc(row.reason)}<br><i>fix: {esc(row.fix)}</i></small>")
            tds.append(f'<td style="background:{colour[row.verdict]}" title="{esc(row.reason)}">'
                       f"{esc(row.shown)}{note}</td>")
        lines.append(f"<tr><td><code>{esc(target)}</code></td><td>{esc(', '.join(experiments))}</td>"
                     f"{''.join(tds)}</tr>")
    lines.append("</table><h2 id=\"verifier\">Verifier</h2>")
    for (experiment, step), group in _groups(rejections(matrix)).items():
        lines.append(f"<h3>{esc(experiment)}: {esc(step)} — {esc(agreement(group))}</h3><table>"
                     "<tr><th>kernel</th><th>message (normalized)</th><th>rejected instruction</th>"
                     "<th>as the kernel wrote it</th></tr>")
        lines += [f"<tr><td>{esc(g.kernel)}</td><td><code>{esc(g.message or '-')}</code></td>"
                  f"<td><code>{esc(g.instruction or '-')}</code> (#{esc(g.index or '-')})</td>"
                  f"<td><small>{esc(g.raw)}</small></td></tr>" for g in group]
        lines.append("</table>")
    return "".join(lines)
