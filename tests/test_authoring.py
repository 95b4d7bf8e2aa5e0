"""Writing an experiment (issue 15), fast: new-experiment's skeletons, the loader's new
checks (bpftrace steps, ``${NAME}`` in step commands), experiments from any folder, and
the guest driver's bpftrace pieces. No kernel build, no boot; the real CLI where a user
would see the result. The one test that needs bpftrace on the host runs the real one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kernlab.core.errors import KernlabError
from kernlab.experiments import driver
from kernlab.experiments.check import check_probes, probe_targets
from kernlab.experiments.collect import map_hists
from kernlab.experiments.skeleton import KINDS, new_experiment
from kernlab.experiments.spec import parse_experiment
from kernlab.experiments.suite import experiment_names, load_experiment, scan_all

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=120, env=env)


def spec_with(tmp_path: Path, steps: list, files: dict[str, str] | None = None, **extra) -> Path:
    """A minimal experiment folder whose run.steps are ``steps``."""
    folder = tmp_path / "exp"
    folder.mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    data = {"title": "t", "description": "d", "run": {"steps": steps},
            "expect": [{"contains": "x", "in": f"step:{steps[-1]['name']}"}], **extra}
    (folder / "experiment.yaml").write_text(yaml.safe_dump(data))
    return folder / "experiment.yaml"


# ---------------------------------------------------------------- new-experiment
@pytest.mark.parametrize("kind", KINDS)
def test_each_skeleton_loads_outside_the_checkout(tmp_path, kind):
    folder = new_experiment(str(tmp_path / f"my-{kind}"), kind)
    exp = load_experiment(str(folder))
    assert exp.name == f"my-{kind}" and exp.dir == folder
    assert not exp.warnings
    assert "{{" not in "".join(p.read_text() for p in folder.iterdir())
    assert exp.origin()["origin"] == "folder" and exp.origin()["source"] == str(folder)
    assert exp.lib_dir.name == "_lib" and (exp.lib_dir / "klload.c").is_file()


def test_new_experiment_cli_refuses_an_existing_folder_and_a_bad_kind(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes").write_text("mine\n")
    taken = cli("new-experiment", str(tmp_path / "taken"))
    assert taken.returncode == 1 and "already exists" in taken.stderr
    assert (tmp_path / "taken" / "notes").read_text() == "mine\n"
    bad = cli("new-experiment", str(tmp_path / "x"), "--kind", "dtrace")
    assert bad.returncode == 1 and "bpftrace, libbpf, bcc, shell" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "x").exists()


def test_check_experiment_stops_at_an_undefined_variable_before_any_kernel(tmp_path):
    folder = new_experiment(str(tmp_path / "planted"), "bpftrace")
    spec = folder / "experiment.yaml"
    spec.write_text(spec.read_text().replace("data.bin ${ROUNDS}", "data.bin ${ROUND}"))
    done = cli("check-experiment", str(folder), "--kernels", "no-such-kernel")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("kernlab: error:")]
    assert len(lines) == 1 and "run.steps[2].cmd: ${ROUND} is not defined" in lines[0]
    assert "ROUNDS" in lines[0] and "Traceback" not in done.stderr


def test_run_experiment_path_that_is_no_experiment(tmp_path):
    done = cli("run-experiment", str(tmp_path / "nothing-here"))
    assert done.returncode == 1 and "does not exist" in done.stderr
    assert "new-experiment" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------- bpftrace steps in the YAML
def test_bpftrace_step_from_a_file_runs_in_the_background(tmp_path):
    file = spec_with(tmp_path, [{"name": "trace", "bpftrace": "p.bt"}, {"name": "w", "cmd": "true"}],
                     files={"p.bt": "kprobe:vfs_read { @n = count(); }\n"})
    trace = parse_experiment(file).steps[0]
    assert trace.background and trace.stop_signal == "INT" and trace.bpftrace_file == "p.bt"
    assert trace.bpftrace.startswith("kprobe:vfs_read")


def test_bpftrace_step_with_command_is_the_foreground(tmp_path):
    file = spec_with(tmp_path, [{"name": "hist", "bpftrace": "kretprobe:vfs_read { @ = hist(retval); }",
                                 "command": "./reader data.bin"}])
    step = parse_experiment(file).steps[0]
    assert not step.background and step.command == "./reader data.bin" and not step.bpftrace_file


@pytest.mark.parametrize(("step", "words"), [
    ({"bpftrace": "BEGIN { }", "ready": "Attaching"}, "ready: a bpftrace step is ready once"),
    ({"bpftrace": "BEGIN { }", "stop_signal": "TERM"}, "prints its maps only when stopped with INT"),
    ({"bpftrace": "BEGIN { }", "background": False}, "runs in the background"),
    ({"bpftrace": "BEGIN { }", "cmd": "true"}, "exactly one of cmd"),
    ({"bpftrace": "missing.bt"}, "program file missing.bt not found"),
    ({"bpftrace": "kprobe:${SYM_x} { }"}, "${SYM_x} is not defined"),
    ({"cmd": "true", "command": "./x"}, "only a bpftrace: step runs a command"),
])
def test_bpftrace_step_mistakes_are_refused(tmp_path, step, words):
    file = spec_with(tmp_path, [{"name": "trace", **step}, {"name": "w", "cmd": "true"}])
    with pytest.raises(KernlabError) as caught:
        parse_experiment(file)
    assert words in caught.value.cause


def test_step_commands_may_use_their_own_and_the_guests_variables(tmp_path):
    cmd = "for f in a b; do echo ${f} ${KL_WORKDIR} ${HOME} ${N}; done; X=1; echo ${X}; read Y; echo ${Y}"
    file = spec_with(tmp_path, [{"name": "w", "cmd": cmd}], vars={"N": {"0": "3"}})
    assert parse_experiment(file).steps[0].cmd == cmd


def test_plain_bpftrace_cmd_steps_are_warned_about(tmp_path):
    file = spec_with(tmp_path, [{"name": "t", "cmd": "bpftrace trace.bt", "background": True,
                                 "ready": "Attaching"}, {"name": "w", "cmd": "true"}])
    (warning,) = parse_experiment(file).warnings
    assert "no -B line" in warning and "Attaching N probes" in warning and "bpftrace: step" in warning


# ---------------------------------------------------------------- experiments from other folders
def test_experiment_path_adds_to_the_suite(tmp_path, monkeypatch):
    suite = set(experiment_names())
    extra = tmp_path / "mine"
    new_experiment(str(extra / "opens"), "shell")
    new_experiment(str(tmp_path / "single"), "bpftrace")
    monkeypatch.setenv("KERNLAB_EXPERIMENT_PATH", f"{extra}:{tmp_path / 'single'}")
    assert set(experiment_names()) == suite | {"opens", "single"}
    assert load_experiment("opens").dir == extra / "opens"
    new_experiment(str(extra / "readiter"), "shell")  # the suite's name again
    good, broken = scan_all()
    assert {e.name for e in good} == suite | {"opens", "single"}
    assert [name for name, _ in broken] == ["readiter"]
    assert "another experiment has the name readiter" in broken[0][1].cause
    assert load_experiment("readiter").dir.parent.name == "experiments"


# ---------------------------------------------------------------- the guest driver's bpftrace
def test_sentinel_goes_before_the_first_probe_after_includes_and_structs():
    program = "#include <linux/fs.h>\nstruct s { int a; };\n// c\nBEGIN { }\nkprobe:f { }\n"
    out = driver.with_sentinel(program, "__task_pid_nr_ns", 42)
    lines = out.splitlines()
    assert lines[:3] == program.splitlines()[:3]
    assert lines[3] == 'kprobe:__task_pid_nr_ns /pid == 42/ { printf("kernlab-probes-attached\\n"); }'
    assert lines[4] == "BEGIN { }"


def test_json_maps_become_bpftrace_text_and_renderable_hists():
    hist = {"type": "hist", "data": {"@bytes": [{"min": 0, "max": 0, "count": 3},
                                                {"min": 4096, "max": 8191, "count": 48}]}}
    text = driver.json_to_text(hist)
    assert text.splitlines()[0] == "@bytes:" and text.splitlines()[1].startswith("[0] ")
    assert text.splitlines()[2].split()[:3] == ["[4K,", "8K)", "48"]
    assert driver.json_to_text({"type": "map", "data": {"@c": {"1,x": 2}}}) == "@c[1,x]: 2\n"
    (rendered,) = map_hists({"maps": {"@bytes": {"type": "hist", "value": hist["data"]["@bytes"]}}})
    assert rendered["buckets"][1] == {"low": "4096", "high": "8192", "count": 48}


@pytest.mark.skipif(shutil.which("bpftrace") is None, reason="no bpftrace on this host")
def test_bpftrace_json_output_is_converted_as_it_runs(tmp_path):
    """The host's real bpftrace (Debian's 0.17, as in the guest): text log and maps record."""
    proc = subprocess.Popen(["bpftrace", "-B", "line", "-f", "json", "-e",
                             'BEGIN { @n = count(); @h = hist(5000); printf("hello\\n"); exit(); }'],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    reader = driver.Bpftrace(proc, str(tmp_path / "log"), str(tmp_path / "maps.json"), sentinel=False)
    assert proc.wait(timeout=60) == 0
    reader.finish()
    log = (tmp_path / "log").read_text()
    assert "Attaching 1 probes...\nhello\n" in log and "@n: 1" in log and "[4K, 8K)" in log
    record = json.loads((tmp_path / "maps.json").read_text())
    assert record["probes"] == 1 and record["maps"]["@n"] == {"type": "map", "value": 1}


SLOW_TO_STOP = """#!/usr/bin/env python3
# bpftrace's shape, slow to stop: attaches, then on SIGINT takes 1.5 s before its maps
import json, signal, sys, time
def stop(*_):
    time.sleep(1.5)
    print(json.dumps({"type": "map", "data": {"@reads": 7}}), flush=True)
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
print(json.dumps({"type": "attached_probes", "data": {"probes": 2}}), flush=True)
print(json.dumps({"type": "printf", "data": "kernlab-probes-attached\\n"}), flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.mark.parametrize("kind", ["bpftrace", "cmd"])
def test_a_bpftrace_step_slow_to_stop_keeps_its_maps(tmp_path, monkeypatch, kind):
    """After the last step, a background step gets STOP_GRACE before SIGKILL; a bpftrace
    step (maps printed, then probes detached: slow on 4.15 under load) is waited for while
    it makes progress and a stall is longer than its 1.5 s (tests/test_guard_stop.py has the
    rest). The graces are scaled down here, the slow stop is a stand-in bpftrace on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bpftrace").write_text(SLOW_TO_STOP)
    (bindir / "bpftrace").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(driver, "STOP_GRACE", 0.5)
    monkeypatch.setattr(driver, "BPFTRACE_STALL", 5.0)
    tracer = {"name": "trace", "cmd": "bpftrace", "background": True}
    if kind == "bpftrace":
        tracer["bpftrace"] = {"program": "kprobe:vfs_read { @reads = count(); }"}
    else:
        tracer.update(cmd="bpftrace", ready="probes-attached")
    plan = {"outdir": str(tmp_path / "out"), "timeout": 60, "drain": 0,
            "trace": {"enabled": False, "dir": str(tmp_path)},
            "steps": [tracer, {"name": "work", "cmd": "true", "timeout": 10}]}
    status = driver.run_plan(plan)
    steps = {s["name"]: s for s in json.loads((tmp_path / "out" / "steps.json").read_text())["steps"]}
    if kind == "bpftrace":
        assert status["status"] == "done" and steps["trace"]["exit"] == 0
        maps = json.loads((tmp_path / "out" / "bpftrace" / "trace.json").read_text())["maps"]
        assert maps == {"@reads": {"type": "map", "value": 7}}
    else:  # a plain command step, as slow, is SIGKILLed after STOP_GRACE
        log = (tmp_path / "out" / "steps" / "trace.log").read_text()
        assert steps["trace"]["exit"] == -9 and "@reads" not in log


# ---------------------------------------------------------------- probe targets
def test_probe_targets_are_looked_up_like_the_kernel_names_them():
    program = ('// kprobe:in_a_comment\nkprobe:vfs_read, kretprobe:vfs_*\n{ printf("k:x"); }\n'
               "tracepoint:syscalls:sys_enter_openat { }\nt:sched:sched_switch { }\nkprobe:copyout { }\n")
    assert probe_targets(program) == (["copyout", "vfs_*", "vfs_read"],
                                      [("sched", "sched_switch"), ("syscalls", "sys_enter_openat")])
    symbols = {"vfs_read", "vfs_write", "__syscall_meta__openat", "copyout.isra.0"}
    missing = check_probes(program, symbols)
    assert missing[0].startswith("kprobe copyout (only the gcc clone copyout.isra.0")
    assert missing[1:] == ["tracepoint sched:sched_switch"]
