"""A fresh machine's first result, with a registry that has the builds (issue 20).

Makes AREA/repo (a git clone of SOURCE at BRANCH), empty AREA/{work,state,cache,results},
a venv in the clone (timed apart: `./kl` makes it once, and runs `invoke setup`, which
installs nothing on a host that has the packages), then times, with KERNLAB_REGISTRY set:

  first  `invoke run-experiment readiter --kernel 6.1` (the README's first command)
  ci     `invoke ci --kernels 4.15,5.4.286,6.1` (every experiment on three kernels)

and prints the wall time, the verdicts, and each pull (what, bytes, seconds) from the
command's plain log. The log is kept as AREA/<command>.log.

    python3 bench/first_result.py first --registry 127.0.0.1:5101/kernlab --area /work/areas/i20/fresh1
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "first": ["run-experiment", "readiter", "--kernel", "6.1"],
    "ci": ["ci", "--kernels", "4.15,5.4.286,6.1", "--experiments", "all"],
}
PULLED = re.compile(r"pulled (?P<what>.+?) (?P<id>\S+): (?P<size>[\d.]+ \S+) in (?P<seconds>[\d.]+)s")


def clone(source: str, branch: str, area: Path) -> Path:
    repo = area / "repo"
    if not repo.exists():
        subprocess.run(["git", "clone", "-q", "--branch", branch, source, str(repo)], check=True)
    for name in ("work", "state", "cache", "results"):
        (area / name).mkdir(parents=True, exist_ok=True)
    return repo


def venv(repo: Path) -> float:
    """Seconds to make the clone's venv (what `./kl` does once)."""
    if (repo / ".venv" / "bin" / "invoke").exists():
        return 0.0
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(repo / ".venv")], check=True)
    subprocess.run([str(repo / ".venv/bin/pip"), "install", "-q", "-e", str(repo)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(time.monotonic() - started, 1)


def run(repo: Path, area: Path, command: list[str], registry: str, vm_name: str) -> tuple[int, float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERNLAB_")}
    env.update({"KERNLAB_WORK": str(area / "work"), "KERNLAB_STATE": str(area / "state"),
                "KERNLAB_CACHE": str(area / "cache"), "KERNLAB_RESULTS": str(area / "results"),
                "KERNLAB_REGISTRY": registry, "KERNLAB_PLAIN": "1"})
    args = [*command, *(["--vm-name", vm_name] if command[0] == "run-experiment" else [])]
    started = time.monotonic()
    log = area / f"{command[0]}.log"
    with open(log, "w") as out:
        done = subprocess.run([str(repo / ".venv/bin/invoke"), *args], cwd=repo, env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    return done.returncode, round(time.monotonic() - started, 1), log.read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--registry", required=True)
    parser.add_argument("--area", required=True, type=Path)
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--branch", default="i20")
    parser.add_argument("--vm-name", default="h20-first")
    parser.add_argument("--kernels", default="4.15,5.4.286,6.1", help="ci's kernels")
    parser.add_argument("--keep", action="store_true", help="keep the area (default: removed after)")
    args = parser.parse_args()
    COMMANDS["ci"][2] = args.kernels
    if args.area.exists() and any((args.area / n).exists() and any((args.area / n).iterdir())
                                  for n in ("work", "state", "cache")):
        parser.error(f"{args.area} is not fresh (work, state or cache is not empty)")
    repo = clone(args.source, args.branch, args.area)
    venv_s = venv(repo)
    code, seconds, text = run(repo, args.area, COMMANDS[args.command], args.registry, args.vm_name)
    pulls = [m.groupdict() for m in PULLED.finditer(text)]
    report = {"command": "invoke " + " ".join(COMMANDS[args.command]), "exit": code, "wall_s": seconds,
              "venv_s": venv_s, "pulled": pulls,
              "verdicts": [line.strip() for line in text.splitlines()
                           if re.search(r"\b(PASS|FAIL|ERROR)\b", line)][-20:]}
    print(json.dumps(report, indent=2))
    if not args.keep:
        for name in ("work", "state", "cache"):
            shutil.rmtree(args.area / name, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
