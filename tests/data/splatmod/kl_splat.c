// SPDX-License-Identifier: GPL-2.0
/* A real kernel splat for kernlab's tests: loading this module runs WARN_ON(1), which
 * prints "WARNING: CPU: N PID: N at .../kl_splat.c:LINE kl_splat_init" and a call trace.
 * With the module parameter panic=1 it calls panic() instead (a crash dump to open).
 * On a debug kernel (KASAN, lockdep: the catalog's debug variant), kasan=1 reads one byte
 * past a kmalloc'ed object ("BUG: KASAN: slab-out-of-bounds") and lockdep=1 takes two
 * mutexes in both orders ("possible circular locking dependency"); neither warns then. */
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>

static int panic_now;
module_param_named(panic, panic_now, int, 0);
static int kasan_now;
module_param_named(kasan, kasan_now, int, 0);
static int lockdep_now;
module_param_named(lockdep, lockdep_now, int, 0);

static DEFINE_MUTEX(kl_lock_a);
static DEFINE_MUTEX(kl_lock_b);

static noinline int kl_read_past_end(void)
{
	volatile char *object = kmalloc(24, GFP_KERNEL);
	int byte;

	if (!object)
		return -ENOMEM;
	byte = object[24];	/* one past the end: KASAN reports it, the read itself is harmless */
	kfree((void *)object);
	return byte;
}

static noinline void kl_lock_both_orders(void)
{
	mutex_lock(&kl_lock_a);
	mutex_lock(&kl_lock_b);
	mutex_unlock(&kl_lock_b);
	mutex_unlock(&kl_lock_a);
	mutex_lock(&kl_lock_b);	/* B then A: lockdep has seen A then B */
	mutex_lock(&kl_lock_a);
	mutex_unlock(&kl_lock_a);
	mutex_unlock(&kl_lock_b);
}

static int __init kl_splat_init(void)
{
	if (panic_now)
		panic("kernlab test panic from kl_splat");
	if (kasan_now) {
		pr_info("kl_splat: read past a kmalloc'ed object: %d\n", kl_read_past_end());
		return 0;
	}
	if (lockdep_now) {
		kl_lock_both_orders();
		pr_info("kl_splat: took two mutexes in both orders\n");
		return 0;
	}
	WARN_ON(1);
	return 0;
}

static void __exit kl_splat_exit(void)
{
}

module_init(kl_splat_init);
module_exit(kl_splat_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernlab test: a WARN_ON splat, a panic, or on a debug kernel a KASAN or lockdep report");
