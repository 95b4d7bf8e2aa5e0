"""The thesis's lesson on real kernels: 5.4.286 and its no-notrace variant, built, booted and
compared through the real `invoke matrix` and `invoke probes` command lines.

On the variant (CONFIG_KPROBE_EVENTS_ON_NOTRACE unset) a kprobe on copy_page_to_iter is
refused with the kernel's own message, readiter is n/a naming the variant, and the probe
atlas says the same before anything boots; on the lab 5.4.286 the kprobe fires.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from guests import ci_build

from kernlab.kernel.kconfig import read_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke"]
VARIANT = "5.4.286+no-notrace"


def invoke(*args: str, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([*INVOKE, *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def builds() -> dict:
    return {v: ci_build(v) for v in ("5.4.286", VARIANT)}


@pytest.fixture(scope="module")
def compared(builds, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("variant-matrix")
    done = invoke("matrix", "--kernels", f"5.4.286,{VARIANT}", "--experiments", "notrace,readiter",
                  "--out", str(out))
    assert "Traceback" not in done.stdout + done.stderr
    data = json.loads((out / "matrix.json").read_text())
    data["cells_by"] = {(c["kernel"], c["experiment"]): c for c in data["cells"]}
    data["report"] = (out / "report.md").read_text()
    data["exit"] = done.returncode
    return data


def test_the_variant_build_says_what_it_is_and_unsets_the_option(builds):
    variant = builds[VARIANT]
    assert variant.id.startswith(f"{VARIANT}-") and variant.version == VARIANT
    assert variant.id != builds["5.4.286"].id
    config = read_config(Path(variant.existing_output("config")))
    assert config.get("KPROBE_EVENTS_ON_NOTRACE", "n") == "n" and config["KPROBE_EVENTS"] == "y"
    assert read_config(Path(builds["5.4.286"].existing_output("config")))["KPROBE_EVENTS_ON_NOTRACE"] == "y"
    listed = invoke("list-kernels")
    assert f"built: {VARIANT}" in listed.stdout, listed.stderr


def test_the_notrace_row_differs_between_the_two_columns_with_the_kernels_message(compared):
    grid = compared["cells_by"]
    assert grid[("5.4.286", "notrace")]["status"] == "PASS"
    assert grid[(VARIANT, "notrace")]["status"] == "PASS", grid[(VARIANT, "notrace")]["reason"]
    lab = (Path(grid[("5.4.286", "notrace")]["bundle"]) / "steps" / "probe.log").read_text()
    refused = (Path(grid[(VARIANT, "notrace")]["bundle"]) / "steps" / "probe.log").read_text()
    assert "kprobe copy_page_to_iter: accepted" in lab and "fired: kernlab_notrace" in lab
    assert "kprobe copy_page_to_iter: refused" in refused
    assert "trace_kprobe: Could not probe notrace function copy_page_to_iter" in refused
    assert f"| 5.4.286 | {VARIANT} |" in compared["report"]


def test_readiter_is_n_a_on_the_variant_naming_it(compared):
    grid = compared["cells_by"]
    assert grid[("5.4.286", "readiter")]["status"] == "PASS"
    cell = grid[(VARIANT, "readiter")]
    assert cell["status"] == "n/a"
    assert cell["reason"] == "needs CONFIG_KPROBE_EVENTS_ON_NOTRACE, which variant no-notrace unsets"
    assert compared["exit"] == 0


def test_the_probe_atlas_agrees_with_the_runs(builds):
    done = invoke("probes", "copy_page_to_iter", "--kernels", f"5.4.286,{VARIANT}")
    assert done.returncode == 0, done.stderr
    lab, _, variant = done.stdout.partition(f"copy_page_to_iter on {builds[VARIANT].id}")
    assert f"copy_page_to_iter on {builds['5.4.286'].id}: attachable" in lab
    assert variant.startswith(": not attachable")
    assert 'refuses it ("trace_kprobe: Could not probe notrace function copy_page_to_iter")' in variant
    assert ("use 5.4.286: this build is its variant no-notrace, which changes "
            "CONFIG_KPROBE_EVENTS_ON_NOTRACE") in variant


def test_a_variant_unsetting_what_another_option_selects_is_reported(builds, tmp_path):
    """TRACING is selected by the tracers the lab config asks for: unsetting it cannot hold,
    and the build stops at the config check naming what selects it (no make)."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    with open(configs / "kernels.yaml", "a") as catalog:
        catalog.write("  keep-tracing:\n    unset: [TRACING]\n")
    done = invoke("build-kernel", "--version", "5.4.286+keep-tracing", "--no-samples",
                  env={"KERNLAB_CONFIGS": str(configs)}, timeout=900)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kernlab: error: config check failed: TRACING=n (variant-keep-tracing.config) "
                           "ended up as y: selected by "), last
    assert "make bzImage" not in done.stdout + done.stderr
