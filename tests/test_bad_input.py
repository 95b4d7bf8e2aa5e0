"""Bad input, table-driven: the real CLI (`invoke ...` in a subprocess) for each case.

Every case runs with its own KERNLAB_* directories under tmp and asserts what a user
must see for a mistake: exit status != 0, exactly one `kernlab: error:` line on stderr
that says what is wrong (the case's expected words), no Python traceback anywhere, and
nothing lost or left behind: files that existed are unchanged, and the only new files
are the ones the case allows (a build's log folder, the checksum memo).

No case builds a kernel or boots a guest: every one of them must be refused before.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHA = "0" * 64

Setup = Callable[[Path], dict]


@dataclass
class Case:
    kind: str
    id: str
    args: list[str]
    expect: str  # words the error line must hold
    setup: Setup | None = None  # makes files under tmp; returns extra environment
    allowed: tuple[str, ...] = ()  # globs (relative to tmp) of files the run may add
    stdout: str = ""  # words stdout must hold (a listing that goes on despite the error)
    needs: str = ""  # a host tool the case needs to get as far as its error
    removed: tuple[str, ...] = ()  # globs of files the run may remove (a dead VM's run files)


# ---------------------------------------------------------------- helpers for setups
def env_file(var: str, sub: str = "") -> Setup:
    """``var`` names a file (or a path under one)."""
    def setup(tmp: Path) -> dict:
        (tmp / "a-file").write_text("I am a file\n")
        return {var: str(tmp / "a-file" / sub) if sub else str(tmp / "a-file")}
    return setup


def experiments(spec: dict | str | bytes | None, name: str = "t", *, good: bool = False) -> Setup:
    """KERNLAB_EXPERIMENTS with one experiment folder ``name`` holding ``spec`` (a dict,
    raw text or bytes; None: no experiment.yaml), plus a good one when ``good``."""
    def setup(tmp: Path) -> dict:
        root = tmp / "experiments"
        (root / name).mkdir(parents=True)
        if spec is not None:
            data = yaml.safe_dump(spec) if isinstance(spec, dict) else spec
            target = root / name / "experiment.yaml"
            target.write_bytes(data) if isinstance(data, bytes) else target.write_text(data)
        if good:
            (root / "fine").mkdir()
            (root / "fine" / "experiment.yaml").write_text(yaml.safe_dump(base_spec()))
        return {"KERNLAB_EXPERIMENTS": str(root)}
    return setup


def empty_experiments(tmp: Path) -> dict:
    (tmp / "experiments").mkdir()
    return {"KERNLAB_EXPERIMENTS": str(tmp / "experiments")}


def base_spec() -> dict:
    return {"title": "t", "description": "d",
            "run": {"steps": [{"name": "work", "cmd": "echo hi"}]},
            "expect": [{"contains": "hi", "in": "step:work"}]}


def spec_with(change: Callable[[dict], None]) -> dict:
    spec = base_spec()
    change(spec)
    return spec


def step(**keys) -> Callable[[dict], None]:
    return lambda s: s["run"]["steps"][0].update(keys)


def expect(**keys) -> Callable[[dict], None]:
    return lambda s: s["expect"][0].update(keys)


def run_t(*more: str) -> list[str]:
    return ["run-experiment", "t", "--kernel", "6.1", *more]


def bundle(manifest: str | dict | None, result: str | dict | None = None) -> Setup:
    """A results bundle under tmp/bundle with this manifest.json and result.json."""
    def setup(tmp: Path) -> dict:
        target = tmp / "bundle"
        target.mkdir()
        for name, data in (("manifest.json", manifest),
                           ("result.json", result if result is not None else {"status": "FAIL"})):
            if data is not None:
                (target / name).write_text(data if isinstance(data, str) else json.dumps(data))
        return {}
    return setup


def matrix_json(text: str) -> Setup:
    def setup(tmp: Path) -> dict:
        (tmp / "report").mkdir()
        (tmp / "report" / "matrix.json").write_text(text)
        return {}
    return setup


def work_file(rel: str, text: str) -> Setup:
    def setup(tmp: Path) -> dict:
        path = tmp / "work" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return {}
    return setup


def hosts_file(data: object, raw: str | None = None) -> Setup:
    """tmp/hosts.yaml holding ``data`` (or ``raw`` text); a 0600 key and a known_hosts beside it."""
    def setup(tmp: Path) -> dict:
        (tmp / "id").write_text("not a real key\n")
        (tmp / "id").chmod(0o600)
        (tmp / "known_hosts").write_text("")
        (tmp / "hosts.yaml").write_text(raw if raw is not None else yaml.safe_dump(data))
        return {}
    return setup


def host(**keys) -> dict:
    return {"name": "lab2", "address": "192.0.2.1", "key": "id", "known_hosts": "known_hosts", **keys}


def tarball(data: bytes | None = None, members: dict[str, bytes] | None = None,
            cut: int | None = None) -> Setup:
    """tmp/src.tar.gz: raw ``data``, or a tar.gz of ``members`` (cut to ``cut`` bytes)."""
    def setup(tmp: Path) -> dict:
        blob = data
        if blob is None:
            raw = io.BytesIO()
            with tarfile.open(fileobj=raw, mode="w") as tar:
                for name, content in (members or {}).items():
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
            blob = gzip.compress(raw.getvalue())
        (tmp / "src.tar.gz").write_bytes(blob[:cut] if cut is not None else blob)
        return {}
    return setup


def big_tree() -> dict[str, bytes]:
    """A tree large enough that cutting its archive short cuts a member, not just the end."""
    return {f"linux/file{i}.c": os.urandom(4096).hex().encode() for i in range(40)}


def catalog(tmp: Path) -> dict:
    """A copy of configs/ (to damage): KERNLAB_CONFIGS."""
    shutil.copytree(ROOT / "configs", tmp / "configs")
    return {"KERNLAB_CONFIGS": str(tmp / "configs")}


def damaged_catalog(text: str) -> Setup:
    def setup(tmp: Path) -> dict:
        env = catalog(tmp)
        (tmp / "configs" / "kernels.yaml").write_text(text)
        return env
    return setup


def dead_vm(console: str, qemu_log: str = "") -> Setup:
    """VM "lab" whose QEMU is gone (a reaped pid), with this console log (and QEMU log)."""
    def setup(tmp: Path) -> dict:
        run_dir = tmp / "state" / "vms" / "lab"
        run_dir.mkdir(parents=True)
        dead = subprocess.Popen(["true"])
        dead.wait()
        (run_dir / "console.log").write_text(console)
        (run_dir / "qemu.log").write_text(qemu_log)
        (run_dir / "vm.json").write_text(json.dumps({
            "name": "lab", "pid": dead.pid, "ssh_port": 1, "host": "127.0.0.1",
            "console_log": str(run_dir / "console.log"), "qemu_log": str(run_dir / "qemu.log"),
            "qmp_socket": str(run_dir / "qmp.sock"), "kernel": {"version": "6.1", "key": "a" * 64}}))
        return {}
    return setup


PANIC = "[    0.9] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n"
VM_DIED = ("state/vms/lab/vm.json",)
DEATH_NOTE = ("state/vms/lab/last-exit.json",)


def all_na_experiment(tmp: Path) -> dict:
    """One experiment that supports no catalog kernel: every matrix cell is n/a."""
    spec = base_spec()
    spec["needs"] = {"features": {"bpf_time_travel": "99.0"}}
    return experiments(spec)(tmp)


BUILD_FROM_TARBALL = ["build-kernel", "--version", "6.1", "--tarball", "src.tar.gz", "--allow-unverified"]
BUILD_LEFTOVERS = ("cache", "cache/sha256-memo.json", "work", "work/logs", "work/src")

# ---- 22a: setups
def merge_onto_a_report(tmp: Path) -> dict:
    """A matrix run in tmp/one, and tmp/earlier holding an earlier report of the user's."""
    from kernlab.compare.matrix import Cell, Matrix, write_report

    run = Matrix(["5.4"], ["readiter"])
    run.cells[("5.4", "readiter")] = Cell("5.4", "readiter", "PASS")
    write_report(run, tmp / "one")
    (tmp / "earlier").mkdir()
    (tmp / "earlier" / "report.md").write_text("my earlier report\n")
    return {}


