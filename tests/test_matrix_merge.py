"""`invoke matrix --merge`: per-kernel runs (one CI runner each) merged into one report.

The runs are docs/matrix-example/matrix.json split by kernel and written by the
matrix's own writer, each with real bundles beside its report, then moved (as a
CI artifact is when another job downloads it) before they are merged by the CLI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kernlab.compare.matrix import Cell, Matrix, load_matrix, write_report
from kernlab.core.errors import KernlabError
from kernlab.core.records import RunResult

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "matrix-example"
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n'


def example() -> dict:
    return json.loads((EXAMPLE / "matrix.json").read_text())


def make_bundle(run_dir: Path, raw: dict) -> Path:
    """A results bundle for one example cell, under the run's bundles/ (KERNLAB_RESULTS in CI)."""
    bundle = run_dir / "bundles" / raw["experiment"] / raw["kernel"] / Path(raw["bundle"]).name
    (bundle / "artifacts").mkdir(parents=True)
    result = {"status": raw["status"], "seconds": 2.0, "expectations": [{"name": "ran", "passed": True}],
              "variables": {"kernel": raw["kernel"]}}
    (bundle / "result.json").write_text(json.dumps(result))
    (bundle / "trace.txt").write_text("line\n" * 3)
    if raw["experiment"] == "kretprobe-hist":  # the example's pictures
        (bundle / "artifacts" / "vfs_read_bytes.svg").write_text(SVG)
    return bundle


def write_kernel_run(run_dir: Path, kernel: str) -> Path:
    """The example's cells of one kernel as `invoke ci --kernels KERNEL --out RUN/report` writes them."""
    data = example()
    hosts = {kernel: data["hosts"][kernel]} if kernel in data["hosts"] else {}
    matrix = Matrix([kernel], data["experiments"], hosts=hosts)
    for raw in (c for c in data["cells"] if c["kernel"] == kernel):
        bundle = make_bundle(run_dir, raw)
        matrix.cells[(kernel, raw["experiment"])] = Cell(
            kernel, raw["experiment"], raw["status"], raw["reason"], bundle,
            RunResult.of(bundle))
    write_report(matrix, run_dir / "report")
    return run_dir / "report"


def invoke(*args: str) -> subprocess.CompletedProcess:
    """The real CLI, from this interpreter's environment (the venv)."""
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def grid(markdown: str) -> list[str]:
    """The report's pass/fail table: its header line to the blank line after it."""
    lines = markdown.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| experiment |")))
    return lines[start:lines.index("", start)]


