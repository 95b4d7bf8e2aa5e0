/* ppos workload: three read(2)s of a regular file, each through ksys_read -> file_ppos. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[16];
	int fd = open(argc > 1 ? argv[1] : "data.txt", O_RDONLY);
	int i, total = 0;

	if (fd < 0) {
		perror("pposread: open");
		return 1;
	}
	for (i = 0; i < 3; i++) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0) {
			perror("pposread: read");
			return 1;
		}
		total += n;
	}
	close(fd);
	printf("pposread: 3 reads, %d bytes\n", total);
	return 0;
}
