// SPDX-License-Identifier: GPL-2.0
/* A real kernel splat for kernlab's tests: loading this module runs WARN_ON(1), which
 * prints "WARNING: CPU: N PID: N at .../kl_splat.c:LINE kl_splat_init" and a call trace.
 * With the module parameter panic=1 it calls panic() instead (a crash dump to open). */
#include <linux/kernel.h>
#include <linux/module.h>

static int panic_now;
module_param_named(panic, panic_now, int, 0);

static int __init kl_splat_init(void)
{
	if (panic_now)
		panic("kernlab test panic from kl_splat");
	WARN_ON(1);
	return 0;
}

static void __exit kl_splat_exit(void)
{
}

module_init(kl_splat_init);
module_exit(kl_splat_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernlab test: a WARN_ON splat (or a panic) on load");
