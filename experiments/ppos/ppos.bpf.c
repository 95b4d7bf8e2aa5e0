// SPDX-License-Identifier: GPL-2.0
/* ppos: kprobe and kretprobe on file_ppos (fs/read_write.c), a `static inline` helper
 * that ksys_read/ksys_write call on every read(2) and write(2). Stock kernels inline it,
 * so it has no symbol: `invoke make-probeable file_ppos --version V` wrote the patch in
 * patches/<V>/ that keeps it (noinline), and the atlas checks it before this runs.
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "lib/kl_bpf.h"

SEC("kprobe/file_ppos")
int BPF_KPROBE(on_file_ppos, void *file)
{
	if (!kl_comm_is("pposread"))
		return 0;
	bpf_printk("file_ppos file=%lx", (unsigned long)file);
	return 0;
}

SEC("kretprobe/file_ppos")
int BPF_KRETPROBE(on_file_ppos_ret, void *ppos)
{
	if (!kl_comm_is("pposread"))
		return 0;
	bpf_printk("file_ppos ret=%lx", (unsigned long)ppos);
	return 0;
}

char _license[] SEC("license") = "GPL";
