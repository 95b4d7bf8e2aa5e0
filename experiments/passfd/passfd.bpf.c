// SPDX-License-Identifier: GPL-2.0
/* passfd (seed 000): user space puts its pid and a file descriptor in `params`;
 * on sys_enter_read the program matches both and reports back through `result`.
 * The tracepoint's argument layout comes from events/syscalls/sys_enter_read/format.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/kl_bpf.h"

struct params { __u32 pid; __u32 fd; };
struct result { __u64 matches; __u64 last_count; };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct params);
} params SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct result);
} result SEC(".maps");

/* field:int __syscall_nr offset:8; unsigned int fd offset:16; char *buf offset:24;
 * size_t count offset:32 */
struct sys_enter_read_args {
	__u64 common;
	__s64 nr;
	__u64 fd;
	__u64 buf;
	__u64 count;
};

SEC("tracepoint/syscalls/sys_enter_read")
int on_enter_read(struct sys_enter_read_args *ctx)
{
	__u32 key = 0, pid = bpf_get_current_pid_tgid() >> 32;
	struct params *want = bpf_map_lookup_elem(&params, &key);
	struct result *res;

	if (!want || want->pid == 0 || want->pid != pid || want->fd != ctx->fd)
		return 0;
	res = bpf_map_lookup_elem(&result, &key);
	if (!res)
		return 0;
	__sync_fetch_and_add(&res->matches, 1);
	res->last_count = ctx->count;
	bpf_printk("passfd: matched pid %u fd %u count %lu", pid, want->fd, ctx->count);
	return 0;
}

char _license[] SEC("license") = "GPL";
