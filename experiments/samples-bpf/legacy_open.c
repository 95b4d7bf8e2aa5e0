/* legacy_open.so, LD_PRELOADed into samples/bpf syscall_tp: its open() goes to the
 * old open(2) system call instead of glibc's openat(2).
 * 4.15's syscall_tp counts only sys_enter_open/sys_exit_open and checks its maps right
 * after its own open(); bookworm's glibc implements open() with openat, so nothing
 * it watches would happen (later trees watch openat too, and are not affected). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

int open(const char *path, int flags, ...)
{
	mode_t mode = 0;

	if (flags & (O_CREAT | O_TMPFILE)) {
		va_list ap;

		va_start(ap, flags);
		mode = va_arg(ap, mode_t);
		va_end(ap);
	}
	return (int)syscall(SYS_open, path, flags, mode);
}
