"""The suite on a real 6.1 TCG guest: every experiment passes, and can fail.

The module's ``exp_vm`` (t-exp) is lane 1 of the suite, which runs in three lanes (VMs
t-exp-l2 and t-exp-l3 restored beside it, stopped at its end); the tests after it use
t-exp alone. Bundles go to a temporary results dir.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest
from guests import own_vm

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.experiments.run import run_in_session
from kernlab.experiments.session import Session
from kernlab.experiments.suite import experiment_names, load_experiment
from kernlab.experiments.suiterun import run_suite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def exp_vm(lab_kernel, lab_image):
    """This module's own TCG guest (other test modules' VMs come and go meanwhile)."""
    yield from own_vm(lab_kernel, lab_image, "t-exp")


@pytest.fixture(scope="module")
def suite(exp_vm, results) -> dict:
    """Every experiment run once on 6.1 in three lanes, lane 1 the shared VM: {name: bundle}."""
    bundles = run_suite(experiment_names(), kernel="6.1", keep_vm=True, vm_name=exp_vm.name,
                        root=results, lanes=3)
    return {b.experiment: b for b in bundles}


def test_the_suite_ran_side_by_side_in_three_vms_and_stopped_the_two_it_started(suite, exp_vm):
    from kernlab.guest.vm import find_vm

    assert list(suite) == experiment_names()  # bundles in the suite's order, one each
    used = {json.loads((b.dir / "manifest.json").read_text())["vm"]["name"]
            for b in suite.values() if not b.skipped}
    assert used == {exp_vm.name, f"{exp_vm.name}-l2", f"{exp_vm.name}-l3"}
    assert find_vm(f"{exp_vm.name}-l2") is None and find_vm(f"{exp_vm.name}-l3") is None
    assert exp_vm.alive()  # lane 1's VM was the caller's (keep_vm): left running
    spans = sorted(_span(b) for b in suite.values() if not b.skipped)
    (_, first_end), (second_start, _) = spans[:2]
    assert second_start < first_end - 1, f"the first two experiments did not overlap: {spans[:2]}"


def _span(bundle) -> tuple[float, float]:
    """(start, end) of a bundle's run in epoch seconds (``started`` has whole seconds)."""
    result = json.loads((bundle.dir / "result.json").read_text())
    start = datetime.fromisoformat(result["started"].replace("Z", "+00:00")).timestamp()
    return start, start + result["seconds"]


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_passes_on_61(suite, name):
    bundle = suite[name]
    result = json.loads((bundle.dir / "result.json").read_text())
    failed = [e for e in result["expectations"] if not e["passed"]]
    assert result["status"] == "PASS", (result["reason"], failed)
    for item in ("manifest.json", "output.txt", "console.log", "logs/remote.log"):
        assert (bundle.dir / item).is_file(), item
    manifest = json.loads((bundle.dir / "manifest.json").read_text())
    assert manifest["build"]["version"] == "6.1"
    assert manifest["experiment"]["hash"] and manifest["versions"]["qemu"] != "absent"


def test_histogram_is_rendered(suite):
    art = suite["kretprobe-hist"].dir / "artifacts"
    assert (art / "vfs_read_bytes.svg").read_text().startswith("<svg")
    hists = json.loads((art / "vfs_read_bytes.json").read_text())
    assert {"low": "4K", "high": "8K", "count": 256} in hists[0]["buckets"]


def run_changed(exp_vm, results, tmp_path, monkeypatch, name: str, change) -> dict:
    """Run a copy of experiment ``name`` after ``change(folder)``; its result.json."""
    copy = tmp_path / "experiments"
    shutil.copytree(paths.experiments_dir(), copy)
    change(copy / name)
    monkeypatch.setenv("KERNLAB_EXPERIMENTS", str(copy))
    session = Session("6.1", keep_vm=True, vm_name=exp_vm.name)
    bundle = run_in_session(load_experiment(name), session, results)
    return json.loads((bundle.dir / "result.json").read_text())


def failed_names(result: dict) -> set[str]:
    return {e["name"] for e in result["expectations"] if not e["passed"]}


def test_readiter_fails_when_the_file_changes(exp_vm, results, tmp_path, monkeypatch):
    def other_content(folder: Path) -> None:
        (folder / "data.txt").write_text("SOMETHING-ELSE-ENTIRELY-0123456789abcdefg\n")

    result = run_changed(exp_vm, results, tmp_path, monkeypatch, "readiter", other_content)
    assert result["status"] == "FAIL"
    assert failed_names(result) == {"the workload read the file",
                                    "copyout sees the file content"}
    seen = next(e for e in result["expectations"] if e["name"] == "copyout sees the file content")
    assert "0 matching lines" in seen["detail"]


