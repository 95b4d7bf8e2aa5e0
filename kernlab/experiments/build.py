"""Build an experiment on the host, cached by the hash of everything it depends on.

The experiment folder and the shared ``experiments/_lib`` (copied in as ``lib/``)
go into a staging directory; ``bpf`` steps compile BPF objects with clang against
the target kernel's ``headers_install`` output and libbpf's headers, ``program``
steps compile user programs with gcc (the guest runs the same Debian release, so
they run there), ``host`` steps are shell commands. Guest steps run later, in the
guest. The result lives in ``<KERNLAB_WORK>/experiments/<name>-<key12>/``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

from kernlab.core import paths
from kernlab.core.errors import KernlabError
from kernlab.core.proc import capture, require_tool, run_logged
from kernlab.core.progress import reporter
from kernlab.core.records import BuildRecord
from kernlab.core.util import hash_inputs, short, staging_dir
from kernlab.experiments.expect import substitute
from kernlab.experiments.spec import BuildStep, Experiment, version_tuple

STAMP = ".kernlab-build"
BPF_FLAGS = ["-O2", "-g", "-Wall", "-Wno-unused-value", "-Wno-pointer-sign",
             "-Wno-compare-distinct-pointer-types", "-target", "bpf", "-D__TARGET_ARCH_x86",
             "-DBPF_NO_GLOBAL_DATA"]
# The guest's libbpf (1.1) creates every .rodata*/.data*/.bss* section as a map with
# BPF_F_MMAPABLE, which the kernel accepts from 5.5 on (global data itself: 5.2).
GLOBAL_DATA_RELEASE = (5, 5)
DATA_SECTION = re.compile(r"^\.(rodata|data|bss)(\..*)?$")
USER_FLAGS = ["-O2", "-g", "-Wall"]


def headers_dir(build: BuildRecord) -> Path | None:
    """The kernel's installed UAPI headers (the dir holding linux/ and asm/)."""
    root = build.existing_output("headers")
    if root is None:
        return None
    return root / "include" if (root / "include" / "linux").is_dir() else root


def build_env(build: BuildRecord, variables: dict[str, str]) -> dict[str, str]:
    """Variables host steps see (and ``${NAME}`` substitution uses)."""
    env = {
        "KERNEL_VERSION": build.version,
        "KERNEL_RELEASE": build.kernelrelease,
        "KERNEL_BUILD": str(build.build_dir),
        "KHEADERS": str(headers_dir(build) or ""),
        "SAMPLES_BPF": str(build.existing_output("samples_bpf") or ""),
        "VMLINUX": str(build.existing_output("vmlinux") or ""),
        "CLANG": "clang", "CC": "gcc",
    }
    return {**env, **variables}


def cache_key(exp: Experiment, build: BuildRecord, env: dict[str, str]) -> str:
    needs_clang = any(s.kind == "bpf" for s in exp.build)
    return hash_inputs({
        "experiment": exp.content_hash(),
        "kernel": build.key, "config": build.config_sha256 or None,
        "env": env, "bpf_flags": BPF_FLAGS, "user_flags": USER_FLAGS,
        "global_data": list(GLOBAL_DATA_RELEASE), "bpf_objects": "every .o checked",
        "clang": capture(["clang", "--version"]) if needs_clang else "",
        "gcc": capture(["gcc", "--version"]),
        "libbpf": capture(["pkg-config", "--modversion", "libbpf"]),
    })


def _bpf_cmd(step: BuildStep, env: dict[str, str]) -> list[str]:
    headers = env["KHEADERS"]
    includes = ["-I.", "-Ilib"] + ([f"-I{headers}"] if headers else []) + [
        "-idirafter", "/usr/include", "-idirafter", "/usr/include/x86_64-linux-gnu"]
    return [env["CLANG"], *BPF_FLAGS, *includes,
            *(substitute(f, env) for f in step.cflags), "-c", step.source, "-o", step.out]


def _program_cmd(step: BuildStep, env: dict[str, str]) -> list[str]:
    return [env["CC"], *USER_FLAGS, "-I.", "-Ilib", *(substitute(f, env) for f in step.cflags),
            "-o", step.out, step.source, *(f"-l{lib}" for lib in step.libs)]


