"""The probe atlas on a tiny synthetic kernel: a C file compiled with gcc (-g, so it has
DWARF), its `nm -n` as System.map plus the table symbols a vmlinux has
(``__start_mcount_loc``..., pointing at arrays in the ELF itself), a .config, and a source
tree with the file and an object for it. No kernel is built; the analysis is the real one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from kernlab.core.errors import KernlabError
from kernlab.core.records import BuildRecord
from kernlab.experiments.fit import resolve_vars
from kernlab.experiments.probecheck import experiment_targets
from kernlab.experiments.suite import load_experiment
from kernlab.probes.atlas import Kernel, row_for, table
from kernlab.probes.probeable import refusal, rewrite
from kernlab.probes.source import find_definition
from kernlab.probes.target import Target, parse_target, parse_targets

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

SOURCE = r"""
#define noinline __attribute__((noinline))
#define NOKPROBE_SYMBOL(f) unsigned long __kbl_##f = (unsigned long)f
#define macro_thing(x) ((x) + 1)
volatile int sink;

noinline void traced(void) { sink = 1; }
noinline void untraced(void) { sink = 2; }
noinline void refused(void) { sink = 3; }
static inline int folded(int x) { sink = x; return x * 3; }
noinline int outer(int x) { return folded(x) + 1; }
noinline void helper(void) { sink = 4; }
noinline void __x64_sys_write(void) { sink = 5; }
int main(void) { traced(); untraced(); refused(); helper(); __x64_sys_write(); return outer(2); }

unsigned long mcount_table[] = { (unsigned long)traced + 1, (unsigned long)outer + 1,
                                 (unsigned long)helper + 1, (unsigned long)__x64_sys_write + 1 };
