"""The catalog and the command line's answers to bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kernlab.core.errors import KernlabError
from kernlab.kernel.catalog import load_catalog

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, check=False)


def test_shipped_catalog_has_the_lab_kernels():
    catalog = load_catalog()
    assert {"4.15", "5.4", "5.4.0", "5.10", "6.1"} <= set(catalog.kernels)
    assert catalog.kernel("5.4").release.startswith("5.4.")  # a 5.4.y stable by default
    assert catalog.kernel("5.4.0").sources[0].options["sha256"].startswith("bf338980")


def test_unknown_version_lists_the_known_ones():
    done = invoke("build-kernel", "--version", "9.99")
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "unknown kernel version '9.99'" in last and "6.1" in last and "4.15" in last


def test_plan_needs_no_network_and_shows_inputs():
    done = invoke("build-kernel", "--version", "4.15", "--plan", env={"KERNLAB_MIRROR": "http://192.0.2.1"})
    assert done.returncode == 0, done.stderr
    assert "http://192.0.2.1/v4.x/linux-4.15.tar.xz sha256=5a26478906d5" in done.stdout
    assert "lab.config" in done.stdout and "gcc" in done.stdout


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ("    config:\n      base: allyesconfig\n", "kernels.6.1.config.base: 'allyesconfig' is not one of"),
        ("    sources:\n      - ftp: {url: x}\n", "kernels.6.1.sources[0]: unknown source type 'ftp'"),
    ],
)
def test_catalog_errors_name_file_and_key(tmp_path, monkeypatch, mutation, message):
    (tmp_path / "lab.config").write_text("CONFIG_MODULES=y\n")
    key = mutation.split(":")[0].strip()
    entry = {"sources": "    sources:\n      - debian: {package: linux-source-6.1}\n",
             "config": "    config:\n      base: tinyconfig\n      fragments: [lab.config]\n"}
    entry[key] = mutation
    text = "kernels:\n  '6.1':\n    release: 6.1.1\n    compiler: gcc\n" + "".join(entry.values())
    (tmp_path / "kernels.yaml").write_text(text)
    monkeypatch.setenv("KERNLAB_CONFIGS", str(tmp_path))
    with pytest.raises(KernlabError) as caught:
        load_catalog()
    assert str(tmp_path / "kernels.yaml") in str(caught.value)
    assert message in str(caught.value)
