/* kernlab: per-source-IP statistics and a blocklist, shared by the XDP and tc programs
 * (lib/ipstats.bpf.c, tc-ipstats). Portable from Linux 4.15: BTF-defined maps (libbpf
 * drops the BTF where the kernel has none), 64-bit atomic adds, no global data.
 */
#ifndef KL_IPSTATS_BPF_H
#define KL_IPSTATS_BPF_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct ipstats { __u64 packets; __u64 bytes; __u64 dropped; };

/* Source IPv4 address (network order) -> what arrived from it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct ipstats);
} stats SEC(".maps");

/* Source IPv4 addresses user space wants dropped (the value is unused). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} blocklist SEC(".maps");

/* The IPv4 source of the Ethernet frame [data, data_end), or 0 when it is not IPv4. */
static __always_inline __u32 kl_ipv4_source(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return ip->saddr;
}

/* The IPv4 destination of the frame, or 0 when it is not IPv4. */
static __always_inline __u32 kl_ipv4_dest(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return ip->daddr;
}

/* Count a frame of `len` bytes for `addr`; 1 when `addr` is on the blocklist (counted
 * as dropped: the caller drops it). */
static __always_inline int kl_count(__u32 addr, __u64 len)
{
	struct ipstats zero = {}, *entry;

	entry = bpf_map_lookup_elem(&stats, &addr);
	if (!entry) {
		bpf_map_update_elem(&stats, &addr, &zero, BPF_NOEXIST);
		entry = bpf_map_lookup_elem(&stats, &addr);
		if (!entry)
			return 0;
	}
	__sync_fetch_and_add(&entry->packets, 1);
	__sync_fetch_and_add(&entry->bytes, len);
	if (!bpf_map_lookup_elem(&blocklist, &addr))
		return 0;
	__sync_fetch_and_add(&entry->dropped, 1);
	return 1;
}

#endif
