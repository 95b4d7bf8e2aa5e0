// SPDX-License-Identifier: GPL-2.0
/* caller stack (seed 002): at foo1's entry the return address is at the top of the
 * stack; record it per process in `seen` for the loader to resolve. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include "lib/kl_bpf.h"
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

SEC("uprobe")
int foo1_entry(struct pt_regs *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 ret = 0;

	bpf_probe_read_user(&ret, sizeof(ret), (void *)PT_REGS_SP(ctx));
	bpf_map_update_elem(&seen, &pid, &ret, BPF_ANY);
	bpf_printk("caller-stack: pid %u return address %lx", pid, ret);
	return 0;
}

char _license[] SEC("license") = "GPL";
