/* workload: read FILE in 4096-byte reads, ROUNDS times (a kernlab skeleton's workload). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char buf[4096];
	long reads = 0, bytes = 0;
	int rounds = argc > 2 ? atoi(argv[2]) : 1;

	if (argc < 2) {
		fprintf(stderr, "usage: workload FILE [ROUNDS]\n");
		return 2;
	}
	for (int i = 0; i < rounds; i++) {
		int fd = open(argv[1], O_RDONLY);
		ssize_t n;

		if (fd < 0) {
			perror(argv[1]);
			return 1;
		}
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			reads++;
			bytes += n;
		}
		close(fd);
	}
	printf("workload: %ld full reads, %ld bytes in %d rounds\n", reads, bytes, rounds);
	return 0;
}