@pytest.fixture
def downloaded(tmp_path: Path) -> Path:
    """Each kernel's run written in its own place, then moved into one folder of artifacts."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for kernel in example()["kernels"]:
        written = write_kernel_run(tmp_path / "runner" / kernel, kernel)
        shutil.move(written.parent, artifacts / f"kernlab-matrix-{kernel}")
    shutil.rmtree(tmp_path / "runner")
    return artifacts


def test_merge_puts_the_kernels_side_by_side_with_the_original_cells(downloaded, tmp_path):
    out = tmp_path / "merged"
    done = invoke("matrix", "--merge", str(downloaded / "*" / "report"), "--out", str(out))
    assert done.returncode == 0, done.stderr

    merged, original = json.loads((out / "matrix.json").read_text()), example()
    assert merged["kernels"] == original["kernels"] == ["4.15", "5.4.286", "5.10", "6.1"]
    assert merged["hosts"] == original["hosts"] and merged["passed"] is True
    fields = ("kernel", "experiment", "status", "reason", "host")
    assert ({tuple(c[f] for f in fields) for c in merged["cells"]}
            == {tuple(c[f] for f in fields) for c in original["cells"]})
    for cell in merged["cells"]:  # every bundle copied under the merged report, result and all
        assert Path(cell["bundle"]).parent == out / "bundles" / cell["experiment"] / cell["kernel"]
        assert (Path(cell["bundle"]) / "result.json").is_file()

    markdown = (out / "report.md").read_text()
    assert grid(markdown) == grid((EXAMPLE / "report.md").read_text())
    assert "variable `kernel`: 4.15 = 4.15, 5.4.286 = 5.4.286, 5.10 = 5.10, 6.1 = 6.1" in markdown
    for kernel in original["kernels"]:
        assert (out / f"kretprobe-hist-{kernel}-vfs_read_bytes.svg").read_text() == SVG
        assert f"![kretprobe-hist on {kernel}](kretprobe-hist-{kernel}-vfs_read_bytes.svg)" in markdown
    assert '<img src="kretprobe-hist-6.1-vfs_read_bytes.svg">' in (out / "report.html").read_text()
    suites = ET.parse(out / "junit.xml").getroot()
    assert [s.get("name") for s in suites] == [f"kernel-{k}" for k in original["kernels"]]
    assert all(s.get("tests") == "12" and s.get("failures") == "0" for s in suites)
    assert re.search(r"^readiter\s+PASS\s+PASS\s+PASS\s+PASS\s*$", done.stdout, re.M)
    assert re.search(r"^samples-cpustat\s+n/a\s+PASS\s+PASS\s+PASS\s*$", done.stdout, re.M)


def test_merged_report_still_finds_its_bundles_after_it_moves(downloaded, tmp_path):
    assert invoke("matrix", "--merge", f"{downloaded}/kernlab-matrix-5.10/report,"
                  f"{downloaded}/kernlab-matrix-6.1/report", "--out", str(tmp_path / "a")).returncode == 0
    shutil.move(tmp_path / "a", tmp_path / "b")
    moved = load_matrix(tmp_path / "b" / "matrix.json")
    cell = moved.cell("6.1", "readiter")
    assert cell.bundle.parent == tmp_path / "b" / "bundles" / "readiter" / "6.1"
    assert cell.result.variables == {"kernel": "6.1"}


def test_runs_of_different_experiments_leave_named_gaps_and_a_fail_fails(tmp_path):
    first = Matrix(["5.4"], ["readiter"])
    first.cells[("5.4", "readiter")] = Cell("5.4", "readiter", "PASS")
    second = Matrix(["4.15"], ["passfd"])
    second.cells[("4.15", "passfd")] = Cell("4.15", "passfd", "FAIL", "1 of 3 expectations failed")
    write_report(first, tmp_path / "one")
    write_report(second, tmp_path / "two")
    done = invoke("matrix", "--merge", str(tmp_path / "one"), "--merge", str(tmp_path / "two"),
                  "--out", str(tmp_path / "merged"))
    assert done.returncode == 1 and done.stderr.strip() == "kernlab: merged matrix FAIL (see the report)"
    assert "| passfd | ❌ FAIL | n/a |" in (tmp_path / "merged" / "report.md").read_text()
    merged = load_matrix(tmp_path / "merged" / "matrix.json")  # kernels oldest first
    assert (merged.kernels, merged.experiments) == (["4.15", "5.4"], ["readiter", "passfd"])
    gap = merged.cell("4.15", "readiter")
    assert (gap.status, gap.reason) == ("n/a", "not run: no merged run has it")


def corrupt(directory: Path, text: str) -> Path:
    directory.mkdir()
    (directory / "matrix.json").write_text(text)
    return directory


BAD_INPUTS = {
    "no matrix.json": (lambda d: (d.mkdir(), d)[1], r"no matrix run in \S+/bad \(no matrix\.json\); pass"),
    "not JSON": (lambda d: corrupt(d, '{"kernels": ['), r"bad/matrix\.json is unreadable \(.*\); rerun"),
    "not a matrix": (lambda d: corrupt(d, '["kernels"]'), r"not a kernlab matrix\.json: expected a JSON obj"),
    "bad cell": (lambda d: corrupt(d, json.dumps({"kernels": ["6.1"], "experiments": ["x"], "cells": [
        {"kernel": "6.1", "experiment": "x", "status": "MAYBE"}]})), r"cell 6\.1/x has status 'MAYBE'"),
    "zero cells": (lambda d: corrupt(d, '{"kernels": [], "experiments": [], "cells": []}'),
                   r"bad/matrix\.json has no cells .*; pass"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_is_one_line_naming_it(case, downloaded, tmp_path):
    make, expected = BAD_INPUTS[case]
    bad = make(tmp_path / "bad")
    done = invoke("matrix", "--merge", f"{downloaded}/kernlab-matrix-5.10/report,{bad}",
                  "--out", str(tmp_path / "merged"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("kernlab: error: ") and re.search(expected, done.stderr), done.stderr
    assert not (tmp_path / "merged").exists()


def test_the_same_kernel_and_experiment_twice_names_both_dirs(downloaded, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(downloaded / "kernlab-matrix-6.1", again)
    first = downloaded / "kernlab-matrix-6.1" / "report"
    done = invoke("matrix", "--merge", f"{downloaded}/*/report", "--merge", str(again / "report"),
                  "--out", str(tmp_path / "merged"))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert re.match(rf"kernlab: error: kernel 6\.1, experiment \S+ is in both {first} and {again}/report; ",
                    done.stderr), done.stderr


def test_merge_refuses_run_flags_and_an_input_as_out(downloaded):
    report = str(downloaded / "kernlab-matrix-6.1" / "report")
    mixed = invoke("matrix", "--merge", report, "--kernels", "6.1")
    assert mixed.returncode != 0 and mixed.stderr.startswith("kernlab: error: --merge runs nothing; drop")
    onto = invoke("matrix", "--merge", report, "--out", report)
    assert onto.returncode != 0 and "is one of the merged directories" in onto.stderr


def test_rerender_of_a_corrupt_matrix_json_is_a_kernlab_error(tmp_path):
    corrupt(tmp_path / "run", "not json")
    with pytest.raises(KernlabError, match="is unreadable"):
        load_matrix(tmp_path / "run" / "matrix.json")