unsigned long blacklist_table[] = { (unsigned long)refused };
"""
TABLES = {"mcount_table": ("__start_mcount_loc", "__stop_mcount_loc", 4),
          "blacklist_table": ("__start_kprobe_blacklist", "__stop_kprobe_blacklist", 1)}


def fake_build(tmp: Path, release: str = "5.4.0", notrace_ok: bool = False) -> BuildRecord:
    """A build record whose outputs are a gcc-made ELF, its System.map and a .config."""
    tree, obj = tmp / "tree", tmp / "obj"
    (tree / "lib").mkdir(parents=True)
    (obj / "lib").mkdir(parents=True)
    (tree / "lib" / "t.c").write_text(SOURCE)
    (tree / "lib" / "Makefile").write_text("obj-y += t.o\n")
    subprocess.run(["gcc", "-O2", "-g", "-no-pie", "-fno-ipa-icf", "-o", str(obj / "vmlinux"), "lib/t.c"],
                   cwd=tree, check=True)
    (obj / "lib" / "t.o").write_text("")
    nm = subprocess.run(["nm", "-n", str(obj / "vmlinux")], capture_output=True, text=True, check=True)
    lines = [line for line in nm.stdout.splitlines() if len(line.split()) == 3]
    for line in list(lines):
        addr, _, name = line.split()
        if name in TABLES:
            first, last, count = TABLES[name]
            lines.append(f"{addr} D {first}")
            lines.append(f"{int(addr, 16) + 8 * count:016x} D {last}")
        if name == "helper":  # gcc's clone, as a kernel build would name it
            lines.append(f"{int(addr, 16) + 0:016x} t helper2.isra.0")
    (obj / "System.map").write_text("\n".join(sorted(lines)) + "\n")
    options = ["KPROBES=y", "KPROBE_EVENTS=y", "DYNAMIC_FTRACE=y", "FTRACE_SYSCALLS=y", "UPROBE_EVENTS=y"]
    if notrace_ok:
        options.append("KPROBE_EVENTS_ON_NOTRACE=y")
    (obj / ".config").write_text("".join(f"CONFIG_{o}\n" for o in options))
    out = {n: {"path": str(obj / f)} for n, f in (("vmlinux", "vmlinux"), ("System.map", "System.map"),
                                                   ("config", ".config"))}
    return BuildRecord.from_json({"version": "9.9-test", "release": release,
                                  "build_dir": str(tmp / "9.9-test-000000000000"),
                                  "tree": str(tree), "outputs": out, "patches": [],
                                  "fragments": [{"path": "configs/lab-9.9.config"}]})


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> Kernel:
    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    build = fake_build(tmp_path)
    (tmp_path / "9.9-test-000000000000").mkdir()
    (tmp_path / "9.9-test-000000000000" / "obj").symlink_to(tmp_path / "obj")
    return Kernel(build)


def verdict(kernel: Kernel, text: str):
    return row_for(parse_target(text), kernel)


def test_a_function_with_an_ftrace_call_site_is_attachable(kernel):
    row = verdict(kernel, "traced")
    assert row.verdict == "attachable" and "ftrace call site" in row.reason
    assert row.evidence[0].startswith("System.map: T traced")


def test_a_notrace_function_is_refused_where_the_kernel_checks_and_the_fix_names_the_option(kernel):
    row = verdict(kernel, "untraced")
    assert row.verdict == "no" and "Could not probe notrace function untraced" in row.reason
    assert "CONFIG_KPROBE_EVENTS_ON_NOTRACE=y" in row.fix and "lab-9.9.config" in row.fix


def test_notrace_is_fine_before_4_19_and_with_the_option(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNLAB_STATE", str(tmp_path / "state"))
    old = Kernel(fake_build(tmp_path / "a", release="4.15"))
    assert verdict(old, "untraced").verdict == "attachable"
    assert "no notrace check" in verdict(old, "untraced").reason
    allowed = Kernel(fake_build(tmp_path / "b", notrace_ok=True))
    assert "allowed by CONFIG_KPROBE_EVENTS_ON_NOTRACE=y" in verdict(allowed, "untraced").reason


def test_a_blacklisted_function_is_not_attachable(kernel):
    row = verdict(kernel, "refused")
    assert row.verdict == "no" and "NOKPROBE_SYMBOL(refused)" in row.reason


def test_an_inlined_static_function_names_its_callers_from_dwarf(kernel):
    row = verdict(kernel, "kretprobe:folded")
    assert row.verdict == "no"
    assert row.inlined_into == ["outer"] and "DWARF: inlined_subroutine" in row.evidence
    assert "static inline folded (lib/t.c:" in row.reason
    assert "invoke make-probeable folded --version 9.9-test" in row.fix


def test_a_clone_is_attachable_under_its_name(kernel):
    row = verdict(kernel, "helper2")
    assert row.verdict == "clone" and row.use == "helper2.isra.0"
    assert row.shown == "attachable as helper2.isra.0"


def test_a_renamed_syscall_entry_names_the_name_to_use(kernel):
    row = verdict(kernel, "SyS_write")
    assert row.verdict == "no" and row.fix == "probe __x64_sys_write on this kernel"


def test_a_macro_and_an_unknown_name(kernel):
    assert "is a macro (lib/t.c:4)" in verdict(kernel, "macro_thing").reason
    assert "not in this kernel" in verdict(kernel, "no_such_function").reason


def test_tracepoints_and_uprobes(kernel, tmp_path):
    assert verdict(kernel, "tracepoint:syscalls:sys_enter_read").verdict == "no"
    binary = tmp_path / "obj" / "vmlinux"
    assert verdict(kernel, f"uprobe:{binary}:outer").verdict == "attachable"
    assert verdict(kernel, f"uprobe:{binary}:nothere").verdict == "no"


def test_the_table_has_one_line_per_target_and_a_reason_per_cell(kernel):
    rows = [row_for(t, kernel) for t in parse_targets(["traced,folded", "helper2"])]
    text = table(rows)
    assert text.splitlines()[1].split() == ["traced", "attachable"]
    assert "attachable as helper2.isra.0" in text and "why:" in text and "evidence:" in text


def test_target_forms_and_a_bad_one():
    assert parse_target("tracepoint:sched:sched_switch") == Target("tracepoint", "sched_switch", "sched")
    assert parse_target("uprobe:/bin/bash:readline") == Target("uprobe", "readline", "/bin/bash")
    assert str(parse_target("kretprobe:vfs_read")) == "kretprobe:vfs_read"
    with pytest.raises(KernlabError, match="is not a probe target"):
        parse_target("tracepoint:only")


def test_make_probeable_rewrites_the_definition_and_refuses_what_cannot_work(kernel):
    text = "x\n/* c */\nstatic inline loff_t *file_ppos(struct file *file)\n{\n"
    found = find_definition(kernel.tree, kernel.obj, "folded")
    assert found is not None and found.words == {"static", "inline"}
    made = rewrite(text, "file_ppos", type(found)("f.c", 3, "", {"static", "inline"}))
    assert "noinline loff_t *file_ppos(struct file *file)" in made and "static" not in made
    made = rewrite("static int copyout(void *to)\n{", "copyout", type(found)("f.c", 1, "", {"static"}))
    assert "noinline int copyout(void *to)" in made
    assert refusal(kernel, "folded", found) == ""
    for name, why in (("macro_thing", "is a macro"), ("traced", "nothing to do")):
        assert why in refusal(kernel, name, find_definition(kernel.tree, kernel.obj, name))


def test_an_experiments_targets_come_from_its_sec_names_and_vars():
    exp = load_experiment("hellotrace")
    assert [str(t) for t in experiment_targets(exp, resolve_vars(exp, "4.15"))] == ["SyS_write"]
    assert [str(t) for t in experiment_targets(exp, resolve_vars(exp, "6.1"))] == ["__x64_sys_write"]
    assert {str(t) for t in experiment_targets(load_experiment("readiter"), {})} == {
        "copy_page_to_iter", "copyout"}
    found = {str(t) for t in experiment_targets(load_experiment("file-io"), resolve_vars(
        load_experiment("file-io"), "6.1"))}
    assert {"vfs_open", "kretprobe:ext4_file_open", "tracepoint:syscalls:sys_enter_open"} <= found


LOG_415 = """libbpf: prog 'value_size': -- BEGIN PROG LOAD LOG --
6: (85) call bpf_map_lookup_elem#1
7: (15) if r0 == 0x0 goto pc+11
 R0=map_value(id=0,off=0,ks=4,vs=4,imm=0) R6=inv0 R10=fp0
