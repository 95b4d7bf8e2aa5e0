"""Bench: what the `debug` variant (DWARF, gdb scripts, KASAN, lockdep) costs under TCG.

    python bench/debug_variant.py [--kernel 4.15] [--runs 3] [--suite]

For KERNEL and KERNEL+debug, both built, interleaved round by round so the machine's drift
spreads over both: a cold boot to SSH ready (a new VM, no snapshot), and readiter as a user
types it (`invoke run-experiment readiter`, a new process, the VM stopped, its snapshot
cached). ``--suite`` adds one `run-experiment --all` on each (3 lanes by default). Prints
medians and the debug/lab ratio; writes the figures as JSON to
``<KERNLAB_RESULTS>/bench/debug-variant-<timestamp>.json``.
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
from kernlab.guest.image import build_image  # noqa: E402
from kernlab.guest.vm import find_vm, start_vm  # noqa: E402
from kernlab.kernel.selection import find_build  # noqa: E402


def cold_boot(version: str, name: str) -> float:
    """Seconds from QEMU's start to SSH ready, booting ``version`` from nothing."""
    stale = find_vm(name)
    if stale:
        stale.stop()
    vm = start_vm(find_build(version), build_image("bookworm"), name, cold=True)
    try:
        return float(vm.info.ready_seconds)
    finally:
        vm.stop()


def invoke_seconds(results: Path, *args: str) -> tuple[float, str]:
    """One `invoke ARGS` in a new process: (seconds, its last line)."""
    env = {**os.environ, "KERNLAB_RESULTS": str(results), "KERNLAB_PLAIN": "1"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    out = done.stdout.strip().splitlines()
    return took, out[-1] if out else done.stderr.strip()[-200:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="4.15")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--suite", action="store_true", help="also one whole suite on each")
    args = parser.parse_args()
    kernels = [args.kernel, f"{args.kernel}+debug"]
    for version in kernels:
        find_build(version)  # both built, or a one-line NotFound saying how
    figures: dict = {"kernels": kernels, "runs": args.runs, "load_before": os.getloadavg(),
                     "boot": {k: [] for k in kernels}, "readiter": {k: [] for k in kernels}}
    with tempfile.TemporaryDirectory(prefix="bench-debug-") as scratch:
        results = Path(scratch)
        for version in kernels:  # warm-up, not counted: the snapshot each later run restores
            invoke_seconds(results, "run-experiment", "readiter", "--kernel", version, "--vm-name", "bdbg")
        for round_ in range(args.runs):
            for version in kernels if round_ % 2 == 0 else reversed(kernels):
                figures["boot"][version].append(round(cold_boot(version, "bdbg-cold"), 2))
                took, last = invoke_seconds(results, "run-experiment", "readiter", "--kernel", version,
                                            "--vm-name", "bdbg")
                if not last.endswith("PASS"):
                    print(f"readiter on {version}: {last}", file=sys.stderr)
                figures["readiter"][version].append(round(took, 2))
        if args.suite:
            figures["suite"] = {}
            for version in kernels:
                took, last = invoke_seconds(results, "run-experiment", "--all", "--kernel", version,
                                            "--vm-name", "bdbg")
                figures["suite"][version] = {"seconds": round(took, 1), "last": last}
    lab, debug = kernels
    for what in ("boot", "readiter"):
        medians = {k: statistics.median(v) for k, v in figures[what].items()}
        figures[f"{what}_median"] = medians
        print(f"{what:9s} {lab}: {medians[lab]:.2f} s  {debug}: {medians[debug]:.2f} s  "
              f"ratio {medians[debug] / medians[lab]:.2f}x  (median of {args.runs})")
    if args.suite:
        suite = figures["suite"]
        print(f"suite     {lab}: {suite[lab]['seconds']} s ({suite[lab]['last']})  {debug}: "
              f"{suite[debug]['seconds']} s ({suite[debug]['last']})  ratio "
              f"{suite[debug]['seconds'] / suite[lab]['seconds']:.2f}x")
    figures["load_after"] = os.getloadavg()
    out = paths.results_dir() / "bench" / f"debug-variant-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, figures)
    print(f"figures: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
