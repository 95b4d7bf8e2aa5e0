"""Bench: the whole suite on one kernel, in 1..N lanes (issue 16: <= 30 s per kernel).

``python bench/suite.py [--kernel 6.1] [--lanes 1,2,3,4] [--runs 3]`` runs
``invoke run-experiment --all --kernel K --lanes L`` as a user types it (a new process, no
VM running, the snapshot cached), the lane counts interleaved round by round so the
machine's drift spreads over all of them, after one warm-up run that is not counted (it
builds what is missing and leaves each experiment's last seconds, which order the lanes'
work). Bundles go to one scratch results dir. Prints median, min, max and the ratio to one
lane; writes the figures as JSON to ``<KERNLAB_RESULTS>/bench/suite-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernlab.core import paths  # noqa: E402 (after the path insert above)
from kernlab.core.util import atomic_write_json  # noqa: E402

GOAL = 30.0


def run_suite(kernel: str, lanes: int, results: Path) -> tuple[float, str]:
    """One `run-experiment --all` in a new process: (seconds, its last line)."""
    env = {**os.environ, "KERNLAB_RESULTS": str(results), "KERNLAB_PLAIN": "1"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "invoke", "run-experiment", "--all", "--kernel",
                           kernel, "--lanes", str(lanes)], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    took = time.monotonic() - started
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
    return took, last


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--lanes", default="1,2,3,4", help="comma-separated lane counts")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    counts = [int(n) for n in args.lanes.split(",")]
    samples: dict[int, list[float]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="kernlab-bench-suite-") as scratch:
        results = Path(scratch)
        print(f"load before: {load()}")
        took, last = run_suite(args.kernel, max(counts), results)
        print(f"warm-up ({max(counts)} lanes): {took:.1f}s  {last}")
        for round_ in range(args.runs):
            for n in counts:
                took, last = run_suite(args.kernel, n, results)
                samples[n].append(took)
                print(f"round {round_ + 1}, {n} lane(s): {took:.1f}s  {last}")
        print(f"load after: {load()}")
    base = statistics.median(samples[counts[0]])
    print(f"\n| lanes | median s | min s | max s | ratio to {counts[0]} lane(s) |")
    print("|---|---|---|---|---|")
    for n in counts:
        med = statistics.median(samples[n])
        print(f"| {n} | {med:.1f} | {min(samples[n]):.1f} | {max(samples[n]):.1f} | {med / base:.2f}x |")
    best = min(counts, key=lambda n: statistics.median(samples[n]))
    print(f"\ngoal <= {GOAL:.0f} s: {best} lanes, {statistics.median(samples[best]):.1f} s median")
    out = paths.results_dir() / "bench" / f"suite-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"kernel": args.kernel, "samples": {str(n): s for n, s in samples.items()},
                            "goal": GOAL})
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