def merge_onto_a_file(tmp: Path) -> dict:
    merge_onto_a_report(tmp)
    (tmp / "a-file").write_text("mine\n")
    return {}


# ---------------------------------------------------------------- the table
CASES = [
    # the probe atlas: a malformed target, nothing to check, an unbuilt kernel, refusals
    Case("flags", "probes-bad-target", ["probes", "tracepoint:only", "--kernels", "6.1"],
         "target 'tracepoint:only' is not a probe target"),
    Case("flags", "probes-nothing", ["probes"], "no target given"),
    Case("flags", "probes-unbuilt", ["probes", "vfs_read", "--kernels", "6.1"], "kernel 6.1 is not built"),
    Case("flags", "make-probeable-no-version", ["make-probeable", "file_ppos"],
         "needs FUNCTION and --version"),
    Case("flags", "make-probeable-not-c", ["make-probeable", "a-b", "--version", "6.1"],
         "'a-b' is not a C function name"),
    Case("flags", "no-patch-unknown",
         ["build-kernel", "--version", "6.1", "--no-patch", "nope.patch", "--plan"],
         "--no-patch nope.patch: no such patch in the series of 6.1"),
    # numbers on the command line: range, finiteness, parse
    Case("number", "jobs-negative", ["build-kernel", "--jobs", "-3"], "--jobs -3 is out of range"),
    Case("number", "jobs-not-a-number", ["build-kernel", "--jobs", "abc"],
         "--jobs 'abc' is not a whole number"),
    Case("number", "jobs-huge", ["build-kernel", "--jobs", "100000"], "--jobs 100000 is out of range"),
    Case("number", "cpus-zero", ["vm.up", "--kernel", "6.1", "--cpus", "0"], "--cpus 0 is out of range"),
    Case("number", "cpus-negative", ["vm.up", "--kernel", "6.1", "--cpus", "-1"],
         "--cpus -1 is out of range"),
    Case("number", "cpus-word", ["vm.up", "--kernel", "6.1", "--cpus", "two"],
         "--cpus 'two' is not a whole number"),
    Case("number", "cpus-too-many", ["vm.up", "--kernel", "6.1", "--cpus", "1000"],
         "--cpus 1000 is out of range"),
    Case("number", "up-timeout-negative", ["vm.up", "--kernel", "6.1", "--timeout", "-5"],
         "--timeout -5.0 is out of range"),
    Case("number", "up-timeout-nan", ["vm.up", "--kernel", "6.1", "--timeout", "nan"],
         "--timeout nan is not a finite number"),
    Case("number", "up-timeout-inf", ["vm.up", "--kernel", "6.1", "--timeout", "inf"],
         "--timeout inf is not a finite number"),
    Case("number", "memory-zero", ["vm.up", "--kernel", "6.1", "--memory", "0"], "--memory 0 is too small"),
    Case("number", "memory-word", ["vm.up", "--kernel", "6.1", "--memory", "lots"],
         "--memory 'lots' is not a memory size"),
    Case("number", "memory-negative", ["vm.up", "--kernel", "6.1", "--memory", "-2G"],
         "--memory '-2G' is not a memory size"),
    Case("number", "memory-too-small", ["vm.up", "--kernel", "6.1", "--memory", "16M"],
         "--memory 16M is too small for the lab guest"),
    Case("number", "ssh-timeout-zero", ["vm.ssh", "-c", "true", "--timeout", "0"],
         "--timeout 0.0 is out of range"),
    Case("number", "ssh-timeout-nan", ["vm.ssh", "-c", "true", "--timeout", "nan"],
         "--timeout nan is not a finite number"),
    Case("number", "ssh-timeout-word", ["vm.ssh", "-c", "true", "--timeout", "soon"],
         "--timeout 'soon' is not a number"),
    # flags that conflict, are empty, or apply only with another
    Case("flags", "tarball-and-git", ["build-kernel", "--tarball", "a.tar.xz", "--git", "/tmp"],
         "--tarball and --git both name the kernel source"),
    Case("flags", "url-and-tarball", ["build-kernel", "--url", "https://x/l.tar.xz", "--tarball", "a.tar.xz"],
         "--tarball and --url both name the kernel source"),
    Case("flags", "ref-without-git", ["build-kernel", "--ref", "v6.1"], "--ref is only used with --git"),
    Case("flags", "sha256-with-git", ["build-kernel", "--git", "/tmp", "--sha256", SHA],
         "--sha256 pins a tarball"),
    Case("flags", "sha256-malformed", ["build-kernel", "--tarball", "a.tar.xz", "--sha256", "xyz"],
         "--sha256 'xyz' is malformed"),
    Case("flags", "version-empty", ["build-kernel", "--version", ""], "--version is empty"),
    Case("flags", "version-blank", ["build-kernel", "--version", "  "], "--version is empty"),
    Case("flags", "tarball-empty", ["build-kernel", "--tarball", ""], "--tarball is empty"),
    Case("flags", "kernel-info-version-empty", ["kernel-info", "--version", ""], "--version is empty"),
    Case("flags", "vm-up-kernel-empty", ["vm.up", "--kernel", ""], "--kernel is empty"),
    Case("flags", "vm-up-bad-name", ["vm.up", "--kernel", "6.1", "--name", "../x"], "bad VM name '../x'"),
    Case("flags", "run-kernel-empty", ["run-experiment", "readiter", "--kernel", ""], "--kernel is empty"),
    Case("flags", "run-name-and-all", ["run-experiment", "readiter", "--all"],
         "both an experiment (readiter) and --all given"),
    Case("flags", "run-no-name", ["run-experiment"], "did not receive required positional arguments: 'name'"),
    Case("flags", "unknown-flag", ["build-kernel", "--bogus"],
         "No idea what '--bogus' is!; see `invoke --help"),
    Case("flags", "unknown-task", ["nosuchtask"], "No idea what 'nosuchtask' is!; see `invoke --list`"),
    Case("flags", "vm-up-without-kernel", ["vm.up"], "'vm.up' did not receive required positional"),
    Case("flags", "recipe-a-path", ["build-image", "--recipe", "../../etc/passwd"],
         "image recipe '../../etc/passwd' is not a plain name"),
    Case("flags", "fragment-empty", ["build-kernel", "--fragment", ""], "--fragment is empty"),
    Case("flags", "lock-version-empty", ["lock", "--version", ""], "--version is empty"),
    Case("flags", "run-bad-vm-name", ["run-experiment", "readiter", "--vm-name", "Bad Name"], "bad VM name"),
    Case("flags", "run-unknown-experiment", ["run-experiment", "nosuch", "--kernel", "6.1"],
         "unknown experiment 'nosuch'"),
    Case("flags", "run-path-no-experiment", ["run-experiment", "..", "--kernel", "6.1"],
         ".. holds no experiment.yaml"),
    Case("flags", "matrix-no-kernels", ["matrix"], "no kernels given"),
    Case("flags", "matrix-kernel-twice", ["matrix", "--kernels", "6.1,6.1"], "--kernels names 6.1 twice"),
    Case("flags", "rerender-without-out", ["matrix", "--rerender"], "--rerender needs --out DIR"),
    Case("flags", "out-is-a-file", ["matrix", "--kernels", "6.1", "--out", "a-file"],
         "--out a-file is a file, not a directory", setup=env_file("UNUSED")),
    Case("flags", "reproduce-empty", ["reproduce", ""], "--bundle is empty"),
    Case("flags", "test-junit-empty", ["test", "--junit", ""], "--junit '' is not a file name"),
    # a run that would run nothing
    Case("empty", "ci-blank-kernels", ["ci", "--kernels", " , "], "--kernels ' , ' names no kernel"),
    Case("empty", "matrix-comma-kernels", ["matrix", "--kernels", ","], "--kernels ',' names no kernel"),
    Case("empty", "matrix-comma-experiments", ["matrix", "--kernels", "6.1", "--experiments", ","],
         "--experiments ',' names no experiment"),
    Case("empty", "ci-empty-experiments", ["ci", "--kernels", "6.1", "--experiments", ""],
         "--experiments '' names no experiment"),
    Case("empty", "list-no-experiments", ["list-experiments"], "no experiments in", setup=empty_experiments),
    Case("empty", "run-all-no-experiments", ["run-experiment", "--all", "--kernel", "6.1"],
         "no experiment ran", setup=empty_experiments),
    Case("empty", "matrix-no-experiments", ["matrix", "--kernels", "6.1"], "no experiments to run in",
         setup=empty_experiments),
    Case("empty", "matrix-all-cells-na", ["matrix", "--kernels", "6.1", "--out", "out"],
         "nothing ran: all 1 cells are n/a", setup=all_na_experiment,
         allowed=("out", "out/*", "results", "results/*"), stdout="t"),  # the report, n/a bundles
    Case("empty", "rerender-no-cells", ["matrix", "--rerender", "--out", "report"], "has no cells",
         setup=matrix_json('{"kernels": [], "experiments": [], "cells": []}')),
    # the environment names a file where a directory must be
    Case("env", "work-is-a-file", ["kernel-info", "--version", "6.1"], "KERNLAB_WORK=",
         setup=env_file("KERNLAB_WORK")),
    Case("env", "work-under-a-file", ["kernel-info", "--version", "6.1"], "which is a file, not a directory",
         setup=env_file("KERNLAB_WORK", "sub")),
    Case("env", "results-is-a-file", ["matrix", "--kernels", "6.1"], "KERNLAB_RESULTS=",
         setup=env_file("KERNLAB_RESULTS")),
    Case("env", "cache-is-a-file", BUILD_FROM_TARBALL, "KERNLAB_CACHE=",
         setup=lambda tmp: {**env_file("KERNLAB_CACHE")(tmp), **tarball(b"x")(tmp)},
         allowed=("work", "work/logs"), needs="gcc-12"),
    Case("env", "state-is-a-file", ["vm.status"], "KERNLAB_STATE=", setup=env_file("KERNLAB_STATE")),
    Case("env", "experiments-is-a-file", ["list-experiments"], "KERNLAB_EXPERIMENTS=",
         setup=env_file("KERNLAB_EXPERIMENTS")),
    Case("env", "mirror-without-scheme", ["build-kernel", "--version", "5.4"],
         "KERNLAB_MIRROR=mirror.example.org gives 'mirror.example.org/v5.x/linux-5.4.302.tar.xz'",
         setup=lambda tmp: {"KERNLAB_MIRROR": "mirror.example.org"}, allowed=("work", "work/logs"),
         needs="gcc-12"),
    Case("env", "accel-unknown", ["vm.up", "--kernel", "6.1"], "KERNLAB_ACCEL='hvf' is not kvm or tcg",
         setup=lambda tmp: {"KERNLAB_ACCEL": "hvf"}),
    Case("env", "accel-unknown-matrix", ["matrix", "--kernels", "6.1"], "KERNLAB_ACCEL='kqemu' is not kvm",
         setup=lambda tmp: {"KERNLAB_ACCEL": "kqemu"}),
    Case("env", "tcg-threads-unknown", ["vm.up", "--kernel", "6.1"],
         "KERNLAB_TCG_THREADS='many' is not multi or single",
         setup=lambda tmp: {"KERNLAB_TCG_THREADS": "many"}),
    # damaged files kernlab wrote itself
    Case("damaged", "latest-pointer", ["kernel-info", "--version", "6.1"], "kernel 6.1 is not built",
         setup=work_file("latest/6.1.json", "{not json")),
    Case("damaged", "build-record", ["kernel-info", "--version", "6.1"], "kernel 6.1 is not built",
         setup=work_file("build/6.1-000000000000/build.json", '{"outputs": ')),
    Case("damaged", "manifest-not-json", ["reproduce", "bundle"], "manifest.json is damaged",
         setup=bundle("{truncated")),
    Case("damaged", "manifest-a-list", ["reproduce", "bundle"], "is not a bundle's manifest.json",
         setup=bundle("[]")),
    Case("damaged", "result-not-json", ["reproduce", "bundle"], "result.json is damaged",
         setup=bundle({"experiment": {"name": "readiter", "hash": "x"}}, "{")),
    Case("damaged", "bundle-of-a-failed-build", ["reproduce", "bundle"], "records no kernel build",
         setup=bundle({"experiment": {"name": "readiter", "hash": "x"}, "build": None, "image": None},
                      {"status": "FAIL", "kernel": "6.1", "reason": "make bzImage failed"})),
    Case("damaged", "bundle-without-manifest", ["reproduce", "bundle"], "no manifest.json",
         setup=bundle(None)),
    Case("damaged", "matrix-json-not-json", ["matrix", "--rerender", "--out", "report"],
         "matrix.json is unreadable", setup=matrix_json("{")),
    Case("damaged", "matrix-json-wrong-shape", ["matrix", "--rerender", "--out", "report"],
         "is not a kernlab matrix.json", setup=matrix_json('{"kernels": "6.1", "cells": 3}')),
    Case("damaged", "matrix-json-bad-status", ["matrix", "--rerender", "--out", "report"],
         "cell 6.1/t has status 'MAYBE'", setup=matrix_json(json.dumps(
             {"kernels": ["6.1"], "experiments": ["t"],
              "cells": [{"kernel": "6.1", "experiment": "t", "status": "MAYBE"}]}))),
    Case("damaged", "catalog-not-yaml", ["list-kernels"], "not valid YAML", setup=damaged_catalog("a: [")),
    Case("damaged", "catalog-a-list", ["list-kernels"], "(top level): must be a mapping",
         setup=damaged_catalog("- 6.1\n")),
    # hosts files
    Case("hosts", "top-level-list", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"],
         "the top level is a list, not a mapping", setup=hosts_file([host()])),
    Case("hosts", "workdir-escapes", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"],
         "workdir '../../etc' leaves its directory",
             setup=hosts_file({"hosts": [host(workdir="../../etc")]})),
    Case("hosts", "workdir-root", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"],
         "workdir '/' is the root directory", setup=hosts_file({"hosts": [host(workdir="/")]})),
    Case("hosts", "workdir-absolute-dotdot", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"],
         "goes through '..'", setup=hosts_file({"hosts": [host(workdir="/srv/../etc")]})),
    Case("hosts", "name-is-a-path", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"],
         "host name '../evil' is not a plain name", setup=hosts_file({"hosts": [host(name="../evil")]})),
    Case("hosts", "unknown-host-key", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"],
         "unknown key 'adress'", setup=hosts_file({"hosts": [host(adress="x")]})),
    Case("hosts", "unknown-top-key", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"],
         "unknown key 'host'", setup=hosts_file({"host": [host()]})),
    Case("hosts", "not-yaml", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"], "not valid YAML",
         setup=hosts_file(None, raw="hosts: [")),
    Case("hosts", "no-hosts", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"], "lists no hosts",
         setup=hosts_file({"hosts": []})),
    Case("hosts", "bad-port", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"], "is not a TCP port",
         setup=hosts_file({"hosts": [host(port="22x")]})),
    Case("hosts", "include-local-not-bool", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"],
         "include_local: must be a boolean (true or false)",
         setup=hosts_file({"include_local": "no", "hosts": [host()]})),
    # experiment.yaml: numbers, references, paths
    Case("experiment", "step-timeout-inf", run_t(), "run.steps[0].timeout: must be a finite number",
         setup=experiments(spec_with(step(timeout=float("inf"))))),
    Case("experiment", "step-timeout-nan", run_t(), "run.steps[0].timeout: must be a finite number",
         setup=experiments(spec_with(step(timeout=float("nan"))))),
    Case("experiment", "step-timeout-negative", run_t(), "run.steps[0].timeout: must be > 0",
         setup=experiments(spec_with(step(timeout=-1)))),
    Case("experiment", "ready-timeout-too-long", run_t(), "ready_timeout: must be <= 86400",
         setup=experiments(spec_with(step(ready_timeout=1e9)))),
    Case("experiment", "run-timeout-string", run_t(), "run.timeout: must be a number",
         setup=experiments(spec_with(lambda s: s["run"].update(timeout="10m")))),
    Case("experiment", "max-bytes-inf", run_t(), "capture.max_bytes: must be a finite number",
         setup=experiments(spec_with(lambda s: s.update(capture={"max_bytes": float("inf")})))),
    Case("experiment", "max-bytes-nan", run_t(), "capture.max_bytes: must be a finite number",
         setup=experiments(spec_with(lambda s: s.update(capture={"max_bytes": float("nan")})))),
    Case("experiment", "min-above-max", run_t(), "expect[0].min: min 5 is greater than max 2",
         setup=experiments(spec_with(expect(min=5, max=2)))),
    Case("experiment", "min-negative", run_t(), "expect[0].min: must be >= 0",
         setup=experiments(spec_with(expect(min=-1)))),
    Case("experiment", "value-min-nan", run_t(), "expect[0].min: must be a finite number",
         setup=experiments(spec_with(lambda s: s.update(expect=[{"value": "n=(\\d+)",
             "min": float("nan")}])))),
    Case("experiment", "value-equals-inf", run_t(), "expect[0].equals: must be a finite number",
         setup=experiments(spec_with(lambda s: s.update(expect=[{"value": "n=(\\d+)",
             "equals": float("inf")}])))),
    Case("experiment", "value-range-inverted", run_t(), "min 10 is greater than max 1",
         setup=experiments(spec_with(lambda s: s.update(expect=[{"value": "n=(\\d+)", "min": 10,
             "max": 1}])))),
    Case("experiment", "exit-code-bool", run_t(), "expect[0].exit.code: must be an exit status 0..255",
         setup=experiments(spec_with(lambda s: s.update(expect=[{"exit": {"step": "work", "code": True}}])))),
    Case("experiment", "exit-code-300", run_t(), "got 300",
         setup=experiments(spec_with(lambda s: s.update(expect=[{"exit": {"step": "work", "code": 300}}])))),
    Case("experiment", "exit-unknown-key", run_t(), "unknown key 'cod' in expect[0].exit",
         setup=experiments(spec_with(lambda s: s.update(expect=[{"exit": {"step": "work", "cod": 1}}])))),
    Case("experiment", "undefined-var-in-expect", run_t(), "expect[0].contains: ${NOPE} is not defined",
         setup=experiments(spec_with(expect(contains="value ${NOPE}")))),
    Case("experiment", "undefined-var-in-symbols", run_t(),
         "needs.symbols.${SYMBOL}: ${SYMBOL} is not defined",
         setup=experiments(spec_with(lambda s: s.update(needs={"symbols": ["${SYMBOL}"]})))),
    Case("experiment", "undefined-var-in-cflags", run_t(), "build[0].cflags[0]: ${KVERSION} is not defined",
         setup=experiments(spec_with(lambda s: s.update(build=[{"host": "true",
             "cflags": ["-DV=${KVERSION}"]}])))),
    Case("experiment", "artifact-name-escapes", run_t(),
         "artifacts[0].name: '../../../../tmp/x' leaves its directory through '..'",
         setup=experiments(spec_with(lambda s: s.update(artifacts=[{"path": "out.txt",
                                                                     "name": "../../../../tmp/x"}])))),
    Case("experiment", "artifact-name-absolute", run_t(), "artifacts[0].name: '/tmp/x' is an absolute path",
         setup=experiments(spec_with(lambda s: s.update(artifacts=[{"path": "o.txt", "name": "/tmp/x"}])))),
    Case("experiment", "artifact-path-absolute", run_t(),
         "artifacts[0].path: '/etc/passwd' is an absolute path",
         setup=experiments(spec_with(lambda s: s.update(artifacts=[{"path": "/etc/passwd"}])))),
    Case("experiment", "artifact-string-escapes", run_t(), "artifacts[0]: '../secret' leaves its directory",
         setup=experiments(spec_with(lambda s: s.update(artifacts=["../secret"])))),
    Case("experiment", "artifact-names-repeat", run_t(), "artifacts[1].name: duplicate artifact name 'a.txt'",
         setup=experiments(spec_with(lambda s: s.update(artifacts=["a.txt", "sub/a.txt"])))),
    Case("experiment", "build-out-escapes", run_t(), "build[0].out: '../../x.o' leaves its directory",
         setup=experiments(spec_with(lambda s: s.update(build=[{"program": "lib/klload.c",
                                                                 "out": "../../x.o"}])))),
    Case("experiment", "build-source-absolute", run_t(), "build[0].bpf: '/etc/hostname' is an absolute path",
         setup=experiments(spec_with(lambda s: s.update(build=[{"bpf": "/etc/hostname"}])))),
    Case("experiment", "step-name-a-path", run_t(), "run.steps[0].name: must match",
         setup=experiments(spec_with(step(name="../../x")))),
    Case("experiment", "step-cmd-blank", run_t(), "run.steps[0].cmd: is empty",
         setup=experiments(spec_with(step(cmd="  ")))),
    Case("experiment", "step-unknown-key", run_t(), "unknown key 'timout' in run.steps[0]",
         setup=experiments(spec_with(step(timout=5)))),
    Case("experiment", "yaml-not-utf8", run_t(), "cannot be read", setup=experiments(b"title: \xff\xfe\n")),
    Case("experiment", "yaml-a-list", run_t(), "(top level): must be a mapping",
         setup=experiments("- a\n- b\n")),
    Case("experiment", "yaml-invalid", run_t(), "not valid YAML", setup=experiments("run: [\n")),
    # ---- 22c: ${NAME} in every expectation value is checked on load like the rest
    Case("experiment", "expect-min-var-undefined", run_t(), "expect[0].min: ${LOW} is not defined",
         setup=experiments(spec_with(expect(min="${LOW}")))),
    Case("experiment", "expect-equals-var-undefined", run_t(), "expect[0].equals: ${N} is not defined",
         setup=experiments(spec_with(lambda s: s.update(expect=[{"value": "n=(\\d+)", "equals": "${N}",
                                                                 "in": "step:work"}])))),
    Case("experiment", "expect-max-not-a-number", run_t(),
         "expect[0].max: must be a number or one ${NAME} from vars:, got 'lots'",
         setup=experiments(spec_with(expect(max="lots")))),
    Case("experiment", "expect-exit-code-var-undefined", run_t(),
         "expect[0].exit.code: ${CODE} is not defined",
         setup=experiments(spec_with(lambda s: s.update(
             expect=[{"exit": {"step": "work", "code": "${CODE}"}}])))),
    # ---- end 22c
    # one broken experiment folder among good ones
    Case("suite", "list-with-a-broken-folder", ["list-experiments"], "1 experiment folder(s) broken: t",
         setup=experiments(spec_with(step(timeout=float("nan"))), good=True), stdout="fine"),
    Case("suite", "list-with-a-folder-without-spec", ["list-experiments"], "broken: t",
         setup=experiments(None, good=True), stdout="no experiment.yaml"),
    Case("suite", "list-with-a-folder-named-like-a-path", ["list-experiments"], "broken: my exp",
         setup=experiments(base_spec(), name="my exp", good=True), stdout="is not a plain name"),
    # a VM that is not there, or stopped by itself (its QEMU gone): what happened, and the fix
    Case("vm", "ssh-no-vm", ["vm.ssh", "-c", "true", "--name", "lab"],
         "no running VM lab; start one: `invoke vm.up --kernel VERSION --name lab`"),
    Case("vm", "status-no-vm", ["vm.status", "--name", "lab"], "no running VM lab"),
    Case("vm", "verify-no-vm", ["vm.verify", "--name", "lab"], "no running VM lab"),
    Case("vm", "ssh-vm-panicked", ["vm.ssh", "-c", "true", "--name", "lab"],
         "VM lab is not running: guest kernel panic: Kernel panic - not syncing: VFS: Unable to mount root "
         "fs on unknown-block(0,0) (console: ", setup=dead_vm("booting\n" + PANIC),
         allowed=DEATH_NOTE, removed=VM_DIED),
    Case("vm", "shell-vm-panicked", ["vm.ssh", "--name", "lab"],
         "boot it again: `invoke vm.up --kernel 6.1-aaaaaaaaaaaa --name lab`", setup=dead_vm(PANIC),
         allowed=DEATH_NOTE, removed=VM_DIED),
    Case("vm", "verify-vm-panicked", ["vm.verify", "--name", "lab"],
         "VM lab is not running: guest kernel panic: Kernel panic - not syncing: VFS", setup=dead_vm(PANIC),
         allowed=DEATH_NOTE, removed=VM_DIED),
    Case("vm", "ssh-vm-qemu-died", ["vm.ssh", "-c", "true", "--name", "lab"],
         "VM lab is not running: QEMU (pid ", setup=dead_vm("booting\n", "qemu-system-x86_64: terminating "
                                                          "on signal 15 from pid 1\n"),
         allowed=DEATH_NOTE, removed=VM_DIED),
    Case("vm", "run-on-a-name-that-is-a-path", ["vm.ssh", "-c", "true", "--name", "../lab"], "bad VM name"),
    # kernel source archives
    Case("archive", "not-a-tar", BUILD_FROM_TARBALL, "src.tar.gz is not a complete tar archive",
         setup=tarball(b"this is not an archive\n" * 40), allowed=BUILD_LEFTOVERS, needs="gcc-12"),
    Case("archive", "empty-file", BUILD_FROM_TARBALL, "is not a complete tar archive (it is empty)",
         setup=tarball(b""), allowed=BUILD_LEFTOVERS, needs="gcc-12"),
    Case("archive", "truncated", BUILD_FROM_TARBALL, "is not a complete tar archive",
         setup=tarball(members=big_tree(), cut=60000), allowed=BUILD_LEFTOVERS, needs="gcc-12"),
    Case("archive", "gzip-of-nothing", BUILD_FROM_TARBALL, "is not a complete tar archive",
         setup=tarball(gzip.compress(b"")), allowed=BUILD_LEFTOVERS, needs="gcc-12"),
    Case("archive", "tree-without-makefile", BUILD_FROM_TARBALL,
         "holds no kernel tree: no top-level Makefile",
         setup=tarball(members={"linux/README": b"hello\n"}), allowed=BUILD_LEFTOVERS, needs="gcc-12"),
    Case("archive", "makefile-without-version", BUILD_FROM_TARBALL, "Makefile declares no kernel version",
         setup=tarball(members={"linux/Makefile": b"all:\n\ttrue\n"}), allowed=BUILD_LEFTOVERS,
         needs="gcc-12"),
    # ---- 22a: nothing overwritten that the user did not ask for (more: tests/test_guard_leftovers.py)
    Case("flags", "merge-out-holds-a-report", ["matrix", "--merge", "one", "--out", "earlier"],
         "--out earlier already exists and kernlab does not overwrite it; give a new --out",
         setup=merge_onto_a_report),
    Case("flags", "merge-out-is-a-file", ["matrix", "--merge", "one", "--out", "a-file"],
         "--out a-file already exists and kernlab does not overwrite it", setup=merge_onto_a_file),
    Case("flags", "new-experiment-over-a-folder", ["new-experiment", "t"], "t already exists",
         setup=experiments(base_spec())),
]


