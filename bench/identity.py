#!/usr/bin/env python3
"""What naming a source tree costs: extraction versus the identity hash, on a real kernel.

    python bench/identity.py --version 6.1 [--out bench/out/identity.json]

Resolves the version's source as a build would (the pinned .deb for 6.1), extracts it
into a scratch directory under KERNLAB_WORK the way prepared_tree does, then hashes the
tree twice (right after extraction, as a build does, and again warm) and prints seconds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from kernlab.core import paths
from kernlab.kernel.build import make_plan
from kernlab.kernel.identity import tree_sha256
from kernlab.kernel.source import extract_source, resolve_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="6.1")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    plan = make_plan(args.version)
    log = paths.work_dir() / "logs" / "bench-identity.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    source = resolve_source(plan.spec, plan.catalog, plan.opts.source, log)
    scratch = Path(tempfile.mkdtemp(prefix="bench-identity-", dir=paths.work_dir()))
    try:
        started = time.monotonic()
        top = extract_source(source, scratch, log)
        extracted = time.monotonic()
        first = tree_sha256(top)
        hashed = time.monotonic()
        second = tree_sha256(top)
        again = time.monotonic()
        files = sum(1 for p in top.rglob("*") if not p.is_dir())
        size = sum(p.stat().st_size for p in top.rglob("*") if p.is_file() and not p.is_symlink())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert first == second
    result = {"version": args.version, "origin": source.origin, "files": files, "bytes": size,
              "extract_s": round(extracted - started, 2), "identity_s": round(hashed - extracted, 2),
              "identity_warm_s": round(again - hashed, 2), "tree_sha256": first}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
