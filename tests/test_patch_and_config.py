"""Patches apply strictly and idempotently; a dropped config option is explained."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernlab.core.errors import KernlabError
from kernlab.kernel.kconfig import Request, parse_fragment, verify_config
from kernlab.kernel.patch import apply_series, read_series

ROOT = Path(__file__).resolve().parent.parent

ORIGINAL = "static int copyout(void)\n{\n\treturn 0;\n}\n"
PATCH = """header text: what and why

--- a/lib/iov_iter.c
+++ b/lib/iov_iter.c
@@ -1,4 +1,4 @@
-static int copyout(void)
+noinline int copyout(void)
 {
 \treturn 0;
 }
"""


def make_series(directory: Path, written_for: str = "9.9.1") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "0001-copyout.patch").write_text(PATCH)
    (directory / "series").write_text(f"# written for: {written_for}\n0001-copyout.patch\n")


def make_tree(root: Path, content: str = ORIGINAL) -> Path:
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "iov_iter.c").write_text(content)
    return root


def test_series_applies_once_and_rerun_is_a_no_op(tmp_path):
    make_series(tmp_path / "series")
    tree = make_tree(tmp_path / "tree")
    patches = read_series(tmp_path / "series")
    records = apply_series(tree, patches, "9.9.1", tmp_path / "patch.log")
    assert "noinline int copyout" in (tree / "lib" / "iov_iter.c").read_text()
    assert records[0]["name"] == "0001-copyout.patch" and len(records[0]["sha256"]) == 64
    before = (tree / "lib" / "iov_iter.c").read_text()
    apply_series(tree, patches, "9.9.1", tmp_path / "patch.log")
    assert (tree / "lib" / "iov_iter.c").read_text() == before


def test_already_patched_tree_without_marker_is_detected(tmp_path):
    make_series(tmp_path / "series")
    tree = make_tree(tmp_path / "tree", ORIGINAL.replace("static", "noinline"))
    apply_series(tree, read_series(tmp_path / "series"), "9.9.1", tmp_path / "patch.log")
    assert (tree / "lib" / "iov_iter.c").read_text().count("noinline") == 1


def test_failing_patch_names_patch_file_and_written_for(tmp_path):
    make_series(tmp_path / "series", written_for="4.15")
    tree = make_tree(tmp_path / "tree", "int unrelated(void);\n")
    with pytest.raises(KernlabError) as caught:
        apply_series(tree, read_series(tmp_path / "series"), "6.1.192", tmp_path / "patch.log")
    message = str(caught.value)
    assert "0001-copyout.patch does not apply to lib/iov_iter.c" in message
    assert "tree is 6.1.192" in message and "written for 4.15" in message
    assert (tree / "lib" / "iov_iter.c").read_text() == "int unrelated(void);\n"


def test_optional_marker_applies_to_the_next_option_only(tmp_path):
    fragment = tmp_path / "f.config"
    fragment.write_text("# kernlab: optional\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n")
    requests = parse_fragment(fragment)
    assert [(r.name, r.value, r.optional) for r in requests] == [
        ("A", "y", True), ("B", "y", False), ("C", "n", False)]


def test_verify_reports_missing_optional_as_not_applicable(tmp_path):
    config = tmp_path / ".config"
    config.write_text("CONFIG_B=y\n")
    requests = [Request("A", "y", "f", True), Request("B", "y", "f", False), Request("D", "y", "f", False)]
    result = verify_config(requests, config, explain=lambda r, got: "was dropped: test",
                           exists=lambda name: name in ("B", "D"))
    assert [r.name for r in result.ok] == ["B"]
    assert [r.name for r in result.not_applicable] == ["A"]
    assert [(r.name, why) for r, why in result.dropped] == [("D", "was dropped: test")]


@pytest.mark.slow
def test_kprobe_events_without_modules_fails_with_the_reason(tmp_path):
    """On the real 6.1 tree: olddefconfig drops KPROBE_EVENTS; the build says why."""
    fragment = tmp_path / "no-modules.config"
    fragment.write_text("# CONFIG_MODULES is not set\n")
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "build-kernel", "--version", "6.1", "--fragment", str(fragment),
         "--no-samples"], cwd=ROOT, capture_output=True, text=True, check=False, timeout=1800,
        env={**os.environ, "KERNLAB_LOCK": str(tmp_path / "kernlab.lock")})  # an extra fragment: unlocked
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "KPROBE_EVENTS=y (lab.config) was dropped: depends on KPROBES, which depends on MODULES" in \
        done.stderr
    assert last.startswith("kernlab: error: config check failed:")
    assert "final config:" in last
