"""Bench: `invoke check-experiment` on a fresh skeleton, the kernels built (goal: seconds).

``python bench/check.py [--runs N] [--kernels 6.1,4.15] [--kind bpftrace]`` makes a skeleton
in a scratch folder, times the real CLI (a new process each time, as a user runs it) N
times, prints the median and each run, and writes the figures as JSON to
``<KERNLAB_RESULTS>/bench/check-<timestamp>.json``. The first run may build the
experiment and merge the kernels' headers; later runs find both cached.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernlab.core import paths
from kernlab.core.util import atomic_write_json
from kernlab.experiments.skeleton import new_experiment

ROOT = Path(__file__).resolve().parent.parent

GOAL = 10.0  # seconds for two built kernels


def timed_check(folder: Path, kernels: str) -> tuple[float, int]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "invoke", "check-experiment", str(folder),
                           "--kernels", kernels], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    return time.monotonic() - started, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kernels", default="6.1,4.15")
    parser.add_argument("--kind", default="bpftrace")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = new_experiment(str(Path(scratch) / "bench-check"), args.kind)
        runs = [timed_check(folder, args.kernels) for _ in range(args.runs)]
    seconds = [round(s, 2) for s, _ in runs]
    median = statistics.median(seconds)
    print(f"check-experiment ({args.kind} skeleton, kernels {args.kernels}): median {median:.2f}s "
          f"of {seconds}, exit {[code for _, code in runs]}, goal <= {GOAL:.0f}s")
    out = paths.results_dir() / "bench" / f"check-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    atomic_write_json(out, {"kind": args.kind, "kernels": args.kernels, "seconds": seconds,
                            "median": median, "exits": [code for _, code in runs], "goal": GOAL})
    print(out)
    return 0 if all(code == 0 for _, code in runs) and median <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
