"""Which build a command uses, and experiments that do not apply to a kernel (n/a).

Builds are tiny fake build directories written the way kernlab.build writes them
(build.json last, its outputs real files); experiments are YAML fixtures in tmp
dirs (KERNLAB_EXPERIMENTS). CLI checks run the real `invoke` in a subprocess. Nothing
here builds a kernel, resolves a source over the network or boots a VM.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kernlab.core.errors import BuildInputError, KernlabError, NotFound
from kernlab.core.progress import without_stamp
from kernlab.core.records import BuildRecord
from kernlab.core.util import atomic_write_json
from kernlab.experiments.fit import check_needs, na_reason
from kernlab.experiments.suite import load_experiment
from kernlab.kernel import selection as builds

ROOT = Path(__file__).resolve().parent.parent
NOTRACE = "KPROBE_EVENTS_ON_NOTRACE"


# ---------------------------------------------------------------- fixtures
def fake_build(work: Path, version: str, key: str, *, release: str = "", origin: str = "",
               kind: str = "file", built_at: str = "2026-01-01T00:00:00Z", latest: bool = False,
               config: str = "CONFIG_BPF_SYSCALL=y\n", not_applicable: tuple[str, ...] = (),
               tree: Path | None = None) -> dict:
    """``<work>/build/<version>-<key12>/`` with outputs and build.json, as build.py writes it."""
    build_dir = work / "build" / f"{version}-{key[:12]}"
    obj = build_dir / "obj"
    (obj / "arch/x86/boot").mkdir(parents=True)
    outputs = {}
    for name, rel, text in (("bzImage", "arch/x86/boot/bzImage", "kernel"), ("vmlinux", "vmlinux", "elf"),
                            ("System.map", "System.map", "ffffffff81000000 T copyout\n"),
                            ("config", ".config", config)):
        (obj / rel).write_text(text)
        outputs[name] = {"path": str(obj / rel), "sha256": "0" * 64, "size": len(text)}
    outputs["headers"] = {"path": str(obj / "usr/include")}
    record = {
        "version": version, "release": release or version, "kernelrelease": f"{release or version}-kernlab",
        "key": key, "build_dir": str(build_dir), "tree": str(tree or work / "src" / "none"),
        "source": {"kind": kind, "origin": origin or f"/tarballs/linux-{version}.tar.xz",
                   "sha256": "5" * 64, "verified": True},
        "patches": [], "fragments": [], "config_base": "tinyconfig", "config_sha256": "0" * 64,
        "config_check": {"verified": 1, "not_applicable": list(not_applicable)},
        "compiler": "gcc-12 (fake) 12.2.0", "binutils": "GNU ld (fake) 2.40", "pahole": "v1.24",
        "make_command": "make", "environment": {}, "outputs": outputs, "symbols": {"copyout": "copyout"},
        "duration_s": 1.0, "built_at": built_at,
    }
    atomic_write_json(build_dir / "build.json", record)
    if latest:
        atomic_write_json(work / "latest" / f"{version}.json", {"build_dir": str(build_dir)})
    return record


def write_exp(root: Path, name: str, extra: str = "") -> Path:
    """A minimal valid experiment, plus ``extra`` top-level YAML (e.g. a needs: block)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent("""\
        title: a tiny experiment
        description: shows the format
        run:
          steps:
            - {name: workload, cmd: echo hello}
        expect:
          - {in: "step:workload", contains: hello}
        """) + textwrap.dedent(extra)
    (folder / "experiment.yaml").write_text(text)
    return folder / "experiment.yaml"


FUTURE = 'needs:\n  features: {bpf_time_travel: "9.9", bpf_probe_read_user: "5.5"}\n'
USER_55 = 'needs:\n  features: {bpf_probe_read_user: "5.5"}\n'


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty kernel work area (KERNLAB_WORK), no local tarballs in front of the catalog."""
    area = tmp_path / "kernels"
    area.mkdir()
    monkeypatch.setenv("KERNLAB_WORK", str(area))
    monkeypatch.delenv("KERNLAB_LOCAL_KERNELS", raising=False)
    return area


def invoke(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The real CLI; the caller's KERNLAB_* settings in ``env``."""
    full = {k: v for k, v in os.environ.items() if k != "KERNLAB_LOCAL_KERNELS"}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=300, env={**full, **env, "KERNLAB_PLAIN": "1"})


