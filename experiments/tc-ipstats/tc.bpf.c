// SPDX-License-Identifier: GPL-2.0
/* tc-ipstats: the same per-source statistics and blocklist as xdp-ipstats, at tc's
 * ingress hook (cls_bpf in direct-action mode on the clsact qdisc), where the frame is
 * already an skb; and at egress a count per destination of what the host sends back.
 */
#include <linux/pkt_cls.h>
#include "lib/ipstats.bpf.h"

/* Destination IPv4 address -> what left through the device. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct ipstats);
} egress SEC(".maps");

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = kl_ipv4(data, data_end);

	if (!ip)
		return TC_ACT_OK;
	return kl_count(ip->saddr, skb->len) ? TC_ACT_SHOT : TC_ACT_OK;
}

SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = kl_ipv4(data, data_end);
	struct ipstats *entry = ip ? kl_entry(&egress, ip->daddr) : 0;

	if (!entry)
		return TC_ACT_OK;
	__sync_fetch_and_add(&entry->packets, 1);
	__sync_fetch_and_add(&entry->bytes, skb->len);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
