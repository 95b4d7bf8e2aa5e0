"""Bench: a readiter round trip with the kernel and image cached.

- cold VM: no VM running; the run boots one, runs readiter, stops it (goal <= 60 s, TCG)
- warm VM: a VM already runs this kernel; the run reuses it (goal <= 20 s, TCG)

``python bench/experiment.py [--runs N] [--kernel V] [--experiment NAME]`` prints the
median and each run's seconds and PASS/FAIL, and writes the figures as JSON to
``<KERNLAB_RESULTS>/bench/experiment-<timestamp>.json``. Bundles go to a scratch dir.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernlab.core import paths
from kernlab.core.util import atomic_write_json
from kernlab.experiments.run import run_experiment
from kernlab.experiments.suite import load_experiment
from kernlab.guest.ensure import ensure_vm
from kernlab.guest.image import build_image
from kernlab.guest.vm import find_vm
from kernlab.kernel.selection import build_for, choose_kernel

VM_NAME = "bench-exp"
GOALS = {"cold VM": 60.0, "warm VM": 20.0}


def timed_run(name: str, kernel: str, keep_vm: bool, root: Path) -> tuple[float, str]:
    started = time.monotonic()
    bundle = run_experiment(load_experiment(name), choose_kernel(kernel), keep_vm=keep_vm,
                            vm_name=VM_NAME, root=root)
    return time.monotonic() - started, bundle.status


def stop_bench_vm() -> None:
    vm = find_vm(VM_NAME)
    if vm:
        vm.stop()


def measure(name: str, kernel: str, runs: int, root: Path) -> dict[str, dict]:
    build, image = build_for(choose_kernel(kernel)), build_image()
    figures: dict[str, dict] = {}
    stop_bench_vm()
    cold = []
    for _ in range(runs):
        cold.append(timed_run(name, kernel, keep_vm=False, root=root))
        stop_bench_vm()
    ensure_vm(build, image, VM_NAME)
    try:
        timed_run(name, kernel, keep_vm=True, root=root)  # builds the experiment once
        warm = [timed_run(name, kernel, keep_vm=True, root=root) for _ in range(runs)]
    finally:
        stop_bench_vm()
    for label, samples in (("cold VM", cold), ("warm VM", warm)):
        seconds = [s for s, _ in samples]
        figures[label] = {"median_s": round(statistics.median(seconds), 1),
                          "runs_s": [round(s, 1) for s in seconds],
                          "status": [st for _, st in samples], "goal_s": GOALS[label]}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kernel", default="6.1")
    parser.add_argument("--experiment", default="readiter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kernlab-bench-") as scratch:
        figures = measure(args.experiment, args.kernel, args.runs, Path(scratch))
    print(f"{args.experiment} round trip on {args.kernel} (median of {args.runs}):")
    for label, fig in figures.items():
        verdict = "ok" if fig["median_s"] <= fig["goal_s"] else "over goal"
        print(f"  {label:8} {fig['median_s']:6.1f} s  (goal <= {fig['goal_s']:.0f} s, {verdict}) "
              f"runs {fig['runs_s']} {fig['status']}")
    out = paths.results_dir() / "bench" / f"experiment-{time.strftime('%Y%m%dT%H%M%SZ')}.json"
    atomic_write_json(out, {"experiment": args.experiment, "kernel": args.kernel,
                            "figures": figures})
    print(f"figures: {out}")
    bad = any("FAIL" in fig["status"] for fig in figures.values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