def last_line(done: subprocess.CompletedProcess) -> str:
    return done.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- choosing a build
def test_a_version_uses_its_only_build(work):
    record = fake_build(work, "4.15", "a" * 64, release="4.15")
    choice = builds.choose_kernel("4.15")
    assert choice.record.to_json() == record and choice.release == "4.15" and choice.builds == 1


def test_build_ids_exact_and_by_unique_prefix(work):
    fake_build(work, "5.4.286", "1" * 64, built_at="2026-01-01T00:00:00Z")
    newer = fake_build(work, "5.4.286", "12" + "3" * 62, built_at="2026-01-02T00:00:00Z")
    assert builds.choose_kernel("5.4.286-123").record.to_json() == newer
    assert builds.choose_kernel("5.4.286-" + "1" * 12).build.id == "5.4.286-" + "1" * 12
    with pytest.raises(KernlabError, match=r"build id prefix '5.4.286-1' matches 2 builds: "
                                           r"5.4.286-111111111111, 5.4.286-123333333333"):
        builds.choose_kernel("5.4.286-1")
    with pytest.raises(NotFound, match=r"unknown kernel version '5.4.9'.*a catalog version or a build id"):
        builds.choose_kernel("5.4.9")  # no '-': a version, never a prefix of 5.4.286-...


def test_of_several_builds_the_latest_pointer_wins_then_the_newest(work, capsys):
    old = fake_build(work, "5.4.286", "b" * 64, built_at="2026-01-01T00:00:00Z", latest=True)
    fake_build(work, "5.4.286", "c" * 64, built_at="2026-02-01T00:00:00Z", origin="/src/linux@HEAD",
               kind="git")
    assert builds.choose_kernel("5.4.286").record.to_json() == old  # build-kernel's last word
    (work / "latest" / "5.4.286.json").unlink()
    choice = builds.choose_kernel("5.4.286")
    assert choice.build.id == "5.4.286-cccccccccccc" and choice.builds == 2
    builds.announce(choice, "--kernels")
    note = without_stamp(capsys.readouterr().err.strip().splitlines()[0])  # then: not today's patches
    assert note == ("- kernel 5.4.286: build 5.4.286-cccccccccccc (5.4.286, from /src/linux@HEAD, built "
                    "2026-02-01T00:00:00Z); 2 builds of 5.4.286: --kernels BUILD_ID picks another "
                    "(`invoke list-kernels`)")


def test_a_build_of_todays_catalog_patches_wins_and_a_stale_one_is_named(work, capsys):
    today = builds.catalog_recipe("5.4.286")
    assert today and today["patches"], "5.4.286 has catalog patches"
    stale = fake_build(work, "5.4.286", "d" * 64, built_at="2026-02-01T00:00:00Z", latest=True)
    fresh = fake_build(work, "5.4.286", "e" * 64, built_at="2026-01-01T00:00:00Z")
    fresh["patches"] = [{"name": f"p{i}", "sha256": h} for i, h in enumerate(today["patches"])]
    fresh["fragments"] = [{"path": f"f{i}", "sha256": h} for i, h in enumerate(today["fragments"])]
    atomic_write_json(Path(fresh["build_dir"]) / "build.json", fresh)
    assert builds.choose_kernel("5.4.286").build.id == "5.4.286-eeeeeeeeeeee"
    builds.announce(builds.choose_kernel(Path(stale["build_dir"]).name))
    assert ("build 5.4.286-dddddddddddd was made with other patches and fragments than the "
            "catalog's today; `invoke build-kernel --version 5.4.286` makes one with them"
            ) in capsys.readouterr().err


