/* file-io (seed 004, CSPB-3753 lab 2): open output.txt three ways.
 *   native:       the C library's open() (which uses the openat system call)
 *   with_syscall: syscall(SYS_open, ...)
 *   with_asm:     the open system call issued with inline assembly
 * Built -O0 with frame pointers so uprobes find each function.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define FILE_NAME "output.txt"

static void put(int fd, const char *what)
{
	if (fd >= 0) {
		if (write(fd, what, strlen(what)) < 0)
			perror("write");
		close(fd);
	}
}

__attribute__((noinline)) void native(void)
{
	for (int i = 0; i < 2; i++)
		put(open(FILE_NAME, O_CREAT | O_WRONLY | O_APPEND, 0644), "native\n");
}

__attribute__((noinline)) void with_syscall(void)
{
	for (int i = 0; i < 2; i++)
		put(syscall(SYS_open, FILE_NAME, O_CREAT | O_WRONLY | O_APPEND, 0644),
		    "with_syscall\n");
}

__attribute__((noinline)) void with_asm(void)
{
	for (int i = 0; i < 2; i++) {
		long fd;

		__asm__ volatile("syscall"
				 : "=a"(fd)
				 : "0"((long)SYS_open), "D"(FILE_NAME),
				   "S"((long)(O_CREAT | O_WRONLY | O_APPEND)), "d"(0644L)
				 : "rcx", "r11", "memory");
		put((int)fd, "with_asm\n");
	}
}

int main(void)
{
	unlink(FILE_NAME);
	native();
	with_syscall();
	with_asm();
	printf("file-io: done\n");
	return 0;
}
