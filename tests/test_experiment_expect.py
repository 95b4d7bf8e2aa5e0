"""Expectations, trace filtering, histograms and the guest driver (run on the host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernlab.core.records import Manifest
from kernlab.core.spec import SpecFile
from kernlab.experiments.bundle import Bundle, hist_svg, parse_hist
from kernlab.experiments.collect import filter_trace, parse_cmdlines
from kernlab.experiments.expect import Evidence, check, check_all, parse_expectation
from kernlab.experiments.suite import load_all

TRACE = """\
        readiter-2425  [000] ....  5644.654744: bpf_trace_printk: copy_page_to_iter offset=0 bytes=42
            sshd-100   [001] ....  5644.654750: bpf_trace_printk: unrelated
        readiter-2425  [000] d...  5644.654793: bpf_trace_printk: copyout to=7ffd len=42 data=KERNLAB
"""


def expectation(item: dict, steps=("load", "workload")):
    def fail(key, msg):
        raise AssertionError(f"{key}: {msg}")

    known = SpecFile(Path("experiment.yaml"), "see the format").known
    return parse_expectation(item, 0, list(steps), fail, known)


def evidence(trace: str = TRACE, **steps: str) -> Evidence:
    texts = {"trace": trace, "output": "\n".join(steps.values())}
    texts |= {f"step:{k}": v for k, v in steps.items()}
    return Evidence(texts=texts, exits={k: 0 for k in steps})


def test_contains_counts_lines():
    ok = check(expectation({"contains": "readiter-\\d+", "min": 2, "max": 2}), evidence())
    assert ok.passed and len(ok.matched) == 2
    too_many = check(expectation({"contains": "readiter", "max": 1}), evidence())
    assert not too_many.passed and "2 matching lines" in too_many.detail


def test_absent():
    assert check(expectation({"absent": "panic"}), evidence()).passed
    hit = check(expectation({"absent": "unrelated"}), evidence())
    assert not hit.passed and hit.matched == [TRACE.splitlines()[1]]


def test_sequence_order_matters():
    good = expectation({"sequence": ["copy_page_to_iter", "copyout"]})
    assert check(good, evidence()).passed
    bad = check(expectation({"sequence": ["copyout", "copy_page_to_iter"]}), evidence())
    assert not bad.passed
    assert "item 2/2 'copy_page_to_iter' not found after" in bad.detail


def test_value_every_match_must_fit():
    exp = expectation({"value": "variable1=(\\d+)", "equals": 92})
    assert check(exp, evidence("variable1=92\nvariable1=92\n")).passed
    mixed = check(exp, evidence("variable1=92\nvariable1=91\n"))
    assert not mixed.passed and "92, 91" in mixed.detail
    assert not check(exp, evidence("nothing here\n")).passed
    ranged = expectation({"value": "^\\[4K, 8K\\)\\s+(\\d+)", "min": 256})
    assert check(ranged, evidence("[4K, 8K)   300 |@@@@|\n")).passed


def test_rejected_needs_failure_and_message():
    exp = expectation({"rejected": {"step": "load", "message": "map_value_or_null"}})
    log = "R0 invalid mem access 'map_value_or_null'\n"
    rejected = Evidence(texts={"step:load": log}, exits={"load": 1})
    assert check(exp, rejected).passed
    loaded = Evidence(texts={"step:load": "klload: all programs loaded\n"}, exits={"load": 0})
    assert "was not rejected" in check(exp, loaded).detail
    other = Evidence(texts={"step:load": "some other error\n"}, exits={"load": 1})
    assert not check(exp, other).passed


def test_exit_codes():
    exp = expectation({"exit": {"step": "workload", "code": "nonzero"}})
    assert check(exp, Evidence(texts={}, exits={"workload": 3})).passed
    assert not check(exp, Evidence(texts={}, exits={"workload": 0})).passed
    assert not check(exp, Evidence(texts={}, exits={"workload": None})).passed


def test_variables_in_patterns():
    exp = expectation({"contains": "hellotrace: ${WRITE_SYM} fd=1"})
    ev = evidence("x: hellotrace: __x64_sys_write fd=1 count=15\n")
    assert check(exp, ev, {"WRITE_SYM": "__x64_sys_write"}).passed
    assert not check(exp, ev, {"WRITE_SYM": "SyS_write"}).passed


@pytest.mark.parametrize("exp", load_all(), ids=lambda e: e.name)
def test_no_experiment_passes_on_nothing(exp):
    """Every experiment can fail: with nothing collected, some expectation fails."""
    steps = [s.name for s in exp.steps]
    empty = Evidence(texts={"trace": "", "output": "", **{f"step:{s}": "" for s in steps}},
                     exits=dict.fromkeys(steps, 0))
    outcomes = check_all(exp.expectations, empty)
    assert not all(o.passed for o in outcomes), exp.name


def test_filter_trace_by_comm():
    kept = filter_trace(TRACE, ["readiter"])
    assert "sshd" not in kept and kept.count("readiter-2425") == 2
    assert filter_trace(TRACE, []) == TRACE


def test_filter_trace_names_unknown_comms_by_pid():
    raw = ("           <...>-127     [001] ....1    27.77: bpf_trace_printk: mine\n"
           "           <...>-128     [001] ....1    27.78: bpf_trace_printk: other\n"
           "         file-io-129     [000] ....1    27.79: bpf_trace_printk: dashed\n")
    names = parse_cmdlines("127 readiter\n128 sshd\n")
    assert filter_trace(raw, ["readiter", "file-io"], names).splitlines() == [
        raw.splitlines()[0].replace("   <...>", "readiter"), raw.splitlines()[2]]


HIST = """\
Attaching 1 probe...
@bytes:
[0]                    1 |                                                    |
[1]                    0 |                                                    |
[4K, 8K)             256 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
"""


def test_hist_parse_and_render():
    (hist,) = parse_hist(HIST)
    assert hist["name"] == "@bytes"
    assert hist["buckets"][-1] == {"low": "4K", "high": "8K", "count": 256}
    svg = hist_svg(hist)
    assert svg.startswith("<svg") and "[4K, 8K)" in svg and ">256<" in svg


def test_bundle_marks_failures(tmp_path):
    bundle = Bundle.create("readiter", "6.1", tmp_path)
    bundle.fail("SSH connection lost mid-run")
    bundle.settle()
    bundle.finish(Manifest.from_json({"host": {}}))
    result = json.loads((bundle.dir / "result.json").read_text())
    assert result["status"] == "FAIL" and result["reason"] == "SSH connection lost mid-run"
    assert bundle.dir.parent == tmp_path / "readiter" / "6.1"
    assert "manifest.json" in result["files"]


DRIVER = Path(__file__).resolve().parent.parent / "kernlab" / "experiments" / "driver.py"


def run_driver(tmp_path: Path, steps: list[dict], **trace) -> dict:
    """The real guest driver on the host, with a FIFO standing in for trace_pipe."""
    tracefs = tmp_path / "tracefs"
    tracefs.mkdir()
    (tracefs / "trace").write_text("old\n")
    os.mkfifo(tracefs / "trace_pipe")
    work = tmp_path / "work"
    work.mkdir()
    plan = {"workdir": str(work), "outdir": str(work / "out"), "timeout": 30,
            "env": {"KL_PIPE": str(tracefs / "trace_pipe")},
            "trace": {"dir": str(tracefs), "max_bytes": 4096, "max_seconds": 20, **trace},
            "steps": steps}
    (work / "plan.json").write_text(json.dumps(plan))
    subprocess.run([sys.executable, str(DRIVER), "plan.json"], cwd=work, check=True,
                   timeout=60, capture_output=True)
    assert (tracefs / "trace").read_text() == ""  # cleared before the run
    return {"driver": json.loads((work / "out" / "driver.json").read_text()),
            "steps": json.loads((work / "out" / "steps.json").read_text())["steps"],
            "out": work / "out"}


def test_driver_background_ready_and_stop(tmp_path):
    # The trap is set before "ready" (the stop can follow the marker at once), and the
    # loop waits with `wait`: a SIGINT that lands as a foreground `sleep` exits normally
    # is dropped by bash (it assumes the child handled it), and the loader never stops.
    loader = ("trap 'echo stopped by INT; exit 0' INT; echo starting; echo 'kl: ready'; "
              "while :; do sleep 0.05 & wait $!; done")
    writer = "echo '  readiter-7 [000] ....: hello' > $KL_PIPE; echo wrote"
    run = run_driver(tmp_path, [
        {"name": "load", "cmd": loader, "background": True, "ready": "^kl: ready$"},
        {"name": "workload", "cmd": writer, "timeout": 10}])
    assert run["driver"]["status"] == "done"
    load, work = run["steps"]
    assert load["stopped"] and load["exit"] == 0 and work["exit"] == 0
    assert "stopped by INT" in (run["out"] / "steps" / "load.log").read_text()
    assert "readiter-7" in (run["out"] / "trace.raw").read_text()


def test_driver_timeout_keeps_partial_output(tmp_path):
    run = run_driver(tmp_path, [
        {"name": "workload", "cmd": "echo partial; sleep 30", "timeout": 1},
        {"name": "never", "cmd": "echo never"}])
    assert run["driver"]["status"] == "failed"
    assert "step workload timed out after 1s" in run["driver"]["reason"]
    assert [s["name"] for s in run["steps"]] == ["workload"]
    assert run["steps"][0]["timed_out"]
    assert (run["out"] / "steps" / "workload.log").read_text() == "partial\n"


def test_driver_size_limit(tmp_path):
    flood = "python3 -c \"import os; open(os.environ['KL_PIPE'], 'w').write('x' * 10000)\""
    run = run_driver(tmp_path, [{"name": "workload", "cmd": flood}], max_bytes=1000)
    assert run["driver"]["capture"]["bytes"] == 1000
    assert run["driver"]["capture"]["truncated"]


def test_driver_ready_never_comes(tmp_path):
    run = run_driver(tmp_path, [
        {"name": "load", "cmd": "echo 'verifier says no'; exit 1", "background": True,
         "ready": "kl: ready"},
        {"name": "workload", "cmd": "echo hi"}])
    assert run["driver"]["status"] == "failed"
    assert "exited 1 before printing 'kl: ready'" in run["driver"]["reason"]


def test_driver_stops_everything_on_sigterm_within_two_seconds(tmp_path):
    """SIGTERM to the driver's process group (what the host sends on Ctrl-C): the running
    step is killed, the background one gets its stop signal, the records say interrupted,
    out/pgids lists the step groups, and no step is left."""
    import signal
    import time

    tracefs = tmp_path / "tracefs"
    tracefs.mkdir()
    (tracefs / "trace").write_text("")
    os.mkfifo(tracefs / "trace_pipe")
    work = tmp_path / "work"
    work.mkdir()
    steps = [{"name": "load", "cmd": "echo 'kl: ready'; exec sleep 600", "background": True,
              "ready": "kl: ready"},
             {"name": "workload", "cmd": "echo working; sleep 600", "timeout": 900}]
    (work / "plan.json").write_text(json.dumps({
        "workdir": str(work), "outdir": str(work / "out"), "timeout": 900, "env": {},
        "trace": {"dir": str(tracefs), "max_bytes": 4096, "max_seconds": 900}, "steps": steps}))
    driver = subprocess.Popen([sys.executable, str(DRIVER), "plan.json"], cwd=work, start_new_session=True,
                              stdout=subprocess.DEVNULL)
    log = work / "out" / "steps" / "workload.log"
    deadline = time.monotonic() + 30
    while not (log.is_file() and "working" in log.read_text()):
        assert time.monotonic() < deadline and driver.poll() is None
        time.sleep(0.05)
    sent = time.monotonic()
    os.killpg(driver.pid, signal.SIGTERM)
    assert driver.wait(timeout=10) == 0
    assert time.monotonic() - sent < 2.0
    status = json.loads((work / "out" / "driver.json").read_text())
    load, workload = json.loads((work / "out" / "steps.json").read_text())["steps"]
    assert (status["status"], status["reason"]) == ("failed", "interrupted")
    assert load["stopped"] and load["exit"] == -signal.SIGINT
    assert workload["exit"] == -signal.SIGKILL
    groups = [int(line) for line in (work / "out" / "pgids").read_text().split()]
    assert groups == [load["pid"], workload["pid"]]
    for group in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)


def test_a_comm_the_tracer_printed_as_dots_is_shown_by_its_name():
    """`<...>-112` (a short-lived cat the tracer had not remembered yet) becomes `cat-112`
    in trace.txt, so an expectation on `cat-\\d+` sees it (CI once failed a shell skeleton so)."""
    raw = ("           <...>-112     [000] .....    15.60: kl_my_shell: (vfs_read+0x0/0x174)\n"
           "           <...>-113     [000] .....    15.61: kl_my_shell: (vfs_read+0x0/0x174)\n"
           "           <...>-999     [000] .....    15.62: kl_my_shell: (vfs_read+0x0/0x174)\n")
    names = parse_cmdlines("112 cat\n113 a-very-long-comm\n")
    lines = filter_trace(raw, [], names).splitlines()
    assert lines[0] == "             cat-112     [000] .....    15.60: kl_my_shell: (vfs_read+0x0/0x174)"
    assert lines[1].startswith("a-very-long-comm-113 ") and lines[2] == raw.splitlines()[2]
    assert filter_trace(raw, ["cat"], names).splitlines() == [lines[0]]
