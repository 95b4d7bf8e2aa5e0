"""Every experiment builds on the host (clang BPF objects, gcc loaders), and is cached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kernlab.core.errors import KernlabError
from kernlab.core.records import BuildRecord
from kernlab.experiments.build import build_experiment
from kernlab.experiments.fit import resolve_vars
from kernlab.experiments.suite import load_all, load_experiment

# The host's own UAPI headers stand in for a kernel's headers_install output: same
# layout (linux/, asm/), so the real compilers run on the real sources.
HOST_BUILD = BuildRecord.from_json({"version": "6.1", "kernelrelease": "6.1.192-kernlab", "key": "host-uapi",
                                    "build_dir": "/nonexistent/6.1-host-uapi",
                                    "outputs": {"headers": {"path": "/usr/include"}}})
BUILDABLE = [e for e in load_all() if "samples_bpf" not in e.outputs]


def variables(exp) -> dict[str, str]:
    return {**resolve_vars(exp, "6.1.192"), "SYM_copyout": "copyout"}


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KERNLAB_WORK", str(tmp_path / "work"))
    return tmp_path


@pytest.mark.parametrize("exp", BUILDABLE, ids=lambda e: e.name)
def test_experiment_builds(work, exp):
    built = build_experiment(exp, HOST_BUILD, variables(exp), work / "build.log")
    for step in exp.build:
        if step.kind in ("bpf", "program"):
            assert (built / step.out).is_file(), step.out
    bpf = [s.out for s in exp.build if s.kind == "bpf"]
    for obj in bpf:
        assert (built / obj).read_bytes()[:4] == b"\x7fELF"
    assert not exp.build or "# exit 0" in (work / "build.log").read_text()  # notrace builds nothing


def test_build_is_cached_and_keyed_by_variables(work):
    exp = load_experiment("hellotrace")
    first = build_experiment(exp, HOST_BUILD, variables(exp), work / "a.log")
    again = build_experiment(exp, HOST_BUILD, variables(exp), work / "b.log")
    assert again == first and "cached build reused" in (work / "b.log").read_text()
    other = build_experiment(exp, HOST_BUILD, {**variables(exp), "WRITE_SYM": "ksys_write"},
                             work / "c.log")
    assert other != first


def test_uprobe_offset_is_found_in_the_binary(work):
    exp = load_experiment("uprobe-local")
    built = build_experiment(exp, HOST_BUILD, variables(exp), work / "build.log")
    offsets = dict(line.split("=") for line in (built / "offsets.env").read_text().split())
    assert 10 <= int(offsets["FOO1_OFFSET"]) <= 40
    assert int(offsets["VAR_DISP"]) < 0


def test_broken_source_names_the_log(work, tmp_path):
    root = tmp_path / "experiments"
    shutil.copytree(load_experiment("readiter").dir.parent, root)
    (root / "readiter" / "readiter.c").write_text("int main(void) { return nope; }\n")
    exp = load_experiment("readiter", root)
    with pytest.raises(KernlabError) as info:
        build_experiment(exp, HOST_BUILD, variables(exp), work / "build.log")
    assert "gcc readiter.c failed" in str(info.value)
    assert str(work / "build.log") in str(info.value)
    assert "nope" in info.value.details
