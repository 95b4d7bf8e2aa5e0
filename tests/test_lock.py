"""kernlab.lock pins a build's inputs; a changed patch is refused with the difference named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from guests import series_of

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False, env={**os.environ, **env}, timeout=3600)


@pytest.mark.slow
def test_lock_refuses_a_changed_patch_and_names_it(lab_kernel, tmp_path):
    env = {"KERNLAB_LOCK": str(tmp_path / "kernlab.lock")}
    done = invoke("lock", "--version", "6.1", env=env)
    assert done.returncode == 0, done.stderr
    locked = json.loads((tmp_path / "kernlab.lock").read_text())["kernels"]["6.1"]
    assert locked["source_sha256"] == lab_kernel.data["source"]["sha256"]
    assert list(locked["patches"]) == series_of("6.1")

    # Same inputs: the lock agrees and the build is up to date.
    assert invoke("build-kernel", "--version", "6.1", env=env).returncode == 0

    # Change one patch (its header only, so it still applies) in a copy of the catalog.
    configs, patches = tmp_path / "configs", tmp_path / "patches-6.1"
    shutil.copytree(ROOT / "configs", configs)
    shutil.copytree(ROOT / "patches" / "6.1", patches)
    patch = patches / "0001-lib-iov_iter-make-copyout-probe-able.patch"
    patch.write_text("A locally edited header line.\n" + patch.read_text())
    catalog = yaml.safe_load((configs / "kernels.yaml").read_text())
    catalog["kernels"]["6.1"]["patches"] = [str(patches)]
    (configs / "kernels.yaml").write_text(yaml.safe_dump(catalog))

    env["KERNLAB_CONFIGS"] = str(configs)
    refused = invoke("build-kernel", "--version", "6.1", env=env)
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert "inputs of kernel 6.1 differ from" in last
    assert "patches: 0001-lib-iov_iter-make-copyout-probe-able.patch changed from" in last
    assert "--update-lock" in last
