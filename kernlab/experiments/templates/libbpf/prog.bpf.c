// SPDX-License-Identifier: GPL-2.0
/* prog.bpf.c: a kprobe on vfs_read that prints the size of each read by the workload.
 * lib/kl_bpf.h picks what each kernel has (bpf_probe_read before 5.5, the trace newline
 * before 5.9); keep constants in -D macros or on the stack: no global data before 5.5.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "lib/kl_bpf.h"

SEC("kprobe/vfs_read")
int on_read(struct pt_regs *ctx)
{
	unsigned long count = PT_REGS_PARM3(ctx);

	if (!kl_comm_is("workload"))
		return 0;
	bpf_printk("{{NAME}}: vfs_read count=%lu", count);
	return 0;
}

char _license[] SEC("license") = "GPL";
