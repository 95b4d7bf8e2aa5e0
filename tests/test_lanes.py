"""A suite's lanes (kernlab.experiments.lanes) without VMs: how many, in which order, who
takes what, and how an error or Ctrl-C in one lane stops the others. Real threads; the
work is a stand-in that polls ``interrupt.check()`` as kernlab.guest.remote does. The real
suite in lanes, its VMs and its Ctrl-C: tests/test_experiment_slow.py, test_faults_vm.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kernlab.core import interrupt
from kernlab.core.errors import KernlabError
from kernlab.core.progress import Plain, Reporter
from kernlab.experiments import lanes
from kernlab.experiments.lanes import (
    UNKNOWN_SECONDS,
    available_gib,
    lane_count,
    last_seconds,
    longest_first,
    run_lanes,
)

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- how many
def test_lanes_come_from_the_flag_then_the_environment_and_never_exceed_the_work(monkeypatch):
    monkeypatch.setenv("KERNLAB_LANES", "3")
    assert lane_count(None, 13) == 3
    assert lane_count("2", 13) == 2  # --lanes wins over KERNLAB_LANES
    assert lane_count(4, 2) == 2  # never more lanes than experiments to run
    assert lane_count(None, 0) == 1


@pytest.mark.parametrize(("asked", "env", "named"), [
    ("0", None, "--lanes='0'"), ("two", None, "--lanes='two'"), (None, "-1", "KERNLAB_LANES='-1'")])
def test_a_bad_number_of_lanes_names_where_it_came_from(monkeypatch, asked, env, named):
    if env is not None:
        monkeypatch.setenv("KERNLAB_LANES", env)
    with pytest.raises(KernlabError) as error:
        lane_count(asked, 5)
    assert error.value.one_line().startswith(f"{named} is not a number of lanes; give a whole number")


def test_the_default_is_one_lane_more_than_the_cores_within_memory(monkeypatch, tmp_path):
    monkeypatch.delenv("KERNLAB_LANES", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(lanes, "available_gib", lambda: 22.0)
    assert lane_count(None, 13) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert lane_count(None, 13) == lanes.MAX_DEFAULT_LANES
    monkeypatch.setattr(lanes, "available_gib", lambda: 5.5)  # room for two 2 GiB guests
    assert lane_count(None, 13) == 2
    monkeypatch.setattr(lanes, "available_gib", lambda: 1.0)
    assert lane_count(None, 13) == 1


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24576000 kB\nMemAvailable:    8388608 kB\n")
    assert available_gib(meminfo) == 8.0
    assert available_gib(tmp_path / "absent") >= lanes.GIB_PER_LANE * lanes.MAX_DEFAULT_LANES


def test_the_cli_refuses_bad_lanes_before_any_work(tmp_path):
    env = {**os.environ, "KERNLAB_RESULTS": str(tmp_path / "results")}
    for args in (["matrix", "--kernels", "6.1", "--lanes", "0"],
                 ["run-experiment", "--all", "--kernel", "6.1", "--lanes", "many"],
                 ["run-experiment", "readiter", "--lanes", "2"]):
        done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().startswith("kernlab: error: ") and "lanes" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "results").exists()


# ---------------------------------------------------------------- in which order
def test_last_seconds_reads_the_newest_bundle_of_that_kernel(tmp_path):
    for stamp, seconds in (("20261126T100000Z", 4.0), ("20261126T120000Z", 11.5)):
        bundle = tmp_path / "bcc-opensnoop" / "6.1" / stamp
        bundle.mkdir(parents=True)
        (bundle / "result.json").write_text(json.dumps({"seconds": seconds}))
    broken = tmp_path / "readiter" / "6.1" / "20261126T130000Z"
    broken.mkdir(parents=True)
    (broken / "result.json").write_text("{not json")
    assert last_seconds(tmp_path, "bcc-opensnoop", "6.1") == 11.5
    assert last_seconds(tmp_path, "readiter", "6.1") == UNKNOWN_SECONDS


def test_a_kernel_with_no_bundle_takes_the_newest_from_another_kernel(tmp_path):
    """The first suite on a kernel still sends the long experiments out first (in a fresh
    clone the thesis grid's 4.15 column ran xdp-ipstats-bcc, the longest, among the last)."""
    for kernel, stamp, seconds, status in (("6.1", "20261126T100000Z", 40.0, "PASS"),
                                           ("5.4.286", "20261126T120000Z", 43.5, "FAIL"),
                                           ("4.15", "20261126T130000Z", 0.0, "n/a")):
        bundle = tmp_path / "xdp-ipstats-bcc" / kernel / stamp
        bundle.mkdir(parents=True)
        (bundle / "result.json").write_text(json.dumps({"seconds": seconds, "status": status}))
    assert last_seconds(tmp_path, "xdp-ipstats-bcc", "6.12") == 43.5  # the newest that ran
    assert last_seconds(tmp_path, "xdp-ipstats-bcc", "4.15") == 43.5  # its own n/a does not count
    assert last_seconds(tmp_path, "xdp-ipstats-bcc", "6.1") == 40.0  # its own kernel first
    assert last_seconds(tmp_path, "hellotrace", "6.12") == UNKNOWN_SECONDS


def test_longest_goes_first_and_ties_keep_their_order():
    seconds = {"readiter": 2, "bcc": 12, "cpustat": 5, "passfd": 2}
    assert longest_first(list(seconds), seconds.get) == ["bcc", "cpustat", "readiter", "passfd"]


# ---------------------------------------------------------------- who takes what
def _work(seconds: dict[str, float], taken: dict[str, list[str]]):
    def run_one(item: str, lane: str) -> str:
        taken.setdefault(lane, []).append(item)
        deadline = time.monotonic() + seconds[item]
        while time.monotonic() < deadline:  # as remote.run polls while a guest command runs
            interrupt.check()
            time.sleep(0.01)
        return f"{item}@{lane}"
    return run_one


def test_a_free_lane_takes_the_next_item_and_results_keep_the_items_order():
    seconds = {"long": 0.6, "a": 0.1, "b": 0.1, "c": 0.1}
    taken: dict[str, list[str]] = {}
    started = time.monotonic()
    results = run_lanes(list(seconds), ["vm", "vm-l2"], _work(seconds, taken))
    took = time.monotonic() - started
    assert [r.split("@")[0] for r in results] == ["long", "a", "b", "c"]
    assert sorted(taken.values()) == [["a", "b", "c"], ["long"]]  # the short ones share a lane
    assert took < 0.6 + 0.25, f"{took:.2f}s: the lanes did not run side by side"
    assert threading.active_count() == 1 or all(
        not t.name.startswith("kernlab-lane") for t in threading.enumerate())


def test_a_lane_still_running_when_the_main_lane_is_done_is_waited_for(monkeypatch):
    """The main lane ran out of work while lane 2 still compiled a bcc program: the suite
    waited JOIN_TIMEOUT (30 s), then called the run interrupted and stopped lane 2's VM
    under it (a 6-experiment matrix on 5.4.286 ended `interrupted`, its bcc bundle empty)."""
    monkeypatch.setattr("kernlab.experiments.lanes.JOIN_TIMEOUT", 0.2)

    def run_one(item: str, lane: str) -> str:  # lane 2's item outlasts the timeout
        time.sleep(1.0 if lane == "vm-l2" else 0.05)
        return f"{item}@{lane}"

    results = run_lanes(["a", "b"], ["vm", "vm-l2"], run_one)
    assert sorted(r.split("@")[1] for r in results) == ["vm", "vm-l2"]


def test_an_error_in_another_lane_stops_the_suite_after_the_running_items():
    def run_one(item: str, lane: str) -> str:
        if item == "refused":
            raise KernlabError("VM x is running another kernel", "stop it first")
        time.sleep(0.2)
        return item

    with pytest.raises(KernlabError, match="another kernel"):
        run_lanes(["slow", "refused", "never-1", "never-2", "never-3"], ["a", "b"], run_one)


def test_the_next_kernels_lanes_run_after_a_lane_failed_on_the_kernel_before():
    """A matrix runs one kernel's suite after another in one process: a lane that failed on the
    first kernel (its error reported there) must not leave the second kernel's lanes stopped
    (ci on 5.4.286,6.1 ended in `KeyError: 0` and never ran 6.1)."""
    def failing(item: str, lane: str) -> str:
        if item == "dies":
            raise KernlabError("VM lab-l2 is not running: QEMU exited", "boot it again")
        time.sleep(0.1)
        return item

    with pytest.raises(KernlabError, match="QEMU exited"):
        run_lanes(["ok", "dies", "later"], ["lab", "lab-l2"], failing)
    assert run_lanes(["a", "b", "c"], ["lab", "lab-l2"], lambda item, lane: item) == ["a", "b", "c"]


def test_ctrl_c_in_the_main_lane_stops_the_other_lanes_running_items():
    taken: dict[str, list[str]] = {}
    stopped: list[str] = []
    work = _work(dict.fromkeys(("first", "second", "queued"), 30.0), taken)

    def run_one(item: str, lane: str) -> str:
        if lane == "main":
            time.sleep(0.3)
            raise KeyboardInterrupt  # as SIGINT raises it in the main thread
        try:
            return work(item, lane)
        except KeyboardInterrupt:
            stopped.append(item)
            raise

    started = time.monotonic()
    with interrupt.scope(), pytest.raises(KeyboardInterrupt):
        run_lanes(["first", "second", "queued"], ["main", "l2"], run_one)
    assert time.monotonic() - started < 5.0
    assert stopped == taken["l2"] and len(stopped) == 1  # the other lane's running item
    assert "queued" not in taken["l2"]
    assert not [t for t in threading.enumerate() if t.name.startswith("kernlab-lane")]


# ---------------------------------------------------------------- what the user reads
def test_a_lanes_progress_lines_say_which_lane_at_the_suites_depth():
    out = io.StringIO()
    report = Reporter(Plain(out))
    with report.step("kernel 6.1: 13 experiments"):
        depth = report.depth

        def lane_two() -> None:
            with report.tagged("lane 2", depth), report.step("experiment readiter"):
                report.note("bundle: /r/readiter")

        thread = threading.Thread(target=lane_two)
        thread.start()
        thread.join()
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert "  > [lane 2] experiment readiter" in lines
    assert "    - [lane 2] bundle: /r/readiter" in lines
    assert lines[0] == "> kernel 6.1: 13 experiments"