# ---- 22b: no name becomes a path unchecked; special files and YAML bombs; nothing to do; flags
def anchor_bomb(indent: str = "") -> str:
    """Ten lines of YAML whose aliases unfold into 9**9 (387 million) values."""
    lines = [f'{indent}a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"{indent}a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


BOMB_IN_NEEDS = yaml.safe_dump(base_spec()) + "vars:\n" + anchor_bomb("  ") + \
    "needs:\n  symbols:\n    vfs_read: *a8\n"


def fifo_in_experiment(tmp: Path) -> dict:
    """Experiment t with a named pipe beside its experiment.yaml (its content hash read it for ever)."""
    env = experiments(base_spec())(tmp)
    os.mkfifo(tmp / "experiments" / "t" / "pipe")
    return env


def fifo_tarball(tmp: Path) -> dict:
    os.mkfifo(tmp / "src.tar.gz")
    return {}


def merge_run(experiment: str) -> Setup:
    """An earlier matrix run in tmp/report whose matrix.json names ``experiment``."""
    return matrix_json(json.dumps({"kernels": ["6.1"], "experiments": [experiment],
                                   "cells": [{"kernel": "6.1", "experiment": experiment, "status": "PASS"}]}))


CASES += [
    Case("experiment", "yaml-anchor-bomb", run_t(), "once its aliases (*name) are expanded: an anchor bomb",
         setup=experiments(BOMB_IN_NEEDS)),
    Case("experiment", "yaml-anchor-bomb-check", ["check-experiment", "t"], "an anchor bomb",
         setup=experiments(BOMB_IN_NEEDS)),
    Case("experiment", "yaml-recursive-alias", run_t(), "an alias (*name) refers to the value that holds it",
         setup=experiments(yaml.safe_dump(base_spec()) + "vars: &v {a: *v}\n")),
    Case("experiment", "yaml-too-big", run_t(), "bytes, more than the 1,048,576 kernlab reads",
         setup=experiments("title: t\n# " + "x" * (1 << 20) + "\n")),
    Case("experiment", "yaml-nested-too-deeply", run_t(), "is nested too deeply to read",
         setup=experiments("a: " + "[" * 20000 + "]" * 20000 + "\n")),
    Case("experiment", "fifo-in-folder", run_t(), "t/pipe is a FIFO (named pipe), not a regular file",
         setup=fifo_in_experiment),
    Case("experiment", "fifo-in-folder-check", ["check-experiment", "t"], "is a FIFO (named pipe)",
         setup=fifo_in_experiment),
    Case("suite", "list-with-an-anchor-bomb", ["list-experiments"], "broken: t",
         setup=experiments(BOMB_IN_NEEDS, good=True), stdout="an anchor bomb"),
    Case("suite", "list-with-a-fifo", ["list-experiments"], "broken: t", setup=fifo_in_experiment,
         stdout="is a FIFO"),
    Case("hosts", "anchor-bomb", ["matrix", "--kernels", "6.1", "--hosts", "hosts.yaml"], "an anchor bomb",
         setup=hosts_file(None, raw=anchor_bomb() + "hosts: [*a8]\n")),
    Case("damaged", "catalog-anchor-bomb", ["list-kernels"], "an anchor bomb",
         setup=damaged_catalog(anchor_bomb() + "kernels: {x: *a8}\n")),
    Case("damaged", "matrix-json-experiment-a-path", ["matrix", "--merge", "report", "--out", "merged"],
         "'experiments' holds '../../escaped-exp' is not a plain name", setup=merge_run("../../escaped-exp")),
    Case("damaged", "matrix-json-rerender-a-path", ["matrix", "--rerender", "--out", "report"],
         "is not a plain name", setup=merge_run("/tmp/x")),
    Case("archive", "tarball-a-fifo", BUILD_FROM_TARBALL, "src.tar.gz is a FIFO (named pipe), not a regular",
         setup=fifo_tarball, allowed=BUILD_LEFTOVERS, needs="gcc-12"),
    Case("flags", "fragment-a-fifo", ["build-kernel", "--version", "6.1", "--fragment", "pipe", "--plan"],
         "pipe is a FIFO (named pipe), not a regular file", setup=lambda tmp: os.mkfifo(tmp / "pipe") or {}),
    Case("empty", "probes-no-build", ["probes", "vfs_read"], "no kernel is built"),
    Case("empty", "probes-json-no-build", ["probes", "vfs_read", "--json"], "no kernel is built"),
    Case("empty", "lock-nothing-built", ["lock"], "nothing to lock: no kernel and no image is built"),
    Case("flags", "probes-targets-flag", ["probes", "--targets", "vfs_read"], "no kernel is built"),
    Case("flags", "probes-t-flag", ["probes", "-t", "vfs_read", "-k", "6.1"], "kernel 6.1 is not built"),
    Case("flags", "probes-v-flag", ["probes", "vfs_read", "-v", "Bad Name"], "bad VM name 'Bad Name'"),
    Case("flags", "probes-e-flag", ["probes", "-e", "nosuch", "-k", "6.1"], "unknown experiment 'nosuch'"),
    Case("flags", "a-value-named-probes", ["vm.status", "--name", "probes"], "no running VM probes"),
    Case("flags", "an-experiment-named-probes", ["run-experiment", "probes", "--kernel", "6.1"],
         "unknown experiment 'probes'"),
]

# ---------------------------------------------------------------- running a case
def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root``: a hash of a file's bytes, 'dir' for a directory."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        found[rel] = ("dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
                      if path.is_file() else "special")  # a FIFO: reading it would wait for ever
    return found


