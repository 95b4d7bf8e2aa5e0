"""experiment.yaml: loading, validation errors naming file and key, kernel fit, needs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kernlab.core import paths
from kernlab.core.errors import KernlabError, NotFound
from kernlab.core.records import BuildRecord
from kernlab.experiments.fit import check_needs, na_reason, resolve_vars
from kernlab.experiments.suite import experiment_names, load_all, load_experiment

SUITE = ["bcc-opensnoop", "buffermap", "caller-stack", "file-io", "hellotrace",
         "kretprobe-hist", "notrace", "passfd", "ppos", "readiter", "samples-bpf", "samples-cpustat",
         "tc-ipstats", "uprobe-local", "verifier", "xdp-filter", "xdp-ipstats", "xdp-ipstats-bcc",
         "xdp-ipstats-native", "xdp-ipstats-testrun"]

MINIMAL = """\
title: a tiny experiment
description: shows the format
kernels: {max: "6.1", reason: "a made-up break in 6.2"}
needs:
  config: [BPF_SYSCALL]
  features: {bpf_probe_read_user: "5.5"}
  symbols: {copyout: "build with patches/<v>/"}
run:
  steps:
    - name: workload
      cmd: echo hello
expect:
  - in: step:workload
    contains: hello
"""


def write_exp(root: Path, name: str, text: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiment.yaml").write_text(textwrap.dedent(text))
    return folder / "experiment.yaml"


def load_error(root: Path, text: str) -> str:
    write_exp(root, "broken", text)
    with pytest.raises(KernlabError) as info:
        load_experiment("broken", root)
    return str(info.value)


def test_the_shipped_suite_loads():
    assert experiment_names() == SUITE
    for exp in load_all():
        assert exp.title and exp.description and exp.expectations, exp.name


def test_minimal_experiment(tmp_path):
    write_exp(tmp_path, "tiny", MINIMAL)
    exp = load_experiment("tiny", tmp_path)
    assert exp.steps[0].cmd == "echo hello"
    assert exp.kernel_min is None and exp.kernel_max == "6.1"
    assert exp.features == {"bpf_probe_read_user": "5.5"}
    assert exp.symbols == {"copyout": "build with patches/<v>/"}
    assert exp.capture.trace_pipe is True


def test_unknown_experiment_lists_known_ones(tmp_path):
    write_exp(tmp_path, "tiny", MINIMAL)
    write_exp(tmp_path, "_lib", MINIMAL)  # shared folder, not an experiment
    with pytest.raises(NotFound) as info:
        load_experiment("nope", tmp_path)
    assert "unknown experiment 'nope'" in str(info.value)
    assert "known experiments: tiny" in str(info.value)
    assert "_lib" not in str(info.value)


@pytest.mark.parametrize("text, where", [
    (MINIMAL.replace("title: a tiny experiment\n", ""), "title: is required"),
    (MINIMAL + "colour: red\n", "unknown key 'colour' in the top level"),
    (MINIMAL.replace("cmd: echo hello", "cmd: echo hello\n      timeout: -1"),
     "run.steps[0].timeout: must be > 0"),
    (MINIMAL.replace("name: workload", "name: Work Load"), "run.steps[0].name: must match"),
    (MINIMAL.replace('max: "6.1"', "max: six"), "kernels.max: must be a kernel version"),
    (MINIMAL.replace("contains: hello", "contains: '(unclosed'"),
     "expect[0].contains: bad regular expression"),
    (MINIMAL.replace("in: step:workload", "in: step:other"),
     "expect[0].in: no step named 'other'"),
    (MINIMAL.replace("contains: hello", "contains: hello\n    maximum: 3"),
     "unknown key 'maximum' in expect[0]"),
    (MINIMAL.replace("contains: hello", "value: hello\n    equals: 1"),
     "expect[0].value: needs one (group)"),
    (MINIMAL.replace("      cmd: echo hello", "      cmd: echo hello\n      background: true"),
     "run.steps: needs at least one foreground step"),
    ("title: [unclosed", "not valid YAML"),
])
def test_errors_name_file_and_key(tmp_path, text, where):
    message = load_error(tmp_path, text)
    assert str(tmp_path / "broken" / "experiment.yaml") in message
    assert where in message


def test_build_source_must_exist(tmp_path):
    text = MINIMAL + "build:\n  - bpf: missing.bpf.c\n"
    assert "build[0].bpf: source missing.bpf.c not found" in load_error(tmp_path, text)


def test_kernel_max(tmp_path):
    write_exp(tmp_path, "tiny", MINIMAL)
    exp = load_experiment("tiny", tmp_path)
    assert na_reason(exp, "6.1.192") == ""
    assert na_reason(exp, "6.6") == ("supports Linux up to 6.1 (a made-up break in 6.2); "
                                     "kernel 6.6 is newer")


def test_hellotrace_symbol_per_version():
    exp = load_experiment("hellotrace")
    assert resolve_vars(exp, "4.15")["WRITE_SYM"] == "SyS_write"
    assert resolve_vars(exp, "5.4.286")["WRITE_SYM"] == "__x64_sys_write"
    assert resolve_vars(exp, "6.1.192") == {"WRITE_SYM": "__x64_sys_write",
                                           "SYSCALL_WRAPPER": "1"}


def fake_build(tmp_path: Path, config: str, system_map: str) -> BuildRecord:
    """A build record pointing at real files, as kernlab.build writes it."""
    (tmp_path / "config").write_text(config)
    (tmp_path / "System.map").write_text(system_map)
    return BuildRecord.from_json({"version": "6.1", "outputs": {
        "config": {"path": str(tmp_path / "config")},
        "System.map": {"path": str(tmp_path / "System.map")}}, "symbols": {}})


CONFIG = "\n".join(f"CONFIG_{o}=y" for o in (
    "BPF_SYSCALL", "BPF_EVENTS", "KPROBES", "KPROBE_EVENTS", "KPROBE_EVENTS_ON_NOTRACE")) + "\n"


def test_missing_symbol_names_the_patch(tmp_path):
    build = fake_build(tmp_path, CONFIG, "ffffffff81000000 T copy_page_to_iter\n")
    with pytest.raises(KernlabError) as info:
        check_needs(load_experiment("readiter"), build, {})
    message = str(info.value)
    assert message.startswith("copyout is not in kallsyms of the 6.1 kernel")
    assert "patches/6.1/" in message and "invoke build-kernel --version 6.1" in message


def test_symbol_clone_is_found(tmp_path):
    build = fake_build(tmp_path, CONFIG, "ffffffff81000000 T copy_page_to_iter\n"
                                         "ffffffff81000100 t copyout.isra.0\n")
    found = check_needs(load_experiment("readiter"), build, {})
    assert found == {"copy_page_to_iter": "copy_page_to_iter", "copyout": "copyout.isra.0"}


def test_missing_config_option(tmp_path):
    build = fake_build(tmp_path, CONFIG.replace("CONFIG_KPROBES=y", "# CONFIG_KPROBES is not set"),
                       "ffffffff81000000 T copyout\n")
    with pytest.raises(KernlabError, match=r"CONFIG_KPROBES is not set in the 6.1 kernel .*"
                                           r"invoke build-kernel --version 6.1"):
        check_needs(load_experiment("readiter"), build, {})


def test_missing_build_output(tmp_path):
    build = fake_build(tmp_path, CONFIG, "")
    with pytest.raises(KernlabError, match="needs the kernel build output 'samples_bpf'"):
        check_needs(load_experiment("samples-bpf"), build, {})


def test_experiments_dir_is_movable(tmp_path, monkeypatch):
    write_exp(tmp_path, "tiny", MINIMAL)
    monkeypatch.setenv("KERNLAB_EXPERIMENTS", str(tmp_path))
    assert paths.experiments_dir() == tmp_path
    assert experiment_names() == ["tiny"]


ROOT = Path(__file__).resolve().parent.parent


def test_cli_unknown_experiment():
    """`invoke run-experiment nope`: exit 1 and the known experiments, before any work."""
    done = subprocess.run([sys.executable, "-m", "invoke", "run-experiment", "nope"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "kernlab: error: unknown experiment 'nope'; known experiments: " in done.stderr
    assert "readiter" in done.stderr


def test_cli_list_experiments():
    done = subprocess.run([sys.executable, "-m", "invoke", "list-experiments"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["name", "shows", "kernels", "needs"]
    assert [line.split()[0] for line in lines[1:]] == SUITE
    assert "copyout" in next(line for line in lines if line.startswith("readiter "))
