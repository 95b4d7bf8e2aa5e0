/* kernlab: helpers for BPF programs (built with clang -target bpf), portable from
 * Linux 4.15 to 6.1. Include it after <bpf/bpf_helpers.h>.
 *
 * The build passes -DBPF_NO_GLOBAL_DATA, so bpf_printk keeps its format string on
 * the stack: global data (.rodata/.data/.bss maps) needs Linux 5.2, and the guest's
 * libbpf also asks for BPF_F_MMAPABLE on those maps, which needs 5.5.
 *
 * bpf_probe_read_kernel/_user (and their _str forms) arrived in 5.5; before that the
 * one bpf_probe_read reads both (x86_64 has one address space for both). The choice
 * is made here, at build time, from the target kernel's own <linux/version.h>.
 */
#ifndef KL_BPF_H
#define KL_BPF_H

#include <linux/types.h>
#include <linux/version.h>
#include <bpf/bpf_helpers.h>

#ifndef KERNEL_VERSION
#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))
#endif

#define KL_BEFORE(a, b) (LINUX_VERSION_CODE < KERNEL_VERSION(a, b, 0))

#if KL_BEFORE(5, 5)
#define bpf_probe_read_kernel bpf_probe_read
#define bpf_probe_read_user bpf_probe_read
#define bpf_probe_read_kernel_str bpf_probe_read_str
#define bpf_probe_read_user_str bpf_probe_read_str
#endif

/* Before 5.9 bpf_trace_printk wrote through trace_printk, which ends a line only where
 * the format says so (4.15 and 5.4 run lines together); from 5.9 on it writes a
 * bpf_trace_printk trace event, which ends the line itself. */
#if KL_BEFORE(5, 9)
#undef bpf_printk
#define bpf_printk(fmt, args...) ___bpf_pick_printk(args)(fmt "\n", ##args)
#endif

/* True when the current task's comm is exactly `want` (at most 15 characters). */
static __always_inline int kl_comm_is(const char *want)
{
	char comm[16] = {};
	int i;

	bpf_get_current_comm(comm, sizeof(comm));
#pragma unroll
	for (i = 0; i < 16; i++) {
		if (comm[i] != want[i])
			return 0;
		if (want[i] == 0)
			return 1;
	}
	return 1;
}

#endif
