"""The matrix report's networking section: each network hook and mode (XDP generic, native on
veth, test-run; tc) by kernel, from the experiments that declare ``network:`` in their
experiment.yaml: works, FAIL, or n/a with the facility and the release that added it."""

from __future__ import annotations

import html
from typing import Any

from kernlab.core.errors import KernlabError
from kernlab.experiments.suite import load_experiment

Matrix = Any  # compare.matrix.Matrix (which imports this module)
INTRO = ("Each row is an experiment's network hook and mode (its `network:` key) on a veth pair "
         "into a namespace (test-run: no device). `works`: its counts and drops were as expected; "
         "n/a names the facility and the Linux release that added it.")


def network_hooks(names: list[str]) -> dict[str, str]:
    """Experiment name -> ``hook mode`` for the named experiments that declare one (a folder
    that does not load has none: its cells FAIL with the loader's error)."""
    hooks = {}
    for name in names:
        try:
            exp = load_experiment(name)
        except KernlabError:
            continue
        if exp.network is not None:
            hooks[name] = exp.network.label()
    return hooks


def cell_text(cell: Any) -> str:
    """``works``, ``FAIL``, ``ERROR`` or ``n/a: REASON``."""
    if cell.status == "PASS":
        return "works"
    if cell.status == "n/a":
        return f"n/a: {cell.reason}" if cell.reason else "n/a"
    return cell.status


def rows(matrix: Matrix) -> list[tuple[str, str]]:
    """(hook mode, experiment) for the matrix's network experiments, by hook then mode."""
    return sorted(((label, name) for name, label in matrix.network.items() if name in matrix.experiments))


def markdown_section(matrix: Matrix) -> list[str]:
    found = rows(matrix)
    if not found:
        return []
    parts = ["## Networking", "", INTRO, "",
             "| hook, mode | experiment | " + " | ".join(matrix.label(k) for k in matrix.kernels) + " |",
             "|---|---|" + "---|" * len(matrix.kernels)]
    parts += [f"| {label} | {name} | " + " | ".join(cell_text(matrix.cell(k, name)) for k in matrix.kernels)
              + " |" for label, name in found]
    return [*parts, ""]


def html_section(matrix: Matrix) -> str:
    found = rows(matrix)
    if not found:
        return ""
    esc = html.escape
    head = "".join(f"<th>{esc(matrix.label(k))}</th>" for k in matrix.kernels)
    body = "".join(f"<tr><td>{esc(label)}</td><td>{esc(name)}</td>" + "".join(
        f"<td>{esc(cell_text(matrix.cell(k, name)))}</td>" for k in matrix.kernels) + "</tr>"
        for label, name in found)
    return (f"<h2>Networking</h2><p>{esc(INTRO)}</p><table><tr><th>hook, mode</th><th>experiment</th>"
            f"{head}</tr>{body}</table>")


def text_lines(matrix: Matrix) -> list[str]:
    """The grid's networking lines: one per hook and mode, its kernels' verdicts."""
    found = rows(matrix)
    if not found:
        return []
    lines = ["", "networking:"]
    for label, name in found:
        verdicts = ", ".join(f"{k} {cell_text(matrix.cell(k, name)).split(':')[0]}" for k in matrix.kernels)
        lines.append(f"  {label:<26} {verdicts}")
    return lines
