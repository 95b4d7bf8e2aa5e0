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

/* The IPv4 header of the Ethernet frame [data, data_end), or NULL when it is not IPv4. */
static __always_inline struct iphdr *kl_ipv4(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	return ip;
}

/* `addr`'s entry in the hash map `map` (made zero on first sight); NULL if it cannot be. */
static __always_inline struct ipstats *kl_entry(void *map, __u32 addr)
{
	struct ipstats zero = {}, *entry = bpf_map_lookup_elem(map, &addr);

	if (entry)
		return entry;
	bpf_map_update_elem(map, &addr, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, &addr);
}

/* Count a frame of `len` bytes from `addr`; 1 when `addr` is on the blocklist (counted
 * as dropped: the caller drops it). */
static __always_inline int kl_count(__u32 addr, __u64 len)
{
	struct ipstats *entry = kl_entry(&stats, addr);

	if (!entry)
		return 0;
	__sync_fetch_and_add(&entry->packets, 1);
	__sync_fetch_and_add(&entry->bytes, len);
	if (!bpf_map_lookup_elem(&blocklist, &addr))
		return 0;
	__sync_fetch_and_add(&entry->dropped, 1);
	return 1;
}

#endif