14: (79) r3 = *(u64 *)(r0 +0)
 R0=map_value(id=0,off=0,ks=4,vs=4,imm=0) R1=inv7792670350368334198 R6=inv0 R10=fp0
invalid access to map value, value_size=4 off=0 size=8
R0 min value is outside of the array range
-- END PROG LOAD LOG --
"""
LOG_61 = """libbpf: prog 'value_size': -- BEGIN PROG LOAD LOG --
reg type unsupported for arg#0 function value_size#15
0: R1=ctx(off=0,imm=0) R10=fp0
; __u32 *value = bpf_map_lookup_elem(&params, &key);
4: (18) r1 = 0xffff88800e546008       ; R1_w=map_ptr(off=0,ks=4,vs=8,imm=0)
13: (79) r3 = *(u64 *)(r0 +0)         ; R0_w=map_value(off=0,ks=4,vs=4,imm=0)
invalid access to map value, value_size=4 off=0 size=8
processed 11 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
-- END PROG LOAD LOG --
"""


def test_verifier_logs_of_two_releases_normalize_to_the_same_message_and_instruction():
    from kernlab.compare.atlas_report import parse_rejection

    old, new = parse_rejection(LOG_415), parse_rejection(LOG_61)
    assert old[:2] == new[:2] == ("invalid access to map value, value_size=4 off=0 size=8",
                                  "(79) r3 = *(u64 *)(r0 +0)")
    assert (old[2], new[2]) == ("14", "13")
    assert parse_rejection("no log here") == ("", "", "", "")


def test_probe_targets_given_as_words_become_one_positional():
    from kernlab.core.cli import _join_words

    argv = ["probes", "copyout", "vfs_read", "--kernels", "4.15,6.1", "SyS_write", "--json"]
    _join_words(argv, "probes", {"--kernels", "--targets"}, {"--targets"})
    assert argv == ["probes", "copyout,vfs_read,SyS_write", "--kernels", "4.15,6.1", "--json"]
    argv = ["probes", "--targets", "copyout", "-t=vfs_read", "SyS_write"]
    _join_words(argv, "probes", {"--targets", "-t"}, {"--targets", "-t"})
    assert argv == ["probes", "copyout,vfs_read,SyS_write"]


def test_a_new_patch_is_pinned_only_where_the_lock_has_the_version(tmp_path, monkeypatch):
    from kernlab.core import lock

    monkeypatch.setenv("KERNLAB_LOCK", str(tmp_path / "kernlab.lock"))
    lock.write_lock({"kernels": {"5.4.286": {"patches": {"0001-a.patch": "aa"}, "source_sha256": "s"}},
                     "images": {}})
    assert lock.add_patch(["5.4", "5.4.286"], "0002-b.patch", "bb") == ["5.4.286"]
    entry = lock.read_lock()["kernels"]["5.4.286"]
    assert entry == {"patches": {"0001-a.patch": "aa", "0002-b.patch": "bb"}, "source_sha256": "s"}


def test_an_inlined_function_a_catalog_patch_defines_names_that_patch_as_the_fix(kernel, tmp_path,
                                                                                 monkeypatch):
    """Built without the series' patch that makes it a symbol (a --no-patch build, or an old
    build): the fix is that patch, not a new make-probeable one (6.1's copyout without its
    patch; the real build of that is 6.12's in test_probes_slow)."""
    project = tmp_path / "project"
    (project / "patches" / "9.9").mkdir(parents=True)
    (project / "configs").mkdir()
    (project / "patches" / "9.9" / "0001-folded.patch").write_text(
        "--- a/lib/t.c\n+++ b/lib/t.c\n@@ -1 +1 @@\n-static inline int folded(int x)\n"
        "+noinline int folded(int x)\n")
    (project / "configs" / "kernels.yaml").write_text(
        "kernels:\n  9.9-test:\n    release: '9.9'\n    compiler: gcc\n"
        f"    sources: [{{file: {{path: /nonexistent/l.tar.xz, sha256: '{'0' * 64}'}}}}]\n"
        "    patches: ['9.9']\n    config: {base: tinyconfig}\n")
    monkeypatch.setenv("KERNLAB_ROOT", str(project))
    monkeypatch.delenv("KERNLAB_CONFIGS", raising=False)
    row = verdict(kernel, "folded")
    assert row.verdict == "no" and row.inlined_into == ["outer"]
    assert row.fix == "build with patches/9.9/0001-folded.patch: `invoke build-kernel --version 9.9-test`"
