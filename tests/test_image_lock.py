"""kernlab.lock pins the image too: a changed recipe file or package version is refused, named."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kernlab.core import paths

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # needs the real lab image (lab_image builds it when missing)


def invoke(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, env={**os.environ, **env}, timeout=1800)


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


def test_lock_refuses_other_package_versions_until_accepted(lab_kernel, lab_image, tmp_path):
    lock_file = tmp_path / "kernlab.lock"
    env = {"KERNLAB_LOCK": str(lock_file)}
    assert invoke("lock", "--image", "bookworm", env=env).returncode == 0
    locked = json.loads(lock_file.read_text())["images"]["bookworm"]
    real = dict(p.split("=", 1) for p in lab_image.data["packages"])
    assert locked["packages"] == real
    assert set(locked["files"]) == {"vm/bookworm.yaml", "vm/init", "vm/fstab"}
    assert invoke("build-image", env=env).returncode == 0  # the lock agrees with the image

    # The archive "moved on": the lock holds a version the image does not have.
    data = json.loads(lock_file.read_text())
    data["images"]["bookworm"]["packages"]["bpftrace"] = "0.0-locked"
    lock_file.write_text(json.dumps(data))
    refused = invoke("build-image", env=env)
    assert refused.returncode == 1
    line = last_line(refused)
    assert f"packages: bpftrace changed from 0.0-locked to {real['bpftrace']}" in line
    assert "invoke build-image --recipe bookworm --update-lock" in line
    assert Path(lab_image.data["image"]["path"]).is_file()  # the image is kept, only not used

    # Experiments refuse the same image (they build it through the same call).
    run = invoke("run-experiment", "hellotrace", "--kernel", "6.1", env=env)
    assert run.returncode == 1 and "packages: bpftrace changed from 0.0-locked" in last_line(run)

    accepted = invoke("build-image", "--update-lock", env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(lock_file.read_text())["images"]["bookworm"]["packages"]["bpftrace"] == real["bpftrace"]
    assert invoke("build-image", env=env).returncode == 0


def test_lock_refuses_a_changed_init_before_building(lab_image, tmp_path):
    lock_file = tmp_path / "kernlab.lock"
    env = {"KERNLAB_LOCK": str(lock_file), "KERNLAB_STATE": str(paths.state_dir()),
           "KERNLAB_WORK": str(paths.work_dir())}
    assert invoke("lock", "--image", "bookworm", env=env).returncode == 0

    project = tmp_path / "project"  # the same project with one edited guest file
    shutil.copytree(ROOT / "vm", project / "vm")
    init = project / "vm" / "init"
    init.write_text(init.read_text() + "# a local edit\n")
    locked_init = json.loads(lock_file.read_text())["images"]["bookworm"]["files"]["vm/init"]
    edited_init = hashlib.sha256(init.read_bytes()).hexdigest()
    env["KERNLAB_ROOT"] = str(project)
    images_before = sorted(p.name for p in (paths.state_dir() / "images").iterdir())

    refused = invoke("build-image", env=env)
    assert refused.returncode == 1
    cause = last_line(refused).split(";")[0]
    assert "inputs of image bookworm differ from" in cause
    assert cause.endswith("files: vm/init changed from " + locked_init[:16] + " to " + edited_init[:16])
    assert sorted(p.name for p in (paths.state_dir() / "images").iterdir()) == images_before  # nothing built