def test_an_unbuilt_catalog_version_is_chosen_for_building(work):
    choice = builds.choose_kernel("4.15")
    assert choice.build is None and choice.release == "4.15" and choice.version == "4.15"
    with pytest.raises(NotFound, match=r"kernel 4.15 is not built; run `invoke build-kernel --version 4.15`"):
        builds.select_build("4.15")


def test_an_existing_build_is_used_without_resolving_sources(work, monkeypatch):
    """5.4.286's catalog source has no pinned sha256: resolving it would fail. It is not resolved."""
    record = fake_build(work, "5.4.286", "d" * 64, origin="/shared/linux-5.4.286.tar.xz")

    def no_build(*_args, **_kwargs):
        raise AssertionError("build_kernel called for a built kernel")

    monkeypatch.setattr("kernlab.kernel.build.build_kernel", no_build)
    monkeypatch.setattr("kernlab.kernel.source.resolve_source", no_build)
    assert builds.build_for(builds.choose_kernel("5.4.286")).to_json() == record


def test_an_unbuilt_version_is_built_with_a_hint_and_a_build_kernel_fix(work, monkeypatch, capsys):
    """--kernel 5.4 with only 5.4.286 built: said before building; a failed build's fix names build-kernel."""
    fake_build(work, "5.4.286", "4" * 64)
    calls = []

    def unpinned(version, *_args):
        calls.append(version)
        raise BuildInputError("https://x/linux-5.4.302.tar.xz has no pinned sha256 in the catalog",
                              "pass --sha256 SUM", flags=("--sha256 SUM",))

    monkeypatch.setattr("kernlab.kernel.build.build_kernel", unpinned)
    from kernlab.experiments.session import Session

    session = Session("5.4")
    for _ in range(2):  # a suite's next experiment gets the same error, without a second build
        with pytest.raises(KernlabError) as info:
            session.kernel_and_image()
        assert info.value.fix == "build it first: `invoke build-kernel --version 5.4 --sha256 SUM`"
    assert calls == ["5.4"]
    assert "kernel 5.4 is not built (5.4.286 is built: --kernel 5.4.286 uses it): building it from " \
           "the catalog" in capsys.readouterr().err


def test_an_implicit_build_says_build_it_first():
    error = BuildInputError("https://x/linux-5.4.286.tar.xz has no pinned sha256 in the catalog",
                            "pin one with --sha256 SUM, or pass --allow-unverified",
                            flags=("--sha256 SUM", "--allow-unverified"), other_fix="pin it in the catalog")
    fix = builds.build_first(error, "5.4.286").fix
    assert fix == ("pin it in the catalog, or build it first: `invoke build-kernel --version 5.4.286 "
                   "--sha256 SUM` (or build-kernel with --allow-unverified)")
    explicit = KernlabError("make failed", "read the log; `invoke build-kernel --clean` starts from scratch")
    assert builds.build_first(explicit, "6.1") is explicit


# ---------------------------------------------------------------- applicability
def test_features_make_an_experiment_na_with_the_reason(tmp_path):
    write_exp(tmp_path, "tiny", FUTURE)
    exp = load_experiment("tiny", tmp_path)
    assert exp.kernels_summary() == "bpf_time_travel >= 9.9, bpf_probe_read_user >= 5.5"
    assert na_reason(exp, "4.15") == ("needs bpf_time_travel (Linux 9.9), bpf_probe_read_user (Linux 5.5); "
                                      "kernel 4.15 is older")
    write_exp(tmp_path, "user", USER_55)
    exp = load_experiment("user", tmp_path)
    assert na_reason(exp, "5.4.286") == "needs bpf_probe_read_user (Linux 5.5); kernel 5.4.286 is older"
    assert na_reason(exp, "5.5") == na_reason(exp, "5.10.223") == ""