def isolated_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KERNLAB_") and k not in ("CI", "PYTEST_CURRENT_TEST")}
    env.update({"KERNLAB_WORK": str(tmp / "work"), "KERNLAB_STATE": str(tmp / "state"),
                "KERNLAB_RESULTS": str(tmp / "results"), "KERNLAB_CACHE": str(tmp / "cache"),
                "KERNLAB_LOCK": str(tmp / "kernlab.lock"), "KERNLAB_ACCEL": "tcg",
                "KERNLAB_PLAIN": "1"})
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}-{c.id}" for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, tmp_path: Path) -> None:
    if case.needs and not shutil.which(case.needs):
        pytest.skip(f"needs {case.needs} to get as far as the error (invoke setup)")
    env = isolated_env(tmp_path)
    env.update(case.setup(tmp_path) if case.setup else {})
    env = {k: v for k, v in env.items() if k != "UNUSED"}
    before = snapshot(tmp_path)
    done = run_cli(case.args, tmp_path, env)
    after = snapshot(tmp_path)

    shown = f"exit {done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert done.returncode != 0, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    errors = [line for line in done.stderr.splitlines() if line.startswith("kernlab: error:")]
    assert len(errors) == 1, shown
    assert case.expect in errors[0], shown
    assert "unexpected" not in errors[0] and "kernlab bug" not in errors[0], shown
    assert errors[0] == done.stderr.strip().splitlines()[-1], shown  # the last word
    if case.stdout:
        assert case.stdout in done.stdout, shown
    lost = {p for p in before if after.get(p) != before[p]
            and not any(fnmatch.fnmatch(p, pattern) for pattern in case.removed)}
    assert not lost, f"changed or removed: {sorted(lost)}\n{shown}"
    added = [p for p in after if p not in before
             and not any(fnmatch.fnmatch(p, pattern) for pattern in case.allowed)]
    assert not added, f"left behind: {added}\n{shown}"