def test_uprobe_local_fails_for_another_input(exp_vm, results, tmp_path, monkeypatch):
    def input_nine(folder: Path) -> None:
        spec = folder / "experiment.yaml"
        spec.write_text(spec.read_text().replace("cmd: ./sample2 8", "cmd: ./sample2 9"))

    result = run_changed(exp_vm, results, tmp_path, monkeypatch, "uprobe-local", input_nine)
    assert "foo1(8) leaves variable1 at 92" in failed_names(result)
    value = next(e for e in result["expectations"] if e["name"].startswith("foo1(8)"))
    assert "values 91" in value["detail"]


def test_verifier_expectation_fails_when_the_program_is_fixed(exp_vm, results, tmp_path,
                                                              monkeypatch):
    def load_fixed(folder: Path) -> None:
        spec = folder / "experiment.yaml"
        spec.write_text(spec.read_text().replace("-l null_deref.bpf.o", "-l fixed.bpf.o"))

    result = run_changed(exp_vm, results, tmp_path, monkeypatch, "verifier", load_fixed)
    assert failed_names(result) == {"unchecked lookup result is rejected"}


def test_workload_timeout_keeps_partial_results(exp_vm, results, tmp_path, monkeypatch):
    def hang(folder: Path) -> None:
        spec = folder / "experiment.yaml"
        spec.write_text(spec.read_text().replace(
            "cmd: ./readiter data.txt\n      timeout: 30",
            "cmd: ./readiter data.txt && echo still-running && sleep 300\n      timeout: 5"))

    result = run_changed(exp_vm, results, tmp_path, monkeypatch, "readiter", hang)
    assert result["status"] == "FAIL"
    assert "step workload timed out" in result["reason"]
    bundle = results / "readiter" / "6.1"
    latest = sorted(p for p in bundle.iterdir() if (p / "result.json").is_file())[-1]
    assert "still-running" in (latest / "steps" / "workload.log").read_text()
    assert "KERNLAB-READITER-CONTENT" in (latest / "trace.txt").read_text()


def test_missing_symbol_is_named(exp_vm, tmp_path, monkeypatch):
    def needs_ghost(folder: Path) -> None:
        spec = folder / "experiment.yaml"
        spec.write_text(spec.read_text().replace("copy_page_to_iter: \"\"",
                                                 "kernlab_no_such_function: \"\""))

    copy = tmp_path / "experiments"
    shutil.copytree(paths.experiments_dir(), copy)
    needs_ghost(copy / "readiter")
    monkeypatch.setenv("KERNLAB_EXPERIMENTS", str(copy))
    with pytest.raises(KernlabError, match=r"kernlab_no_such_function is not in kallsyms of the "
                                           r"6\.1 kernel"):
        run_in_session(load_experiment("readiter"), Session("6.1", keep_vm=True,
                                                            vm_name=exp_vm.name), tmp_path)


LOST = """\
title: the guest powers off mid-run
description: a guest gone mid-run is named, with the console tail
run:
  steps:
    - name: workload
      cmd: echo before; sleep 1; python3 -c "import ctypes; ctypes.CDLL(None).reboot(0x4321fedc)"
      timeout: 60
expect:
  - in: step:workload
    contains: before
"""


def test_ssh_lost_mid_run_is_reported(lab_kernel, lab_image, results, tmp_path, monkeypatch):
    """Its own VM (it dies): the bundle says how it ended and keeps the console."""
    root = tmp_path / "experiments"
    (root / "lost").mkdir(parents=True)
    (root / "lost" / "experiment.yaml").write_text(LOST)
    monkeypatch.setenv("KERNLAB_EXPERIMENTS", str(root))
    session = Session("6.1", vm_name="t-exp-lost")
    try:
        bundle = run_in_session(load_experiment("lost"), session, results)
    finally:
        session.close()
    result = json.loads((bundle.dir / "result.json").read_text())
    assert result["status"] == "FAIL"
    assert result["reason"].startswith("VM t-exp-lost is not running: the guest powered off "
                                       "(reboot: Power down); QEMU (pid ")
    assert "reboot: Power down" in (bundle.dir / "console.log").read_text()
    assert "reboot: Power down" in (bundle.dir / "logs" / "error.log").read_text()
