"""Bench: what a ccache miss costs on kernel objects, by setting (issue 16, item 3).

``python bench/ccache_miss.py [--build BUILD_ID] [--objects 24] [--rounds 2] [--largest]`` takes
the compile commands of objects of a finished build, spread over its sizes (or its largest),
(from Kbuild's ``.cmd`` files,
objtool left out), and runs them one after another, output to a scratch dir, as: plain
gcc; kernlab's CC (``kernlab-ccache``, depend mode) with and without ``base_dir`` (which lets
work areas share objects); and ccache called directly (no wrapper) both ways, each with an
empty cache. Rounds interleave the settings. Prints each setting's median and its ratio to
plain gcc; the cold make step's ratio to a hand-run make is bench/build_kernel.py's.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernlab.core import paths  # noqa: E402 (after the path insert above)
from kernlab.kernel.build import build_env  # noqa: E402
from kernlab.kernel.selection import find_build  # noqa: E402

CMD_LINE = re.compile(r"^(?:savedcmd|cmd)_(\S+\.o) := (.*)$", re.MULTILINE)


def compile_commands(obj: Path, count: int, spread: bool = True) -> list[list[str]]:
    """The compile commands (argv, objtool cut) of ``count`` C objects: spread over the sizes
    (``spread``) or the largest (not the few ``.incbin`` sources, which kernlab-ccache
    compiles without ccache)."""
    found = []
    for cmd_file in obj.rglob(".*.o.cmd"):
        match = CMD_LINE.search(cmd_file.read_text(errors="replace"))
        if not match or " -c " not in match.group(2) or not match.group(2).split()[0].endswith("ccache"):
            continue
        target = obj / match.group(1)
        source = obj / match.group(2).split(";")[0].split()[-1]  # absolute, or relative to obj
        if target.is_file() and source.suffix == ".c" and source.is_file() and \
                b"incbin" not in source.read_bytes():
            found.append((target.stat().st_size, shlex.split(match.group(2).split(";")[0])))
    ordered = [argv for _, argv in sorted(found, key=lambda f: f[0], reverse=True)]
    if spread:  # every k-th by size: small objects as often as the tree has them
        return ordered[::max(1, len(ordered) // count)][:count]
    return ordered[:count]


def retarget(argv: list[str], scratch: Path, index: int) -> list[str]:
    """The command with its object and dependency file in ``scratch``."""
    out = []
    for n, arg in enumerate(argv):
        if arg.startswith("-Wp,-MMD,"):
            arg = f"-Wp,-MMD,{scratch}/{index}.d"
        elif n > 0 and argv[n - 1] == "-o":
            arg = f"{scratch}/{index}.o"
        out.append(arg)
    return out


def timed(commands: list[list[str]], obj: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    for argv in commands:
        subprocess.run(argv, cwd=obj, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def settings(base: dict[str, str], cache: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """Name -> (how the compiler is called, environment)."""
    shared = {**base, "CCACHE_DIR": str(cache), "CCACHE_BASEDIR": str(paths.work_dir())}
    own = {k: v for k, v in shared.items() if k != "CCACHE_BASEDIR"}
    return {
        "plain gcc": ("", base),
        "kernlab-ccache, base_dir (work areas share)": ("kernlab-ccache", shared),
        "kernlab-ccache, no base_dir": ("kernlab-ccache", own),
        "ccache, base_dir, no wrapper": ("ccache", shared),
        "ccache, no base_dir, no wrapper": ("ccache", own),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default="6.1")
    parser.add_argument("--objects", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--largest", action="store_true", help="the largest objects, not a spread")
    args = parser.parse_args()
    obj = find_build(args.build).build_dir / "obj"
    commands = compile_commands(obj, args.objects, spread=not args.largest)
    print(f"{len(commands)} objects from {obj}; load {Path('/proc/loadavg').read_text().split()[0]}")
    samples: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="kernlab-ccache-bench-") as tmp:
            for n, (name, (wrapper, env)) in enumerate(settings(build_env(), Path(tmp) / "c").items()):
                env = {**env, "CCACHE_DIR": f"{tmp}/cache-{n}"}  # every setting starts empty
                scratch = Path(tmp) / f"out-{n}"
                scratch.mkdir()
                argvs = [retarget(([wrapper] if wrapper else []) + argv[1:], scratch, i)
                         for i, argv in enumerate(commands)]
                seconds = timed(argvs, obj, env)
                samples.setdefault(name, []).append(seconds)
                print(f"round {round_ + 1}: {name}: {seconds:.2f}s")
    base = statistics.median(samples["plain gcc"])
    print("\n| setting | median s | ratio to plain gcc |\n|---|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values):.2f} | {statistics.median(values) / base:.3f}x |")
    print(f"load after: {Path('/proc/loadavg').read_text().split()[0]}; {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
