"""Matrix reports, JUnit, and `invoke reproduce` on a bundle made in the same run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kernlab.compare.matrix import FAIL, NA, PASS, Cell, Matrix, write_report
from kernlab.compare.reproduce import compare_expectations, normalise
from kernlab.core.records import RunResult

ROOT = Path(__file__).resolve().parent.parent
SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>\n'


def bundle(tmp: Path, kernel: str, name: str, passed: dict[str, bool], trace_lines: int, svg: bool) -> Path:
    """A results bundle as the runner writes it (result.json, trace.txt, artifacts)."""
    directory = tmp / name / kernel / "20260101-000000"
    (directory / "artifacts").mkdir(parents=True)
    result = {"status": "PASS" if all(passed.values()) else "FAIL", "seconds": 3.5,
              "expectations": [{"name": n, "passed": p} for n, p in passed.items()],
              "variables": {"write_symbol": "__x64_sys_write" if kernel == "6.1" else "sys_write"}}
    (directory / "result.json").write_text(json.dumps(result))
    (directory / "trace.txt").write_text("x\n" * trace_lines)
    if svg:
        (directory / "artifacts" / "histogram.svg").write_text(SVG)
    return directory


def test_report_has_grid_differences_pictures_and_junit(tmp_path):
    m = Matrix(["5.10", "6.1"], ["hist", "hello"])
    for kernel, ok in (("5.10", False), ("6.1", True)):
        d = bundle(tmp_path, kernel, "hist", {"buckets": True, "count>0": ok}, 10 if ok else 4, svg=True)
        m.cells[(kernel, "hist")] = Cell(kernel, "hist", PASS if ok else FAIL, "" if ok else "1 of 2 failed",
                                         d, RunResult.of(d))
    m.cells[("5.10", "hello")] = Cell("5.10", "hello", NA, "needs >= 6.0")
    d = bundle(tmp_path, "6.1", "hello", {"line": True}, 3, svg=False)
    m.cells[("6.1", "hello")] = Cell("6.1", "hello", PASS, "", d, RunResult.of(d))

    out = tmp_path / "report"
    written = write_report(m, out)
    md = written["markdown"].read_text()
    assert "| hist | ❌ FAIL | ✅ PASS |" in md and "| hello | n/a | ✅ PASS |" in md
    assert "expectation `count>0`: 5.10 fail, 6.1 pass" in md
    assert "variable `write_symbol`: 5.10 = sys_write, 6.1 = __x64_sys_write" in md
    assert "trace lines: 5.10 4, 6.1 10" in md
    assert "![hist on 5.10](hist-5.10-histogram.svg) | ![hist on 6.1](hist-6.1-histogram.svg)" in md
    assert (out / "hist-5.10-histogram.svg").read_text() == SVG
    assert '<img src="hist-6.1-histogram.svg">' in written["html"].read_text()
    suites = ET.parse(written["junit"]).getroot()
    k510 = suites.find("testsuite[@name='kernel-5.10']")
    assert (k510.get("failures"), k510.get("skipped")) == ("1", "1")
    assert not m.passed


def test_trace_normalisation_masks_pids_times_and_addresses():
    a = "readiter-123  [001] d... 18373.674726: copyout to 0x00000000184b7294 len 16"
    b = "readiter-987  [000] d... 18390.777581: copyout to 0x0000000092e06c4a len 16"
    assert normalise(a) == normalise(b)
    assert normalise(a) != normalise(b.replace("len 16", "len 32"))


def test_expectation_changes_are_named():
    old = RunResult.from_json({"status": "PASS", "expectations": [{"name": "content", "passed": True}]})
    new = RunResult.from_json({"status": "FAIL", "expectations": [{"name": "content", "passed": False}]})
    assert compare_expectations(old, new) == ["expectation content: True -> False", "status: PASS -> FAIL"]
    assert compare_expectations(old, old) == []


def reproduced(bundle: Path) -> dict:
    """`invoke reproduce BUNDLE --json` on VM t-repro (stopped afterwards): the comparison."""
    done = subprocess.run([sys.executable, "-m", "invoke", "reproduce", str(bundle), "--json",
                           "--vm-name", "t-repro"],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=1800)
    subprocess.run([sys.executable, "-m", "invoke", "vm.down", "--name", "t-repro"], cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_reproduce_a_bundle_made_in_this_run_is_identical(lab_kernel, lab_image):
    from kernlab.experiments.run import run_experiment
    from kernlab.experiments.suite import load_experiment
    from kernlab.kernel.selection import choose_kernel

    first = run_experiment(load_experiment("readiter"), choose_kernel("6.1"), vm_name="t-repro", keep_vm=True)
    assert first.passed, first.reason
    comparison = reproduced(first.dir)
    assert comparison["same_kernel"] and comparison["same_image"] and comparison["same_expectations"]
    assert comparison["input_changes"] == []
    assert Path(comparison["rerun"], "reproduction.json").is_file()


@pytest.mark.slow
def test_reproduce_reruns_a_path_run_experiment_not_the_suites_namesake(lab_kernel, lab_image, tmp_path):
    """readiter copied elsewhere with one more expectation, run by path, then reproduced: the
    rerun has the extra expectation (it was the suite's readiter, reported `same`, before)."""
    from kernlab.experiments.run import run_experiment
    from kernlab.experiments.suite import load_experiment, load_path
    from kernlab.kernel.selection import choose_kernel

    folder = tmp_path / "mine" / "readiter"
    shutil.copytree(ROOT / "experiments" / "readiter", folder)
    with open(folder / "experiment.yaml", "a") as spec:
        spec.write('  - {name: mine, in: "step:workload", contains: "read 42 bytes"}\n')
    exp = load_path(folder)
    assert len(exp.expectations) == len(load_experiment("readiter").expectations) + 1
    first = run_experiment(exp, choose_kernel("6.1"), vm_name="t-repro", keep_vm=True)
    assert first.passed, first.reason
    shutil.rmtree(folder)  # gone: the bundle's own copy is what reruns
    comparison = reproduced(first.dir)
    assert comparison["same_experiment"] and comparison["same_expectations"]
    rerun = json.loads(Path(comparison["rerun"], "result.json").read_text())
    assert "mine" in {e["name"] for e in rerun["expectations"]}
