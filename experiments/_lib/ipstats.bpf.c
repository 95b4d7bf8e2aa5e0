// SPDX-License-Identifier: GPL-2.0
/* xdp-ipstats (the eBPF-for-safety survey's plan: network statistics per IP address,
 * block an IP if suspicious): count every IPv4 frame and its bytes per source address,
 * and drop the sources user space put in `blocklist`. Loaded by lib/ipstats.c in
 * generic (skb) mode, native mode, or through BPF_PROG_TEST_RUN.
 */
#include "lib/ipstats.bpf.h"

SEC("xdp")
int xdp_ipstats(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = kl_ipv4(data, data_end);

	if (!ip)
		return XDP_PASS;
	return kl_count(ip->saddr, data_end - data) ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
