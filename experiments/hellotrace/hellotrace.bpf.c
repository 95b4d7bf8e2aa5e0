// SPDX-License-Identifier: GPL-2.0
/* hellotrace (seed 001): a kprobe on the write system call. Its symbol depends on the
 * kernel: sys_write / SyS_write before 4.17, __x64_sys_write (taking a struct pt_regs *
 * of the user registers) from 4.17 on x86_64. WRITE_SYM and SYSCALL_WRAPPER come from
 * the experiment's per-version vars.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "lib/kl_bpf.h"

SEC("kprobe/" WRITE_SYM)
int hello(struct pt_regs *ctx)
{
	unsigned long fd, count;

	if (!kl_comm_is("hellotrace"))
		return 0;
#if SYSCALL_WRAPPER
	struct pt_regs *regs = (struct pt_regs *)PT_REGS_PARM1(ctx);

	bpf_probe_read_kernel(&fd, sizeof(fd), &PT_REGS_PARM1(regs));
	bpf_probe_read_kernel(&count, sizeof(count), &PT_REGS_PARM3(regs));
#else
	fd = PT_REGS_PARM1(ctx);
	count = PT_REGS_PARM3(ctx);
#endif
	bpf_printk("hellotrace: " WRITE_SYM " fd=%lu count=%lu", fd, count);
	return 0;
}

char _license[] SEC("license") = "GPL";
