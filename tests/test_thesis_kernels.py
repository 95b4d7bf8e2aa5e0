"""The thesis's kernels run the thesis's experiments: the whole suite on 4.15 and 5.4, and on
today's long-term kernel, 6.12 (Debian's linux-source-6.12, copyout brought back). 6.1's
column is tests/test_experiment_slow.py's suite (every experiment PASS, in three lanes): the
grid leaves it out rather than run the same twenty experiments on 6.1 twice in CI.

Real kernel builds (4.15 and 5.4.286 from the pinned local tarballs that
KERNLAB_LOCAL_KERNELS names, as .ci/run sets it; 5.4.302 and 4.15 from kernel.org
elsewhere), real TCG guests, the real `invoke matrix` command line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kernlab.kernel.catalog import load_catalog

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke"]
# The seeds ran these on 4.15 and 5.4; they must PASS there, not be n/a.
MUST_PASS = ["readiter", "hellotrace", "passfd", "buffermap", "verifier", "samples-bpf",
             "file-io", "kretprobe-hist"]
REASON = re.compile(r"needs .+ \(Linux \d+\.\d+\)")


def thesis_kernels() -> list[str]:
    """4.15, the 5.4 that can be built here (5.4.286 from local tarballs, else 5.4), 6.12
    (6.1: tests/test_experiment_slow.py)."""
    catalog = load_catalog()
    local = str(catalog.kernel("5.4.286").sources[0].kind) == "file"
    return ["4.15", "5.4.286" if local else "5.4", "6.12"]


@pytest.fixture(scope="module")
def suite_matrix(tmp_path_factory) -> dict:
    """`invoke matrix` over the three kernels with every experiment (builds what is missing)."""
    out = tmp_path_factory.mktemp("thesis-matrix")
    kernels = ",".join(thesis_kernels())
    done = subprocess.run([*INVOKE, "matrix", "--kernels", kernels, "--experiments", "all",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ}, timeout=5400, check=False)
    (out / "command.log").write_text(done.stdout + done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    data = json.loads((out / "matrix.json").read_text())
    data["exit"], data["log"] = done.returncode, done.stdout + done.stderr
    return data


def cells(matrix: dict) -> dict[tuple[str, str], dict]:
    return {(c["kernel"], c["experiment"]): c for c in matrix["cells"]}


def test_every_cell_passes_or_names_the_missing_facility(suite_matrix):
    bad = [f"{c['kernel']}/{c['experiment']}: {c['status']} {c['reason']}"
           for c in suite_matrix["cells"]
           if c["status"] != "PASS" and not (c["status"] == "n/a" and REASON.search(c["reason"]))]
    assert not bad, "\n".join(bad) + "\n" + suite_matrix["log"][-3000:]
    assert suite_matrix["exit"] == 0


@pytest.mark.parametrize("experiment", MUST_PASS)
def test_seed_experiments_pass_on_4_15_and_5_4(suite_matrix, experiment):
    grid = cells(suite_matrix)
    for kernel in thesis_kernels()[:2]:
        cell = grid[(kernel, experiment)]
        assert cell["status"] == "PASS", f"{kernel}/{experiment}: {cell['reason']}"


def test_hellotrace_takes_the_pre_4_17_sys_write_branch_on_4_15(suite_matrix):
    cell = cells(suite_matrix)[("4.15", "hellotrace")]
    trace = (Path(cell["bundle"]) / "trace.txt").read_text()
    assert re.search(r"hellotrace: SyS_write fd=1 count=15", trace)
    manifest = json.loads((Path(cell["bundle"]) / "manifest.json").read_text())
    assert manifest["variables"]["WRITE_SYM"] == "SyS_write"


@pytest.mark.parametrize("experiment", ["readiter", "ppos", "file-io", "samples-bpf"])
def test_the_thesis_probes_work_on_6_12(suite_matrix, experiment):
    """6.12's iov_iter rework removed copyout and inlines file_ppos; its patches bring both
    back, and its samples/bpf are the renamed *.bpf.o objects: all PASS, not n/a."""
    cell = cells(suite_matrix)[("6.12", experiment)]
    assert cell["status"] == "PASS", f"6.12/{experiment}: {cell['reason']}"


NETWORK = ["xdp-ipstats", "xdp-ipstats-native", "xdp-ipstats-testrun", "xdp-ipstats-bcc", "xdp-filter",
           "tc-ipstats"]


@pytest.mark.parametrize("experiment", NETWORK)
def test_the_network_experiments_pass_where_the_kernel_has_the_hook(suite_matrix, experiment):
    """Issue 24: a veth pair into a namespace in every lab guest; counts and drops as expected
    on each kernel, native XDP n/a only before veth had it (4.19), naming it."""
    for kernel in thesis_kernels():
        cell = cells(suite_matrix)[(kernel, experiment)]
        if experiment == "xdp-ipstats-native" and kernel == "4.15":
            assert cell["status"] == "n/a" and "native XDP on veth (Linux 4.19)" in cell["reason"], cell
        else:
            assert cell["status"] == "PASS", f"{kernel}/{experiment}: {cell['reason']}"


def test_the_report_has_the_networking_section_by_mode_and_kernel(suite_matrix):
    report = (Path(suite_matrix["out"]) / "report.md").read_text()
    section = report.split("## Networking")[1].split("\n## ")[0]
    native = ("| xdp native | xdp-ipstats-native | n/a: needs native XDP on veth (Linux 4.19); kernel 4.15 "
              "is older | works |")
    assert native in section
    for label in ("xdp generic", "xdp test-run", "xdp generic (bcc)", "xdp generic (xdp-tools)",
                  "tc ingress+egress"):
        assert f"| {label} |" in section