def test_the_table_covers_the_kinds() -> None:
    kinds = {c.kind for c in CASES}
    assert kinds == {"number", "flags", "empty", "env", "damaged", "hosts", "experiment", "suite", "archive",
                     "vm"}
    assert len(CASES) >= 80
    assert len({(c.kind, c.id) for c in CASES}) == len(CASES)


def all_cases() -> list[tuple[str, str]]:
    """Every bad input and fault the project's tests run, as (kind, id): this table's, the
    locks and signals of tests/test_locks.py, the real-guest faults of tests/test_faults_vm.py."""
    import test_faults_vm
    import test_guard_causes  # 22c
    import test_guard_leftovers  # 22a
    import test_locks

    return [(c.kind, c.id) for c in CASES] + test_locks.FAULTS + test_faults_vm.FAULTS + \
        test_guard_causes.FAULTS + test_guard_leftovers.FAULTS


def test_the_count_of_bad_inputs_and_faults_by_kind() -> None:
    from collections import Counter

    cases = all_cases()
    assert len(set(cases)) == len(cases)
    by_kind = Counter(kind for kind, _ in cases)
    print("\n" + "\n".join(f"{kind:<12}{n:>4}" for kind, n in sorted(by_kind.items()))
          + f"\n{'total':<12}{len(cases):>4}")
    assert {"signal", "lock", "vm-fault", "run-fault", "vm"} <= set(by_kind)
    assert len(cases) >= 160


