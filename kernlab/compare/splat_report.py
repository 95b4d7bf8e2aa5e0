"""The matrix report's kernel splat section: per experiment and kernel, what the run's splat
check found in the guest's dmesg and console (kernlab.experiments.splatcheck)."""

from __future__ import annotations

import html
from typing import Any

Matrix = Any  # compare.matrix.Matrix (which imports this module)
INTRO = ("Every run's kernel log since it began (dmesg) and its serial console, searched for "
         "the splats the kernel's BPF CI fails on (WARNING, BUG, KASAN/KFENCE/UBSAN, lockdep, "
         "RCU stalls, hung tasks, lockups, Oops, panic). `-`: not checked (n/a, or a bundle from "
         "before the check); an expected class is one the experiment declares (`splats:`).")


def cell_text(cell: Any) -> str:
    """``none``, ``-``, ``1 warning`` or ``1 warning (expected)``."""
    found = cell.result.splats if cell.result is not None else None
    if found is None:
        return "-"
    if not found:
        return "none"
    counts: dict[tuple[str, bool], int] = {}
    for splat in found:
        key = (str(splat.get("class")), bool(splat.get("expected")))
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {kind}" + (" (expected)" if expected else "")
                     for (kind, expected), n in counts.items())


def first_lines(matrix: Matrix) -> list[str]:
    """One line per splat found: kernel, experiment, class, the report's first line."""
    lines = []
    for (kernel, experiment), cell in matrix.cells.items():
        for splat in (cell.result.splats or []) if cell.result is not None else []:
            how = "expected" if splat.get("expected") else "unexpected"
            lines.append(f"{kernel} {experiment}: {splat.get('class')} ({how}): {splat.get('line')}")
    return lines


def markdown_section(matrix: Matrix) -> list[str]:
    parts = ["## Kernel splats", "", INTRO, "",
             "| experiment | " + " | ".join(matrix.label(k) for k in matrix.kernels) + " |",
             "|---|" + "---|" * len(matrix.kernels)]
    parts += [f"| {name} | " + " | ".join(cell_text(matrix.cell(k, name)) for k in matrix.kernels) + " |"
              for name in matrix.experiments]
    found = first_lines(matrix)
    return parts + [""] + [f"- {line}" for line in found] + ([""] if found else [])


def html_section(matrix: Matrix) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(matrix.label(k))}</th>" for k in matrix.kernels)
    rows = "".join(f"<tr><td>{esc(name)}</td>" + "".join(
        f"<td>{esc(cell_text(matrix.cell(k, name)))}</td>" for k in matrix.kernels) + "</tr>"
        for name in matrix.experiments)
    items = "".join(f"<li>{esc(line)}</li>" for line in first_lines(matrix))
    return (f"<h2>Kernel splats</h2><p>{esc(INTRO)}</p><table><tr><th>experiment</th>{head}</tr>"
            f"{rows}</table>" + (f"<ul>{items}</ul>" if items else ""))


def text_lines(matrix: Matrix) -> list[str]:
    """The grid's splat lines (empty when no run found one)."""
    found = first_lines(matrix)
    return ["", "kernel splats:", *(f"  {line}" for line in found)] if found else []
