"""Kernel tarball extraction: the GNU tar route (an archive file, checked whole, then
unpacked by tar) against the Python tarfile route (a stream, checked as it unpacks), rounds
interleaved, each into a fresh folder removed after the round.

    python bench/extract.py TARBALL [--rounds 3] [--scratch DIR]

Prints each run and the medians; both routes must give the same tree identity.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kernlab.kernel import identity
from kernlab.kernel.source import safe_extract


def gnu_tar(tarball: Path, dest: Path) -> Path:
    return safe_extract(tarball, dest)


def python_stream(tarball: Path, dest: Path) -> Path:
    with open(tarball, "rb") as stream:
        return safe_extract(None, dest, stream=stream)


ROUTES = {"gnu-tar": gnu_tar, "python-stream": python_stream}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tarball", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in ROUTES}
    trees: dict[str, str] = {}
    for round_ in range(args.rounds):
        for name, route in ROUTES.items():
            with tempfile.TemporaryDirectory(dir=args.scratch, prefix="kernlab-extract-") as tmp:
                started = time.monotonic()
                top = route(args.tarball, Path(tmp) / "x")
                seconds = time.monotonic() - started
                trees[name] = identity.tree_sha256(top)
                shutil.rmtree(Path(tmp) / "x")
            times[name].append(seconds)
            print(f"round {round_ + 1} {name}: {seconds:.1f}s", flush=True)
    for name, runs in times.items():
        print(f"{name}: median {statistics.median(runs):.1f}s of {len(runs)}")
    ratio = statistics.median(times["gnu-tar"]) / statistics.median(times["python-stream"])
    print(f"gnu-tar / python-stream: {ratio:.2f}x; same tree: {len(set(trees.values())) == 1}")


if __name__ == "__main__":
    main()