@pytest.mark.parametrize("extra, note, na", [
    ('kernels: {min: "5.5"}\n', 'kernels: {min: "5.5"} without a reason is the older format, read as n/a '
     'before Linux 5.5; name what older kernels lack instead: needs: {features: {NAME: "5.5"}} (or drop '
     "kernels: to run on every kernel)",
     ("5.4.286", "needs Linux 5.5 (an older-format bound, no reason given); kernel 5.4.286 is older")),
    ('kernels: {max: "6.1"}\n', 'kernels: {max: "6.1"} without a reason is the older format, read as n/a '
     'after Linux 6.1; add the reason: kernels: {max: "6.1", reason: "what newer kernels break"}',
     ("6.2", "supports Linux up to 6.1 (an older-format bound, no reason given); kernel 6.2 is newer")),
])
def test_older_format_bounds_are_read_with_a_note(tmp_path, extra, note, na):
    """Last month's ``kernels: {min: V}`` (no reason) still loads and means what it meant;
    the note (printed by run-experiment and check-experiment) gives the text to write."""
    write_exp(tmp_path, "old", extra)
    exp = load_experiment("old", tmp_path)
    assert exp.warnings == [note]
    assert na_reason(exp, na[0]) == na[1]
    assert na_reason(exp, "6.1") == ""


@pytest.mark.parametrize("extra, key, problem", [
    ("needs:\n  features: {ringbuf: 5.10}\n", "needs.features.ringbuf",
     "must be the quoted Linux release that added it"),
])
def test_unquoted_feature_releases_are_refused(tmp_path, extra, key, problem):
    spec = write_exp(tmp_path, "bad", extra)
    with pytest.raises(KernlabError) as info:
        load_experiment("bad", tmp_path)
    assert str(info.value).startswith(f"{spec}: {key}: ")
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_a_minimum_with_a_stated_reason_is_kept(tmp_path):
    write_exp(tmp_path, "min", 'kernels: {min: "4.17", reason: "the x86 syscall wrapper"}\n')
    exp = load_experiment("min", tmp_path)
    assert na_reason(exp, "4.15") == "needs Linux 4.17 (the x86 syscall wrapper); kernel 4.15 is older"


def test_the_shipped_suite_has_no_bare_minimum():
    from kernlab.experiments.suite import load_all

    for exp in load_all():
        assert exp.kernel_min is None, exp.name
        assert na_reason(exp, "4.15") == "" or exp.features, exp.name


def test_config_options_a_kernel_does_not_have_are_skipped(tmp_path, capsys):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Kconfig").write_text("config BPF_SYSCALL\n\tbool\nmenuconfig KPROBES\n\tbool\n")
    record = fake_build(tmp_path, "4.15", "e" * 64, tree=tree, not_applicable=(NOTRACE,))
    write_exp(tmp_path / "exps", "tiny", f"needs:\n  config: [BPF_SYSCALL, {NOTRACE}, IKHEADERS]\n")
    build = BuildRecord.from_json(record)
    assert check_needs(load_experiment("tiny", tmp_path / "exps"), build, {}) == {}
    err = capsys.readouterr().err
    assert f"CONFIG_{NOTRACE}: Linux 4.15 has no such option; skipped" in err  # the build's verdict
    assert "CONFIG_IKHEADERS: Linux 4.15 has no such option; skipped" in err  # not in its Kconfig
    write_exp(tmp_path / "exps", "kp", "needs:\n  config: [KPROBES]\n")
    with pytest.raises(KernlabError, match=r"CONFIG_KPROBES is not set in the 4.15 kernel"):
        check_needs(load_experiment("kp", tmp_path / "exps"), build, {})


# ---------------------------------------------------------------- the CLI
@pytest.fixture
def cli_env(tmp_path, work) -> dict[str, str]:
    """Fixture experiments, an empty work area and results/state dirs of this test."""
    exps = tmp_path / "exps"
    exps.mkdir()
    return {"KERNLAB_EXPERIMENTS": str(exps), "KERNLAB_WORK": str(work),
            "KERNLAB_RESULTS": str(tmp_path / "results"), "KERNLAB_STATE": str(tmp_path / "state"),
            "KERNLAB_LOCK": str(tmp_path / "kernlab.lock")}


