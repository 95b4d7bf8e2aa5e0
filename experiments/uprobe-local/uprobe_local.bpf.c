// SPDX-License-Identifier: GPL-2.0
/* uprobe local variable (seed 002): at foo1+FOO1_OFFSET (just after `variable1 -=
 * input`) read variable1 from the stack at rbp + VAR_DISP. The loader attaches this
 * program and puts VAR_DISP in `config`. */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include "lib/kl_bpf.h"
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} config SEC(".maps");

SEC("uprobe")
int foo1_local(struct pt_regs *ctx)
{
	__u32 key = 0;
	__s64 *disp = bpf_map_lookup_elem(&config, &key);
	unsigned long bp = PT_REGS_FP(ctx);
	__u8 value = 0;

	if (!disp)
		return 0;
	bpf_probe_read_user(&value, sizeof(value), (void *)(bp + *disp));
	bpf_printk("foo1 local: rbp=%lx variable1=%d", bp, value);
	return 0;
}

char _license[] SEC("license") = "GPL";
