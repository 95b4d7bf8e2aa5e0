// SPDX-License-Identifier: GPL-2.0
/* readbuff / buffermap (seeds 000, 001): user space passes its pid and the address of
 * its read buffer through `target`; at sys_enter_read the program checks the read's
 * buffer is that address, at sys_exit_read it reads the first bytes that landed in it
 * (bpf_probe_read_user) into `seen` and prints them.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/kl_bpf.h"

#define SNAP 16

struct target { __u64 pid; __u64 buf; };
struct seen { __u64 state; __s64 ret; char data[SNAP + 1]; };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct target);
} target SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct seen);
} seen SEC(".maps");

struct enter_read_args { __u64 common; __s64 nr; __u64 fd; __u64 buf; __u64 count; };
struct exit_read_args { __u64 common; __s64 nr; __s64 ret; };

static __always_inline struct target *mine(void)
{
	__u32 key = 0;
	struct target *t = bpf_map_lookup_elem(&target, &key);

	if (!t || t->pid == 0 || t->pid != bpf_get_current_pid_tgid() >> 32)
		return 0;
	return t;
}

SEC("tracepoint/syscalls/sys_enter_read")
int on_enter_read(struct enter_read_args *ctx)
{
	struct target *t = mine();
	__u32 key = 0;
	struct seen *s;

	if (!t || ctx->buf != t->buf)
		return 0;
	s = bpf_map_lookup_elem(&seen, &key);
	if (!s)
		return 0;
	s->state = 1;
	bpf_printk("buffermap: enter read buf=%lx matches the map", ctx->buf);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_read")
int on_exit_read(struct exit_read_args *ctx)
{
	struct target *t = mine();
	__u32 key = 0;
	struct seen *s;

	if (!t)
		return 0;
	s = bpf_map_lookup_elem(&seen, &key);
	if (!s || s->state != 1 || ctx->ret <= 0)
		return 0;
	bpf_probe_read_user(s->data, SNAP, (void *)t->buf);
	s->data[SNAP] = 0;
	s->ret = ctx->ret;
	s->state = 2;
	bpf_printk("buffermap: exit read ret=%ld data=%s", ctx->ret, s->data);
	return 0;
}

char _license[] SEC("license") = "GPL";