def test_cli_single_run_na_is_one_line_and_exit_77(cli_env):
    write_exp(Path(cli_env["KERNLAB_EXPERIMENTS"]), "tiny", USER_55)
    done = invoke("run-experiment", "tiny", "--kernel", "4.15", env=cli_env)
    assert done.returncode == 77
    assert done.stderr.strip() == ("kernlab: n/a: tiny needs bpf_probe_read_user (Linux 5.5); "
                                   "kernel 4.15 is older")
    assert not Path(cli_env["KERNLAB_RESULTS"]).exists()  # decided before any work


def test_cli_suite_records_na_and_broken_experiments_and_goes_on(cli_env):
    exps = Path(cli_env["KERNLAB_EXPERIMENTS"])
    write_exp(exps, "future", FUTURE)
    write_exp(exps, "old-style", 'kernels: {min: "5.5"}\n')
    write_exp(exps, "broken", "needs:\n  features: {ringbuf: 5.10}\n")
    write_exp(exps, "user", USER_55)
    done = invoke("run-experiment", "--all", "--kernel", "5.4.286", env=cli_env)
    assert done.returncode == 1, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:-1]}
    assert "n/a" in rows["user"] and rows["user"].endswith(
        "needs bpf_probe_read_user (Linux 5.5); kernel 5.4.286 is older")
    assert "n/a" in rows["old-style"] and rows["old-style"].endswith(  # the older format, read
        "needs Linux 5.5 (an older-format bound, no reason given); kernel 5.4.286 is older")
    assert "FAIL" in rows["broken"] and "needs.features.ringbuf: must be the quoted" in rows["broken"]
    assert done.stdout.splitlines()[-1] == "0/1 passed, 3 n/a"
    result = json.loads(next((Path(cli_env["KERNLAB_RESULTS"]) / "user" / "5.4.286").glob("*/result.json"))
                        .read_text())
    assert (result["status"], result["reason"]) == ("n/a", "needs bpf_probe_read_user (Linux 5.5); "
                                                           "kernel 5.4.286 is older")


def test_cli_matrix_and_ci_show_na_cells_with_reasons(cli_env, tmp_path):
    exps = Path(cli_env["KERNLAB_EXPERIMENTS"])
    write_exp(exps, "future", FUTURE)
    build = fake_build(Path(cli_env["KERNLAB_WORK"]), "5.4.286", "f" * 64)
    out = tmp_path / "report"
    build_id = BuildRecord.from_json(build).id
    done = invoke("matrix", "--kernels", f"4.15,{build_id}", "--out", str(out), env=cli_env)
    assert done.returncode == 1, done.stderr  # every cell n/a: the run ran nothing (issue 11)
    assert done.stderr.strip().splitlines()[-1].startswith("kernlab: error: nothing ran: all 2 cells are n/a")
    assert done.stdout.splitlines()[0].split() == ["experiment", "4.15", "5.4.286-ffffffffffff"]
    assert "n/a   4.15 future: needs bpf_time_travel (Linux 9.9), bpf_probe_read_user (Linux 5.5); " \
           "kernel 4.15 is older" in done.stdout
    cells = json.loads((out / "matrix.json").read_text())["cells"]
    assert {c["status"] for c in cells} == {"n/a"} and all("is older" in c["reason"] for c in cells)
    skipped = ET.parse(out / "junit.xml").getroot().find(".//testcase/skipped")
    assert "needs bpf_time_travel (Linux 9.9)" in skipped.get("message")
    ci = invoke("ci", "--kernels", "4.15", "--out", str(tmp_path / "ci"), env=cli_env)
    assert ci.returncode == 1, ci.stderr  # a green CI that ran nothing would hide it
    assert "kernlab: ci PASS" not in ci.stdout
    assert ci.stderr.strip().splitlines()[-1].startswith("kernlab: error: nothing ran: all 1 cells are n/a")
    assert (tmp_path / "ci" / "junit.xml").is_file()  # the report with its n/a cells is still written


