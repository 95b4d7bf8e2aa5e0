"""Kernel splat detection, fast: the classes on reports in the kernel's own formats, the
experiment's `splats:` key, the run's verdict and the matrix section. The real splat, in a
real guest, is tests/test_splats_slow.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kernlab.compare import splat_report
from kernlab.compare.matrix import Cell, Matrix
from kernlab.core.errors import KernlabError
from kernlab.core.records import RunResult
from kernlab.experiments.bundle import Bundle
from kernlab.experiments.expect import Outcome
from kernlab.experiments.spec import parse_experiment
from kernlab.experiments.splatcheck import check
from kernlab.guest.splats import after_mark, find_splats, mark_command

WARN = """\
[   41.123400] ------------[ cut here ]------------
[   41.123401] WARNING: CPU: 1 PID: 231 at /tmp/m/kl_splat.c:15 kl_splat_init+0xd/0x1000 [kl_splat]
[   41.123402] Modules linked in: kl_splat(+)
[   41.123403] RIP: 0010:kl_splat_init+0xd/0x1000 [kl_splat]
[   41.123404] Call Trace:
[   41.123405]  <TASK>
[   41.123406]  do_one_initcall+0x56/0x220
[   41.123407]  </TASK>
[   41.123408] ---[ end trace 0000000000000000 ]---
"""
REPORTS = {  # first lines as the kernels print them (4.15 to 6.1)
    "kasan": "BUG: KASAN: slab-out-of-bounds in kmalloc_oob_right+0x1b/0x40",
    "kfence": "BUG: KFENCE: out-of-bounds read in test_out_of_bounds_read+0xa6/0x234",
    "ubsan": "UBSAN: array-index-out-of-bounds in lib/test_ubsan.c:87:8",
    "lockdep": "WARNING: possible circular locking dependency detected",
    "rcu-stall": "rcu: INFO: rcu_sched self-detected stall on CPU",
    "hung-task": "INFO: task cat:77 blocked for more than 122 seconds.",
    "soft-lockup": "watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [spin:88]",
    "hard-lockup": "NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
    "oops": "BUG: unable to handle page fault for address: 0000000000000008",
    "bug": "BUG: sleeping function called from invalid context at mm/slab.h:421",
    "panic": "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000000",
}


def test_a_warning_is_one_report_from_its_line_to_the_end_marker() -> None:
    found = find_splats("[   40.0] kernlab: ok\n" + WARN + "[   42.0] later line\n")
    assert [s.kind for s in found] == ["warning"]
    assert found[0].line.startswith("WARNING: CPU: 1 PID: 231 at /tmp/m/kl_splat.c:15")
    assert found[0].text.splitlines()[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert "later line" not in found[0].text
    assert found[0].first_lines(2)[1] == "Modules linked in: kl_splat(+)"


@pytest.mark.parametrize("kind", sorted(REPORTS))
def test_each_class_is_named(kind: str) -> None:
    assert [s.kind for s in find_splats(f"[    9.5] {REPORTS[kind]}\n")] == [kind]


def test_an_oops_and_the_bug_line_before_it_are_one_report() -> None:
    text = f"{REPORTS['oops']}\n#PF: supervisor read access in kernel mode\nOops: 0000 [#1] SMP\n"
    assert [s.kind for s in find_splats(text)] == ["oops"]


def test_ordinary_kernel_lines_are_no_splat() -> None:
    text = "bpf: JIT enabled\nkprobe: bpf_trace_printk ok\nWARNING: no BTF\nrcu: Hierarchical RCU\n"
    assert find_splats(text) == []


def test_only_the_log_after_the_runs_mark_is_searched() -> None:
    mark = mark_command("x@6.1@T").split("'")[1][3:]  # the line the guest's kmsg gets
    dmesg = f"{REPORTS['bug']}\n[ 5.0] {mark}\n[ 6.0] after\n"
    assert after_mark(dmesg, "x@6.1@T") == "[ 6.0] after\n"
    assert after_mark("no mark\n", "x@6.1@T") == "no mark\n"  # the ring buffer wrapped: all of it


def experiment(tmp_path: Path, **extra: object):
    (tmp_path / "e").mkdir(exist_ok=True)
    spec = tmp_path / "e" / "experiment.yaml"
    spec.write_text(yaml.safe_dump({"title": "t", "description": "d", "run": {"steps": [
        {"name": "s", "cmd": "true"}]}, "expect": [{"contains": "x"}], **extra}))
    return spec


def test_splats_expected_must_name_known_classes_and_a_reason(tmp_path: Path) -> None:
    with pytest.raises(KernlabError, match=r"splats\.expected\[0\]: unknown splat class 'warn'"):
        parse_experiment(experiment(tmp_path, splats={"expected": ["warn"], "reason": "r"}))
    with pytest.raises(KernlabError, match=r"splats\.reason: .*say why"):
        parse_experiment(experiment(tmp_path, splats={"expected": ["warning"]}))
    exp = parse_experiment(experiment(tmp_path, splats={"expected": ["warning"], "reason": "on purpose"}))
    assert exp.splats_expected == ["warning"]


def passed_bundle(tmp_path: Path) -> Bundle:
    bundle = Bundle.create("e", "6.1", tmp_path / "results")
    bundle.outcomes = [Outcome("seen", "contains", True, "1 line")]
    bundle.settle()
    return bundle


def test_an_unexpected_splat_fails_a_passing_run_with_its_first_line(tmp_path: Path) -> None:
    exp, bundle = parse_experiment(experiment(tmp_path)), passed_bundle(tmp_path)
    check(exp, bundle, WARN, "")
    assert not bundle.passed
    assert bundle.reason.startswith("kernel splat: warning: WARNING: CPU: 1 PID: 231 at /tmp/m/kl_splat.c:15")
    assert "full text: splats.txt" in bundle.reason
    assert "Call Trace:" in (bundle.dir / "splats.txt").read_text()
    assert bundle.facts["splats"][0] == {"class": "warning", "expected": False,
                                         "line": bundle.facts["splats"][0]["line"]}


def test_an_expected_splat_is_recorded_and_the_run_still_passes(tmp_path: Path) -> None:
    exp = parse_experiment(experiment(tmp_path, splats={"expected": ["warning"], "reason": "r"}))
    bundle = passed_bundle(tmp_path)
    check(exp, bundle, None, WARN)  # no dmesg (a lost guest): the console alone
    assert bundle.passed and bundle.facts["splats"][0]["expected"] is True
    assert bundle.facts["splat_sources"] == ["console"]


def test_one_report_in_dmesg_and_console_counts_once(tmp_path: Path) -> None:
    exp, bundle = parse_experiment(experiment(tmp_path)), passed_bundle(tmp_path)
    check(exp, bundle, WARN, WARN.replace("[   41.1234", "[   41.5"))
    assert len(bundle.facts["splats"]) == 1


def test_the_matrix_has_a_splat_section() -> None:
    matrix = Matrix(["4.15", "6.1"], ["readiter"])
    found = {"status": "FAIL", "splats": [{"class": "warning", "line": "WARNING: CPU: 0 PID: 1 at x",
                                           "expected": False}]}
    for kernel, extra in (("4.15", {"status": "PASS", "splats": []}), ("6.1", found)):
        result = RunResult({"experiment": "readiter", "kernel": kernel, "passed": False, **extra})
        matrix.cells[(kernel, "readiter")] = Cell(kernel, "readiter", extra["status"], result=result)
    text = "\n".join(splat_report.markdown_section(matrix))
    assert "| readiter | none | 1 warning |" in text
    assert "- 6.1 readiter: warning (unexpected): WARNING: CPU: 0 PID: 1 at x" in text
