#!/usr/bin/env python3
"""Find where to probe foo1's variable1 in a compiled sample2 (seed 002, by objdump).

The probe goes on the instruction after the subtraction that updates variable1
(``sub %al,-0xd(%rbp)`` at -O0), and variable1 lives at that rbp displacement.
Prints ``FOO1_OFFSET=<bytes from foo1> VAR_DISP=<rbp displacement>`` (shell syntax).
"""

import re
import subprocess
import sys

INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$")


def foo1_lines(binary: str) -> list[tuple[int, str, str]]:
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", binary], check=True,
                         capture_output=True, text=True).stdout
    body = out.split("<foo1>:\n", 1)[1].split("\n\n", 1)[0]
    return [(int(m.group(1), 16), m.group(2), m.group(3))
            for m in map(INSN.match, body.splitlines()) if m]


def main(binary: str) -> int:
    lines = foo1_lines(binary)
    start = lines[0][0]
    for i, (_addr, op, args) in enumerate(lines[:-1]):
        mem = re.search(r"(-?0x[0-9a-f]+)\(%rbp\)$", args)
        if op.startswith("sub") and mem:
            offset = lines[i + 1][0] - start
            print(f"FOO1_OFFSET={offset}")
            print(f"VAR_DISP={int(mem.group(1), 16)}")
            return 0
    print(f"find_offset: no `sub ..., DISP(%rbp)` in foo1 of {binary}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
