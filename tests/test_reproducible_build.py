"""Builds of the same 6.1 inputs in different directories give the same bzImage (issue 6).

The second build runs in a fresh work area (another ``KERNLAB_WORK``: its own source
tree and build directory at other absolute paths, as in another checkout) and shares
the download cache and ccache with the first, as two checkouts on one machine do.
kernlab maps the tree and build paths out of the debug info (``-fdebug-prefix-map``,
see ``kernlab.build.debug_prefix_maps``), so the DWARF that pahole turns into .BTF is
the same, and ccache reuses the first build's objects. A fresh work area is also a
from-scratch build, so this covers two clean builds in one place as well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def build_in_work_area(work: Path) -> dict:
    """The 6.1 build record from `invoke build-kernel` with KERNLAB_WORK=work."""
    env = {**os.environ, "KERNLAB_WORK": str(work)}
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "build-kernel", "--version", "6.1", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_build_in_another_directory_gives_the_same_bzimage(lab_kernel, tmp_path):
    work = tmp_path / "work"
    second = build_in_work_area(work)
    assert second["key"] == lab_kernel.data["key"]
    assert Path(second["build_dir"]).is_relative_to(work)
    assert not Path(second["tree"]).is_relative_to(Path(lab_kernel.data["tree"]).parent)
    assert second["config_sha256"] == lab_kernel.data["config_sha256"]
    for name in ("bzImage", "vmlinux", "System.map"):
        assert second["outputs"][name]["sha256"] == lab_kernel.data["outputs"][name]["sha256"], name
    shutil.rmtree(work)  # 2.7 GB of tree and build; kept for a look when the test fails


def test_debug_info_paths_are_mapped_for_c_and_assembler():
    from kernlab.kernel.build import make_command, make_plan

    cmd = make_command(make_plan("6.1"), Path("/w/build/k/obj"), Path("/w/src/t"), ["bzImage"])
    maps = "-fdebug-prefix-map=/w/src/t=/kernlab/src -fdebug-prefix-map=/w/build/k/obj=/kernlab/obj"
    assert f"KCFLAGS={maps}" in cmd
    assert f"KAFLAGS={maps}" in cmd
