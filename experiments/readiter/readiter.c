/* readiter workload: read a file with one read(2) and print what came back. */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[4096];
	int fd = open(argc > 1 ? argv[1] : "data.txt", O_RDONLY);
	ssize_t n;

	if (fd < 0) {
		perror("readiter: open");
		return 1;
	}
	n = read(fd, buf, sizeof(buf));
	if (n < 0) {
		perror("readiter: read");
		return 1;
	}
	printf("readiter: read %zd bytes: %.*s", n, (int)n, buf);
	close(fd);
	return 0;
}
