/* legacy_open SECONDS: call the old open(2) system call (not openat) every 10 ms.
 * samples/bpf syscall_tp of 4.15 counts only sys_enter_open/sys_exit_open, and
 * bookworm's glibc implements open() with openat, so without this nothing it
 * watches would happen (later trees watch openat too). */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int rounds = (argc > 1 ? atoi(argv[1]) : 30) * 100;

	for (int i = 0; i < rounds; i++) {
		long fd = syscall(SYS_open, "/proc/self/stat", O_RDONLY);

		if (fd >= 0)
			close((int)fd);
		usleep(10 * 1000);
	}
	return 0;
}
