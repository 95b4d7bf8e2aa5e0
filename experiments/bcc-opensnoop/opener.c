/* opener: open PATH (created if missing) N times (default 3). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "/tmp/kernlab-opensnoop-target";
	int times = argc > 2 ? atoi(argv[2]) : 3;

	for (int i = 0; i < times; i++) {
		int fd = open(path, O_CREAT | O_RDONLY, 0644);

		if (fd < 0) {
			perror("opener");
			return 1;
		}
		close(fd);
	}
	printf("opener: opened %s %d times\n", path, times);
	return 0;
}