def test_cli_implicit_build_error_names_build_kernel(cli_env, tmp_path):
    """No 5.4.286 build; its catalog tarball (a catalog copy unpinned for the test) has no
    sha256: the fix is a build-kernel command."""
    import shutil

    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    catalog = configs / "kernels.yaml"
    catalog.write_text(catalog.read_text().replace(
        "sha256: 180754f3df0e8d7f206625255b3f5a6e1f441feec83336df42613ca8f6b1887c", "sha256: null"))
    write_exp(Path(cli_env["KERNLAB_EXPERIMENTS"]), "tiny")
    done = invoke("run-experiment", "tiny", "--kernel", "5.4.286",
                  env={**cli_env, "KERNLAB_CONFIGS": str(configs)})
    assert done.returncode == 1
    line = last_line(done)
    assert line.startswith("kernlab: error: https://cdn.kernel.org/pub/linux/kernel/v5.x/"
                           "linux-5.4.286.tar.xz has no pinned sha256 in the catalog; ")
    fix = line.split("; ", 1)[1]
    assert "build it first: `invoke build-kernel --version 5.4.286 --sha256 SUM`" in fix
    assert "pass --" not in fix  # run-experiment has none of build-kernel's flags


def test_cli_build_selection_shown_by_list_kernels_kernel_info_and_vm_up(cli_env):
    work = Path(cli_env["KERNLAB_WORK"])
    fake_build(work, "5.4.286", "1" * 64, built_at="2026-01-01T00:00:00Z", latest=True)
    fake_build(work, "5.4.286", "2" * 64, built_at="2026-01-02T00:00:00Z")
    listing = invoke("list-kernels", env=cli_env)
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("5.4.286 "))
    assert "5.4.286-111111111111" in row
    assert "* 5.4.286-111111111111  5.4.286" in listing.stdout
    assert "  5.4.286-222222222222  5.4.286" in listing.stdout
    info = invoke("kernel-info", "--version", "5.4.286-2", env=cli_env)
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith("kernel 5.4.286: 5.4.286-kernlab (build 5.4.286-222222222222)")
    info = invoke("kernel-info", "--version", "5.4.286", env=cli_env)
    assert "2 builds of 5.4.286: --version BUILD_ID picks another" in info.stderr
    assert "(build 5.4.286-111111111111)" in info.stdout
    up = invoke("vm.up", "--kernel", "5.10", "--name", "t-select", env=cli_env)
    assert up.returncode == 1
    assert last_line(up) == ("kernlab: error: kernel 5.10 is not built; "
                             "run `invoke build-kernel --version 5.10`")


def test_cli_lock_takes_a_build_id(cli_env):
    work = Path(cli_env["KERNLAB_WORK"])
    fake_build(work, "4.15", "9" * 64)
    fake_build(work, "4.15", "8" * 64, built_at="2025-01-01T00:00:00Z")
    done = invoke("lock", "--version", "4.15-888", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("locked kernel 4.15 (4.15-888888888888)")
    done = invoke("lock", env=cli_env)  # every built version, by the build it uses
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("locked kernel 4.15 (4.15-999999999999)")
    assert "2 builds of 4.15: --version BUILD_ID picks another" in done.stderr
    locked = json.loads(Path(cli_env["KERNLAB_LOCK"]).read_text())["kernels"]
    assert locked["4.15"]["source_sha256"] == "5" * 64


def test_cli_reproduce_a_gone_build_names_its_own_source(cli_env, tmp_path):
    record = fake_build(tmp_path / "elsewhere", "4.15", "7" * 64, origin=str(tmp_path / "gone.tar.xz"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    atomic_write_json(bundle / "manifest.json", {"build": record, "image": None,
                                                 "experiment": {"name": "tiny", "hash": "x"}})
    atomic_write_json(bundle / "result.json", {"status": "PASS", "expectations": []})
    done = invoke("reproduce", str(bundle), env=cli_env)
    assert done.returncode == 1
    assert last_line(done) == (f"kernlab: error: tarball {tmp_path / 'gone.tar.xz'} does not exist; "
                               "rebuild the bundle's kernel first: `invoke build-kernel --version 4.15 "
                               f"--tarball {tmp_path / 'gone.tar.xz'} --sha256 {'5' * 64}`")