# ---------------------------------------------------------------- the task boundary itself
def test_an_unexpected_exception_is_one_line_naming_its_log(tmp_path: Path, monkeypatch) -> None:
    """A bug (any exception that is not a KernlabError) is caught at the task boundary: one
    line with its type and message and the log holding the traceback; exit status 1."""
    from invoke import Exit

    import tasks

    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))

    @tasks.friendly
    def broken_task(c):
        return {}["missing"]

    with pytest.raises(Exit) as caught:
        broken_task(None)
    line = caught.value.message
    assert caught.value.code == 1
    assert line.startswith("kernlab: error: unexpected KeyError: 'missing'; this is a kernlab bug, "
                           f"traceback in {tmp_path / 'state' / 'logs'}")
    log = Path(line.rsplit("traceback in ", 1)[1])
    assert log.name.endswith(f"-broken_task-{os.getpid()}.log")
    assert "Traceback (most recent call last)" in log.read_text() and "KeyError" in log.read_text()


def test_an_unusable_state_dir_still_gets_a_crash_log(tmp_path: Path, monkeypatch) -> None:
    from invoke import Exit

    import tasks

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "file"))

    @tasks.friendly
    def broken_task(c):
        raise ValueError("a\nmulti-line\nmessage")

    with pytest.raises(Exit) as caught:
        broken_task(None)
    assert "unexpected ValueError: a multi-line message; this is a kernlab bug" in caught.value.message
    assert Path(caught.value.message.rsplit("traceback in ", 1)[1]).is_file()


