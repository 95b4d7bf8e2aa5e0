"""What a build refuses, on the fake kernel tree (tests/fakekernel.py), through the real CLI:
a hunk that would apply only at an offset or with fuzz (the tree kept to refresh it), a
catalog ``symbols:`` entry missing from System.map (the reason said), a ``noinline`` gcc
ignored, and a patch whose header names another release (flagged by ``--plan``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fakekernel
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

IOV = "".join(f"int filler{i};\n" for i in range(8)) + (
    "static __always_inline\nsize_t copy_to_user_iter(void *to)\n{\n\treturn 0;\n}\n")
ADD_IOV = "--- /dev/null\n+++ b/lib/iov_iter.c\n@@ -0,0 +1,13 @@\n" + "".join(
    f"+{line}\n" for line in IOV.splitlines())
# 6.12's mistake: noinline under __always_inline (gcc warns, ignores it, inlines anyway)
NOINLINE = ("kernlab: lib/iov_iter: make copy_to_user_iter probe-able\n\n"
            "Kernel:  6.1 (written for 6.1.192)\n\n"
            "--- a/lib/iov_iter.c\n+++ b/lib/iov_iter.c\n@@ -8,5 +8,5 @@\n int filler7;\n"
            " static __always_inline\n-size_t copy_to_user_iter(void *to)\n"
            "+noinline size_t copy_to_user_iter(void *to)\n {\n \treturn 0;\n")
WARNING = ("lib/iov_iter.c:10:1: warning: ignoring attribute 'noinline' because it conflicts with "
           "attribute 'always_inline' [-Wattributes]")


def lab(tmp: Path, patches: dict[str, str], **entry: object) -> dict[str, str]:
    """The fake 9.9 with one series of ``patches`` (name: text) and extra catalog keys."""
    tmp.mkdir(parents=True, exist_ok=True)
    sha = fakekernel.tarball(tmp / "linux-9.9.tar.gz")
    series = tmp / "patches" / "9.9"
    series.mkdir(parents=True)
    for name, text in patches.items():
        (series / name).write_text(text)
    (series / "series").write_text("# written for: 9.9\n" + "".join(f"{n}\n" for n in patches))
    fakekernel.catalog(tmp / "configs", {"file": {"path": str(tmp / "linux-9.9.tar.gz"), "sha256": sha}},
                       patches=(str(series),))
    catalog = yaml.safe_load((tmp / "configs" / "kernels.yaml").read_text())
    catalog["kernels"]["9.9"].update(entry)
    (tmp / "configs" / "kernels.yaml").write_text(yaml.safe_dump(catalog))
    return fakekernel.environ(tmp)


def test_a_hunk_at_an_offset_is_an_error_naming_it_and_the_tree_is_kept(tmp_path):
    moved = NOINLINE.replace("@@ -8,5 +8,5 @@", "@@ -5,5 +5,5 @@")  # written for a tree 3 lines shorter
    env = lab(tmp_path, {"0001-add.patch": ADD_IOV, "0002-moved.patch": moved})
    out = fakekernel.cli(env, "build-kernel", "--version", "9.9", code=1)
    assert ("patch 0002-moved.patch: hunk #1 of lib/iov_iter.c applies only with an offset of 3 lines "
            "(at line 8)") in out
    (kept,) = (tmp_path / "work" / "src").glob("9.9-*.failed")
    assert f"the tree is kept at {kept} (the patches before 0002-moved.patch applied, it not)" in out
    assert (kept / "lib" / "iov_iter.c").read_text() == IOV  # 0001 applied, 0002 not
    assert [p.name for p in (tmp_path / "work" / "src").iterdir()] == [kept.name]  # none passes for done
    fuzzy = NOINLINE.replace(" int filler7;\n", " int filler_changed;\n")
    env = lab(tmp_path / "b", {"0001-add.patch": ADD_IOV, "0002-fuzzy.patch": fuzzy})
    assert "hunk #1 of lib/iov_iter.c applies only with fuzz 1" in fakekernel.cli(
        env, "build-kernel", "--version", "9.9", code=1)


def test_a_patch_whose_header_names_another_release_is_flagged_by_the_plan(tmp_path):
    env = lab(tmp_path, {"0001-add.patch": ADD_IOV, "0002-noinline.patch": NOINLINE})
    plan = json.loads(fakekernel.cli(env, "build-kernel", "--version", "9.9", "--plan"))
    assert plan["patches"][1].endswith("WRITTEN FOR 6.1 (its header), not 9.9")
    assert "WRITTEN FOR" not in plan["patches"][0]


def test_a_symbol_the_catalog_requires_and_system_map_lacks_fails_the_build_with_the_reason(tmp_path):
    env = lab(tmp_path, {"0001-add.patch": ADD_IOV}, symbols=["copyout"])
    out = fakekernel.cli(env, "build-kernel", "--version", "9.9", code=1)
    assert "kernlab: error: copyout not in System.map of 9.9-" in out
    assert ("which the catalog's symbols: for 9.9 requires (copyout: no file this build compiles "
            "defines it: renamed or removed in this release") in out
    assert not list((tmp_path / "work" / "build").glob("*/build.json"))  # no record: not a build to use


def test_a_noinline_gcc_ignored_fails_the_build(tmp_path):
    env = lab(tmp_path, {"0001-add.patch": ADD_IOV, "0002-noinline.patch": NOINLINE})
    env["FAKE_MAKE_WARN"] = WARNING
    out = fakekernel.cli(env, "build-kernel", "--version", "9.9", code=1)
    assert ("kernlab: error: gcc ignored `noinline` on copy_to_user_iter (lib/iov_iter.c:10): it conflicts "
            "with `__always_inline`, so the function is still inlined") in out


@pytest.mark.parametrize("flag", ["--plan"])
def test_a_series_that_applies_exactly_builds(tmp_path, flag):
    env = lab(tmp_path, {"0001-add.patch": ADD_IOV})
    fakekernel.cli(env, "build-kernel", "--version", "9.9")
    assert (next((tmp_path / "work" / "src").glob("9.9-*")) / "lib" / "iov_iter.c").read_text() == IOV


def test_kernel_info_ends_its_last_line_and_list_kernels_into_a_closed_pipe_is_quiet(tmp_path):
    env = lab(tmp_path, {"0001-add.patch": ADD_IOV})
    fakekernel.cli(env, "build-kernel", "--version", "9.9")
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "kernel-info", "--version",
                           "9.9"], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1].startswith("  built in ") and done.stdout.endswith("Z\n")
    # the reader is gone before list-kernels writes: exit 141 (SIGPIPE's), no "kernlab bug" line
    piped = subprocess.run(f"'{sys.executable}' -m invoke -r '{ROOT}' list-kernels | true; "
                           "echo status=${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                           env=env, capture_output=True, text=True, timeout=60)
    assert "status=141" in piped.stdout and "kernlab bug" not in piped.stderr, piped.stderr
