/* kernlab: helpers for BPF programs (built with clang -target bpf). */
#ifndef KL_BPF_H
#define KL_BPF_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

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
