#!/usr/bin/env python3
"""Benchmark `invoke build-kernel` against a hand-run make of the same tree and config.

Measures, in one run on one machine (ratios, since the machine is noisy):
  1. cold build with kernlab (empty ccache, no cached build)      -> T_cold, its make step
  2. the same command again (same inputs)                          -> T_again   (goal <= 2 s)
  3. hand-run `make -j$(nproc) bzImage modules` (the same targets as kernlab's make step),
     same tree and .config, timed after its olddefconfig         -> T_hand    (goal T_cold_make <= 1.05 x)
  (--decompose: also kernlab's cold build with --no-ccache, which tells ccache's share of
   the difference from that of kernlab's make flags: debug prefix maps, pahole without -j)
  4. `build-kernel --clean` with ccache warm                       -> T_warm    (goal <= 0.25 x T_cold)
  5. bzImage sha256 of builds 1 and 4 (two clean builds)           -> equal

Usage: python bench/build_kernel.py [--version 6.1] [--out bench/out] [--work DIR]
The ccache is a fresh one under --out; builds go to --work (default <out>/work; pass
kernels/ to leave the result in place for use). Only the benchmarked build directory is
removed (`--clean`). Results are printed and written to <out>/build_kernel.json.
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

ROOT = Path(__file__).resolve().parent.parent
STEP_DONE = re.compile(r"< (make bzImage modules \(-j\d+\)) \((?:(\d+)m(\d+)s|([\d.]+)s)\)")


def run_kernlab(args: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    started = time.monotonic()
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        out.write(done.stdout)
    if done.returncode:
        sys.exit(f"bench: `invoke {' '.join(args)}` failed; see {log}")
    return time.monotonic() - started, done.stdout


def make_step_seconds(output: str) -> float | None:
    match = STEP_DONE.search(output)
    if not match:
        return None
    if match.group(4):
        return float(match.group(4))
    return int(match.group(2)) * 60 + int(match.group(3))


def record(version: str, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "invoke", "kernel-info", "--version", version, "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def hand_make(rec: dict, out: Path, log: Path) -> float:
    """make -j$(nproc) bzImage modules by hand: same tree, same .config, no ccache, no kernlab;
    the seconds of that make (its olddefconfig runs first, untimed)."""
    obj = out / "hand-obj"
    shutil.rmtree(obj, ignore_errors=True)
    obj.mkdir(parents=True)
    shutil.copy(rec["outputs"]["config"]["path"], obj / ".config")
    cmd = ["make", "-C", rec["tree"], f"O={obj}", "ARCH=x86_64", "CC=gcc-12", "HOSTCC=gcc-12",
           f"-j{os.cpu_count()}"]
    with open(log, "a") as handle:
        subprocess.run([*cmd, "olddefconfig"], stdout=handle, stderr=subprocess.STDOUT, check=True)
        started = time.monotonic()
        subprocess.run([*cmd, "bzImage", "modules"], stdout=handle, stderr=subprocess.STDOUT, check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="6.1")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--work", type=Path, help="KERNLAB_WORK for the builds (default <out>/work)")
    parser.add_argument("--skip-hand", action="store_true", help="skip the hand-run make")
    parser.add_argument("--decompose", action="store_true",
                        help="also a cold kernlab build with --no-ccache (one more cold build)")
    args = parser.parse_args()
    out = args.out.resolve()
    work, ccache = (args.work or out / "work").resolve(), out / "ccache"
    shutil.rmtree(ccache, ignore_errors=True)
    ccache.mkdir(parents=True)
    log = out / "build_kernel.log"
    log.write_text("")
    env = {**os.environ, "KERNLAB_WORK": str(work), "CCACHE_DIR": str(ccache), "KERNLAB_PLAIN": "1"}
    build = ["build-kernel", "--version", args.version]

    t_cold, cold_out = run_kernlab([*build, "--clean"], env, log)
    cold = record(args.version, env)
    t_again, _ = run_kernlab(build, env, log)
    t_hand = None if args.skip_hand else hand_make(cold, out, log)
    t_warm, _ = run_kernlab([*build, "--clean"], env, log)
    warm = record(args.version, env)
    plain_make = None
    if args.decompose:
        plain_make = make_step_seconds(run_kernlab([*build, "--clean", "--no-ccache"], env, log)[1])

    cold_make = make_step_seconds(cold_out)
    results = {
        "version": args.version,
        "kernelrelease": cold["kernelrelease"],
        "cores": os.cpu_count(),
        "cold_total_s": round(t_cold, 1),
        "cold_make_bzImage_modules_s": cold_make,
        "hand_make_bzImage_modules_s": round(t_hand, 1) if t_hand else None,
        "cold_make_vs_hand": round(cold_make / t_hand, 3) if (t_hand and cold_make) else None,
        "no_ccache_make_bzImage_modules_s": plain_make,
        "no_ccache_make_vs_hand": round(plain_make / t_hand, 3) if (t_hand and plain_make) else None,
        "again_same_inputs_s": round(t_again, 2),
        "clean_rebuild_ccache_warm_s": round(t_warm, 1),
        "warm_vs_cold": round(t_warm / t_cold, 3),
        "bzImage_sha256_cold": cold["outputs"]["bzImage"]["sha256"],
        "bzImage_sha256_clean_rebuild": warm["outputs"]["bzImage"]["sha256"],
        "bzImage_identical": cold["outputs"]["bzImage"]["sha256"] == warm["outputs"]["bzImage"]["sha256"],
    }
    (out / "build_kernel.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
