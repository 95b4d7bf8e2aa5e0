// SPDX-License-Identifier: GPL-2.0
/* Accepted: the same lookup with a NULL check and a read of the value's own size. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/kl_bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} params SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_read")
int fixed(void *ctx)
{
	__u32 key = 0;
	__u32 *value = bpf_map_lookup_elem(&params, &key);

	if (!value)
		return 0;
	bpf_printk("value %u", *value);
	return 0;
}

char _license[] SEC("license") = "GPL";
