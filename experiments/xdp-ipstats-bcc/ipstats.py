#!/usr/bin/env python3
"""xdp-ipstats as the bcc tool the eBPF-for-safety survey plans: XDP statistics per source
IP address and a blocklist, compiled in the guest by bcc against the running kernel.

    ipstats.py DEV [BLOCKED_IP...]

Attaches in generic (skb) mode, prints "ipstats: ready", and on SIGINT prints one line per
source ("ipstats: from IP packets=P bytes=B dropped=D") and detaches.
"""

import ctypes
import signal
import socket
import sys
import threading

from bcc import BPF

PROGRAM = r"""
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>

struct ipstats { u64 packets; u64 bytes; u64 dropped; };

BPF_HASH(stats, u32, struct ipstats, 1024);
BPF_HASH(blocklist, u32, u8, 256);

int xdp_ipstats(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    struct ipstats zero = {}, *entry;
    u32 source;

    if ((void *)(ip + 1) > data_end || eth->h_proto != htons(ETH_P_IP))
        return XDP_PASS;
    source = ip->saddr;
    entry = stats.lookup_or_try_init(&source, &zero);
    if (!entry)
        return XDP_PASS;
    __sync_fetch_and_add(&entry->packets, 1);
    __sync_fetch_and_add(&entry->bytes, data_end - data);
    if (!blocklist.lookup(&source))
        return XDP_PASS;
    __sync_fetch_and_add(&entry->dropped, 1);
    return XDP_DROP;
}
"""


def address(value: int) -> str:
    """The dotted form of an IPv4 address as the kernel stores it (network order)."""
    return socket.inet_ntoa(value.to_bytes(4, "little"))


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: ipstats.py DEV [BLOCKED_IP...]", file=sys.stderr)
        return 2
    device, blocked = sys.argv[1], sys.argv[2:]
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    bpf = BPF(text=PROGRAM)
    program = bpf.load_func("xdp_ipstats", BPF.XDP)
    for ip in blocked:
        key = int.from_bytes(socket.inet_aton(ip), "little")
        bpf["blocklist"][ctypes.c_uint32(key)] = ctypes.c_uint8(1)
        print(f"ipstats: blocking {ip}", flush=True)
    bpf.attach_xdp(device, program, BPF.XDP_FLAGS_SKB_MODE)
    print(f"ipstats: bcc attached xdp_ipstats to {device} in skb mode", flush=True)
    print("ipstats: ready", flush=True)
    stop.wait()
    for key, value in sorted(bpf["stats"].items(), key=lambda kv: kv[0].value):
        print(f"ipstats: from {address(key.value)} packets={value.packets} bytes={value.bytes} "
              f"dropped={value.dropped}", flush=True)
    bpf.remove_xdp(device, BPF.XDP_FLAGS_SKB_MODE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