def test_a_full_disk_is_named_as_such(tmp_path: Path, monkeypatch) -> None:
    import errno

    from invoke import Exit

    import tasks

    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))

    @tasks.friendly
    def writing_task(c):
        raise OSError(errno.ENOSPC, "No space left on device", "/work/kernels/build/x.o")

    with pytest.raises(Exit) as caught:
        writing_task(None)
    assert caught.value.message.startswith(
        "kernlab: error: /work/kernels/build/x.o: No space left on device; free some space")


def test_a_full_disk_under_a_commands_output_says_so(tmp_path: Path, monkeypatch) -> None:
    """invoke's output threads hit the full disk (CI once: stdout on a full disk while pytest
    ran): their ThreadException is a disk message, not 'a kernlab bug'."""
    import errno

    from invoke import Context, Exit

    import tasks

    class FullDisk:
        def write(self, _text: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))

    @tasks.friendly
    def chatty_task(c):
        c.run("echo some output", out_stream=FullDisk())

    with pytest.raises(Exit) as caught:
        chatty_task(Context())
    assert caught.value.message.startswith("kernlab: error: No space left on device; free some space")
    assert "kernlab bug" not in caught.value.message


def test_build_names_match_the_host_build_environment() -> None:
    """${NAME} in cflags may name what expbuild puts in the build environment, and only that."""
    from kernlab.core.records import BuildRecord
    from kernlab.experiments.build import build_env
    from kernlab.experiments.spec import BUILD_NAMES

    build = BuildRecord.from_json({"version": "9.9", "kernelrelease": "9.9.0", "build_dir": "/b",
                                   "outputs": {}})
    assert set(build_env(build, {})) == BUILD_NAMES


