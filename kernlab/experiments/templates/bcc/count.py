#!/usr/bin/env python3
"""count.py: count the workload's vfs_read calls that returned 4096 bytes (bcc)."""
import contextlib
import signal
import sys

from bcc import BPF

PROGRAM = r"""
#include <uapi/linux/ptrace.h>

BPF_ARRAY(full, u64, 1);

int kretprobe__vfs_read(struct pt_regs *ctx)
{
    char comm[16] = {};
    int zero = 0;
    u64 *slot;

    bpf_get_current_comm(&comm, sizeof(comm));
    if (comm[0] != 'w' || comm[1] != 'o' || comm[2] != 'r' || comm[3] != 'k' ||
        comm[4] != 'l' || comm[5] != 'o' || comm[6] != 'a' || comm[7] != 'd' || comm[8])
        return 0;
    if (PT_REGS_RC(ctx) != 4096)
        return 0;
    slot = full.lookup(&zero);
    if (slot)
        __sync_fetch_and_add(slot, 1);
    return 0;
}
"""


def main() -> int:
    bpf = BPF(text=PROGRAM)  # compiles, loads and attaches kretprobe__vfs_read
    print("bcc: ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
    print(f"bcc: full reads: {bpf['full'][0].value}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
