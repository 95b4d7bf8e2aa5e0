"""kernlab's CC wrapper: ccache for ordinary sources, never for ones that .incbin a file.

Real gcc and real ccache (depend mode, as kernel builds use it) in a temporary cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kernlab.kernel.build import CC_WRAPPER

pytestmark = pytest.mark.skipif(not (shutil.which("ccache") and shutil.which("gcc")),
                                reason="needs gcc and ccache")


def compile_with_wrapper(workdir: Path, source: str) -> bytes:
    env = {**os.environ, "CCACHE_DIR": str(workdir / "cache"), "CCACHE_DEPEND": "1",
           "CCACHE_BASEDIR": str(workdir)}
    subprocess.run([str(CC_WRAPPER), "gcc", f"-Wp,-MMD,{source}.d", "-c", source, "-o", "out.o"],
                   cwd=workdir, env=env, check=True)
    return (workdir / "out.o").read_bytes()


def cache_hits(workdir: Path) -> int:
    env = {**os.environ, "CCACHE_DIR": str(workdir / "cache")}  # the cache under workdir
    stats = subprocess.run(["ccache", "--print-stats"], env=env, capture_output=True, text=True,
                           check=True).stdout
    counts = dict(line.split("\t")[:2] for line in stats.splitlines() if "\t" in line)
    return int(counts.get("direct_cache_hit", 0)) + int(counts.get("preprocessed_cache_hit", 0))


def test_an_incbin_source_sees_its_new_blob(tmp_path):
    (tmp_path / "piggy.S").write_text('.section .rodata\n.globl payload\npayload:\n.incbin "blob.bin"\n')
    (tmp_path / "blob.bin").write_bytes(b"kernel-A" * 64)
    first = compile_with_wrapper(tmp_path, "piggy.S")
    (tmp_path / "blob.bin").write_bytes(b"kernel-B" * 64)  # same size, as a rebuilt vmlinux often is
    second = compile_with_wrapper(tmp_path, "piggy.S")
    assert b"kernel-A" in first and b"kernel-B" in second and b"kernel-A" not in second


def test_ordinary_sources_still_go_through_ccache(tmp_path):
    (tmp_path / "fork.c").write_text("int forty_two(void) { return 42; }\n")
    compile_with_wrapper(tmp_path, "fork.c")
    (tmp_path / "out.o").unlink()
    compile_with_wrapper(tmp_path, "fork.c")
    assert cache_hits(tmp_path) == 1


def compile_in_work_area(work: Path, cache: Path, monkeypatch) -> None:
    """fork.c compiled as a kernel build compiles: kernlab's build_env, an absolute -I into
    the work area, the working directory in the work area."""
    from kernlab.kernel.build import build_env

    monkeypatch.setenv("KERNLAB_WORK", str(work))
    monkeypatch.setenv("CCACHE_DIR", str(cache))
    (work / "src" / "include").mkdir(parents=True)
    (work / "src" / "include" / "answer.h").write_text("#define ANSWER 42\n")
    (work / "src" / "fork.c").write_text('#include "answer.h"\nint f(void) { return ANSWER; }\n')
    (work / "obj").mkdir()
    env = {**build_env(), "CCACHE_DEPEND": "1"}
    subprocess.run([str(CC_WRAPPER), "gcc", "-Wp,-MMD,fork.o.d", f"-I{work}/src/include", "-c",
                    f"{work}/src/fork.c", "-o", "fork.o"], cwd=work / "obj", env=env, check=True)


@pytest.mark.parametrize(("share", "hits"), [("1", 1), (None, 0)])
def test_work_areas_share_objects_only_when_asked(tmp_path, monkeypatch, share, hits):
    """KERNLAB_CCACHE_SHARE=1 (as .ci/run sets it): a second work area hits the first one's
    objects. Unset (the default): it compiles its own, and no miss pays for base_dir."""
    if share:
        monkeypatch.setenv("KERNLAB_CCACHE_SHARE", share)
    else:
        monkeypatch.delenv("KERNLAB_CCACHE_SHARE", raising=False)
    cache = tmp_path / "cache"
    compile_in_work_area(tmp_path / "one", cache, monkeypatch)
    compile_in_work_area(tmp_path / "two", cache, monkeypatch)
    assert cache_hits(tmp_path) == hits
