#!/usr/bin/env python3
"""Resolve the return addresses callerstack printed to functions of the binary.

Reads ``callerstack: resolve file=PATH file_offset=0xN`` lines, turns the file offset
into a virtual address with the binary's LOAD segments (readelf -lW) and finds the
function containing it (nm), printing ``caller of foo1: FUNC+0xOFF``.
"""

import re
import subprocess
import sys


def segments(binary: str) -> list[tuple[int, int, int]]:
    """(file offset, vaddr, file size) of each LOAD segment."""
    out = subprocess.run(["readelf", "-lW", binary], check=True, capture_output=True,
                         text=True).stdout
    segs = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD":
            segs.append((int(parts[1], 16), int(parts[2], 16), int(parts[4], 16)))
    return segs


def functions(binary: str) -> list[tuple[int, str]]:
    out = subprocess.run(["nm", "--defined-only", "-n", binary], check=True,
                         capture_output=True, text=True).stdout
    funcs = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            funcs.append((int(parts[0], 16), parts[2]))
    return funcs


def resolve(binary: str, file_offset: int) -> str:
    for off, vaddr, size in segments(binary):
        if off <= file_offset < off + size:
            address = file_offset - off + vaddr
            break
    else:
        return f"offset {file_offset:#x} is in no LOAD segment of {binary}"
    best = None
    for start, name in functions(binary):
        if start <= address:
            best = (start, name)
    if best is None:
        return f"no function holds {address:#x}"
    return f"{best[1]}+{address - best[0]:#x} (vaddr {address:#x}, file offset {file_offset:#x})"


def main(log: str) -> int:
    found = 0
    with open(log) as handle:
        for line in handle:
            match = re.search(r"resolve file=(\S+) file_offset=(0x[0-9a-f]+)", line)
            if match:
                found += 1
                print(f"caller of foo1: {resolve(match.group(1), int(match.group(2), 16))}")
    if not found:
        print("resolve: callerstack reported no return address", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
