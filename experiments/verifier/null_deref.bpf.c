// SPDX-License-Identifier: GPL-2.0
/* Rejected (seed 000, 7/1/2020): the map lookup's result is used without a NULL check.
 * Verifier: R0 invalid mem access 'map_value_or_null'. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/kl_bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} params SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_read")
int null_deref(void *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&params, &key);

	bpf_printk("value %lu", *value);
	return 0;
}

char _license[] SEC("license") = "GPL";