def data_sections(obj: Path) -> list[str]:
    """The object's global-data sections (.rodata*, .data*, .bss*)."""
    out = capture(["llvm-objdump", "-h", obj])
    names = [line.split()[1] for line in out.splitlines() if line.strip()[:1].isdigit()
             and len(line.split()) > 1]
    return [n for n in names if DATA_SECTION.match(n)]


def referenced_sections(obj: Path) -> set[str]:
    """Sections some relocation points at (its VALUE column names the section)."""
    out = capture(["llvm-objdump", "-r", obj])
    return {parts[2] for parts in (line.split() for line in out.splitlines()) if len(parts) == 3}


def drop_unused_data(obj: Path, log: Path) -> list[str]:
    """Remove global-data sections no instruction refers to (clang leaves the string
    literals of stack-copied format strings in .rodata.str1.1); return what is left."""
    sections = data_sections(obj)
    unused = [s for s in sections if s not in referenced_sections(obj)]
    if unused:
        run_logged(["llvm-objcopy", *(f"--remove-section={s}" for s in unused), obj], log,
                   what=f"llvm-objcopy {obj.name}", fix="read the log")
    return [s for s in sections if s not in unused]


def check_global_data(obj: Path, release: str, log: Path) -> None:
    """Refuse an object whose global data the target kernel's libbpf load cannot map."""
    left = drop_unused_data(obj, log)
    if left and version_tuple(release)[:2] < GLOBAL_DATA_RELEASE:
        raise KernlabError(
            f"{obj.name} uses global data ({', '.join(left)}), which the guest's libbpf "
            f"maps only on Linux >= 5.5 (BPF_F_MMAPABLE), not {release}",
            "keep constants in -D macros or on the stack, and print with bpf_printk from "
            "lib/kl_bpf.h (see experiments/README.md, 'One experiment for 4.15 to 6.1')")


def _run_step(step: BuildStep, cwd: Path, env: dict[str, str], log: Path) -> None:
    if step.kind == "bpf":
        cmd, what = _bpf_cmd(step, env), f"clang {step.source}"
    elif step.kind == "program":
        cmd, what = _program_cmd(step, env), f"gcc {step.source}"
    else:
        cmd, what = ["bash", "-ec", step.cmd], f"build step `{step.cmd}`"
    run_logged(cmd, log, what=what, cwd=cwd, env=env,
               fix="read the log; the experiment's build section is in its experiment.yaml")


EM_BPF = 247  # e_machine of a BPF ELF object


def is_bpf_object(path: Path) -> bool:
    """An ELF file whose machine is BPF (the header's e_machine, little endian)."""
    with open(path, "rb") as handle:
        header = handle.read(20)
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_BPF


def check_bpf_objects(stage: Path, release: str, log: Path) -> None:
    """Every BPF object the build leaves, compiled here or copied by a host step (the
    samples/bpf objects): unused global data dropped, the rest refused before 5.5."""
    for obj in sorted(stage.rglob("*.o")):
        if obj.is_file() and not obj.is_symlink() and is_bpf_object(obj):
            check_global_data(obj, release, log)


def _stage_sources(exp: Experiment, stage: Path) -> None:
    shutil.copytree(exp.dir, stage, dirs_exist_ok=True, symlinks=True)
    lib = exp.lib_dir
    if lib.is_dir():
        shutil.copytree(lib, stage / "lib", dirs_exist_ok=True, symlinks=True)


def build_experiment(exp: Experiment, build: BuildRecord, variables: dict[str, str],
                     log: Path) -> Path:
    """The directory holding the experiment's sources and host-built outputs."""
    env = build_env(build, variables)
    key = cache_key(exp, build, env)
    final = paths.work_dir() / "experiments" / f"{exp.name}-{short(key)}"
    if (final / STAMP).is_file():
        reporter().note(f"{exp.name} build is cached: {final}")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as handle:
            handle.write(f"# cached build reused: {final}\n")
        return final
    host_steps = [s for s in exp.build if s.kind != "guest"]
    if any(s.kind == "bpf" for s in host_steps):
        require_tool("clang", "clang")
    with reporter().step(f"build {exp.name} on the host"), staging_dir(final) as stage:
        _stage_sources(exp, stage)
        full_env = {**os.environ, **env}
        for step in host_steps:
            _run_step(step, stage, full_env, log)
        check_bpf_objects(stage, env.get("KERNEL_RELEASE") or "0", log)
        (stage / STAMP).write_text(shlex.join(["key", key]) + "\n")
    return final