def test_junit_counts_reads_zero_tests(tmp_path: Path) -> None:
    from kernlab.compare.matrix import junit_counts

    empty = '<?xml version="1.0"?><testsuites><testsuite tests="0"/></testsuites>'
    (tmp_path / "empty.xml").write_text(empty)
    assert junit_counts(tmp_path / "empty.xml")["tests"] == 0
    assert junit_counts(tmp_path / "missing.xml")["tests"] == 0


class _FakeContext:
    """invoke's Context for the `test` task: ruff passes, "pytest" writes ``junit`` and exits ``code``."""

    def __init__(self, junit_text: str, code: int) -> None:
        self.junit_text, self.code, self.commands = junit_text, code, []

    def run(self, command: str, **_kw):
        from types import SimpleNamespace

        self.commands.append(command)
        if " -m pytest " in command:
            path = Path(command.split("--junitxml=", 1)[1].split()[0])
            path.write_text(self.junit_text)
            return SimpleNamespace(exited=self.code, command=command)
        return SimpleNamespace(exited=0, command=command)


@pytest.mark.parametrize(("junit", "code", "words"), [
    ('<testsuites><testsuite tests="0"/></testsuites>', 5, "kernlab: error: no test ran (none matches -k"),
    ('<testsuites><testsuite tests="0"/></testsuites>', 0, "kernlab: error: no test ran (none matches -k"),
    ('<testsuites><testsuite><testcase name="a"><failure/></testcase></testsuite></testsuites>', 1,
     "kernlab: error: tests failed (pytest exit 1)"),
])
def test_the_test_task_fails_when_no_test_ran(tmp_path, monkeypatch, junit, code, words) -> None:
    """FAKE pytest (a Context whose run() writes the JUnit file): zero tests is a failure."""
    from invoke import Exit

    import tasks
    from kernlab.core import hostdeps

    monkeypatch.setattr(hostdeps, "missing_packages", lambda packages: [])
    with pytest.raises(Exit) as caught:
        tasks.test.body(_FakeContext(junit, code), k="no_such_test", junit=str(tmp_path / "j.xml"))
    assert caught.value.message.startswith(words)
    assert caught.value.code != 0


def test_a_bundle_refuses_to_write_outside_itself(tmp_path: Path) -> None:
    """Defence in depth behind the experiment.yaml checks: names that reach a bundle from
    user files or from the guest (artifacts, steps) cannot leave it, not even by a symlink."""
    from kernlab.core.errors import KernlabError
    from kernlab.experiments.bundle import Bundle

    root = tmp_path / "results"
    bundle = Bundle.create("e", "6.1", root)
    (bundle.dir / "link").symlink_to(tmp_path)
    for rel in ("../x", "/tmp/kernlab-escape", "artifacts/../../x", "link/x", ""):
        with pytest.raises(KernlabError, match="refusing to write into the bundle"):
            bundle.write(rel, "content from the guest")
    with pytest.raises(KernlabError, match="refusing to write into the bundle"):
        bundle.copy_in(Path(__file__), "../stolen.py")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert not Path("/tmp/kernlab-escape").exists()
    for experiment, kernel in (("../e", "6.1"), ("e", "../../6.1"), ("e", "")):
        with pytest.raises(KernlabError, match="cannot name a results bundle"):
            Bundle.create(experiment, kernel, root)
    assert bundle.write("artifacts/hist.svg", "<svg/>").is_file()


def test_host_workdirs_stay_in_a_folder_of_their_own() -> None:
    from kernlab.fanout.fleet import workdir_problem

    assert workdir_problem("kernlab-remote") is None and workdir_problem("runs/lab2") is None
    assert workdir_problem("/srv/kernlab") is None  # an explicit place, as hosts.example.yaml shows
    for bad in ("../x", "a/../../b", "/", "/srv/../etc", "~/x", ""):
        assert workdir_problem(bad), bad
