// SPDX-License-Identifier: GPL-2.0
/* readiter: follow a file read into copy_page_to_iter and copyout (lib/iov_iter.c)
 * and read the bytes being copied with bpf_probe_read_kernel. copyout is static and
 * inlined in stock kernels: the lab kernel is patched to keep it (SYM_COPYOUT is the
 * exact name in System.map, e.g. copyout or copyout.isra.0).
 */
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "lib/kl_bpf.h"

#ifndef SYM_COPYOUT
#define SYM_COPYOUT "copyout"
#endif

SEC("kprobe/copy_page_to_iter")
int BPF_KPROBE(on_copy_page_to_iter, void *page, unsigned long offset, unsigned long bytes)
{
	if (!kl_comm_is("readiter"))
		return 0;
	bpf_printk("copy_page_to_iter offset=%lu bytes=%lu", offset, bytes);
	return 0;
}

SEC("kprobe/" SYM_COPYOUT)
int BPF_KPROBE(on_copyout, void *to, const void *from, unsigned long n)
{
	char data[33] = {};

	if (!kl_comm_is("readiter"))
		return 0;
	bpf_probe_read_kernel(data, 32, from);
	bpf_printk("copyout to=%lx len=%lu data=%s", (unsigned long)to, n, data);
	return 0;
}

char _license[] SEC("license") = "GPL";
